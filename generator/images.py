"""Images as the model reads them: normalised, at its input size, from files or arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from .config import InputConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FILE_CHANNELS = (1, 3)  # image files are read as grey or as RGB
MAX_PIXELS = 64_000_000  # larger image files are refused unread (Pillow refuses past 179 million)


class Normalise(nn.Module):
    """Images in [0, 1] to what the model reads: ``(image - mean) / std`` per channel."""

    def __init__(self, inp: InputConfig, device: torch.device | str = "cpu"):
        super().__init__()
        self.mean = torch.tensor(inp.mean, device=device).reshape(1, -1, 1, 1)
        self.std = torch.tensor(inp.std, device=device).reshape(1, -1, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Channels-last tensors make most models' convolutions faster on CPU.
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


REFERENCE_IMAGES = 16  # images the statistics of gates and norms are measured on, without a dataset


def reference_images(shape: tuple[int, ...], normalise: Normalise | None = None) -> torch.Tensor:
    """The images gates and norms are measured on when there are no dataset images: uniform
    noise (seeded), as the model reads it: through ``normalise``, by default ``(x - 0.5) / 0.25``,
    the normalisation an atlas config assumes."""
    images = torch.rand(REFERENCE_IMAGES, *shape, generator=torch.Generator().manual_seed(0))
    return normalise(images).contiguous() if normalise is not None else (images - 0.5) / 0.25


def load_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """An image file as ``[height, width, channels]`` uint8 for ``size = (height, width)``:
    scaled (keeping its aspect) until it covers that size, then the centre cut out; grey for
    ``channels`` 1, RGB for 3 (:data:`FILE_CHANNELS`). Raises OSError (or ValueError) for a
    file that is not an image or is larger than :data:`MAX_PIXELS`."""
    if channels not in FILE_CHANNELS:
        raise ValueError(f"image files are read as grey or RGB, not as {channels} channels")
    height, width = size
    with Image.open(path) as image:
        if image.width * image.height > MAX_PIXELS:  # decoding it could take gigabytes
            raise ValueError(f"its header claims {image.width} x {image.height} pixels, more than "
                             f"{MAX_PIXELS // 1_000_000} million")
        image = ImageOps.exif_transpose(image).convert("L" if channels == 1 else "RGB")
        image = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)
        pixels = np.array(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An ``[h, w, channels]`` image as RGB: grey repeated, extra channels dropped, missing ones black."""
    channels = image.shape[2]
    if channels == 1:
        return image.repeat(3, axis=2)
    if channels < 3:
        return np.concatenate([image, np.zeros((*image.shape[:2], 3 - channels), image.dtype)], axis=2)
    return np.ascontiguousarray(image[..., :3])
