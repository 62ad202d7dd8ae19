"""Robustness transforms: every step, each image is seen padded, moved, scaled and turned.

A visualisation that still excites its unit under small random changes of position,
scale and angle is one the unit responds to, not an adversarial pattern that works at a
single alignment. Lucid applies pad, jitter, scale, rotate and jitter again one after
the other; here the same family is one affine resampling per image (one bilinear blur,
not four), with each image's changes drawn from its own random generator. Images need
not be square: the view is drawn in pixels, one scale for both axes, so a rotation turns
the picture without stretching it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TransformConfig

GREY = 0.5  # the colour of the padding


class RandomViews:
    """Draws, per step, one random view of every image of a batch, at the model's input size.

    ``image_size`` and ``output_size`` are ``(height, width)``: of the pictures, and of the
    model's input. A view is the padded picture less the jitter (Lucid's crop) along the
    shorter axis, at one scale in picture pixels per input pixel for both axes; along a
    longer axis that takes in a little more of the grey around the picture.
    """

    def __init__(self, settings: TransformConfig, image_size: tuple[int, int], output_size: tuple[int, int],
                 generators: list[np.random.Generator]):
        self.settings, self.generators = settings, generators
        self.image_size, self.output_size = tuple(image_size), tuple(output_size)
        # In pixels of this picture, (down, across): shares of its sides become pixels per axis.
        self.pad, self.jitter, self.rotate = settings.pixels(self.image_size)
        # Lucid's two jitters (the second is half the first) shrink the window they leave.
        self.second_jitter = tuple(j // 2 for j in self.jitter)
        # Image pixels per output pixel: the larger of the two axes' (equal for a square).
        self.pixel = max((side + 2 * pad - jitter - second) / out for side, out, pad, jitter, second in
                         zip(self.image_size, self.output_size, self.pad, self.jitter, self.second_jitter))

    def _theta(self, g: np.random.Generator) -> list[list[float]]:
        """The affine map from output to image coordinates (both in [-1, 1]) for one view."""
        s = self.settings
        first, second = [j // 2 for j in self.jitter[::-1]], [j // 2 for j in self.second_jitter[::-1]]  # (x, y)
        shift = g.integers([-j for j in first], first, endpoint=True) + \
            g.integers([-j for j in second], second, endpoint=True)
        factor = g.uniform(s.scale[0], s.scale[1])
        angle = math.radians(g.uniform(-self.rotate, self.rotate))
        (height, width), (out_height, out_width) = self.image_size, self.output_size
        # In pixels about the centres: image = zoom * rotation @ output + shift; then each
        # axis scaled from pixels to [-1, 1] (by half the output's side in, the image's out).
        zoom = self.pixel / factor
        cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
        tx, ty = 2 * shift[0] / width, 2 * shift[1] / height
        return [[cos * out_width / width, -sin * out_height / width, tx],
                [sin * out_width / height, cos * out_height / height, ty]]

    def thetas(self, count: int, device: torch.device) -> torch.Tensor:
        """The next ``count`` views of every image, ``[count, B, 2, 3]``, drawn at once and sent to
        ``device`` once: the same views as ``count`` calls (each image draws from its own generator)."""
        drawn = [[self._theta(g) for _ in range(count)] for g in self.generators]
        return torch.tensor(drawn, dtype=torch.float32).transpose(0, 1).contiguous().to(device)

    def __call__(self, images: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """One view of each image: drawn now, or ``theta`` (one step of :meth:`thetas`)."""
        if theta is None:
            theta = torch.tensor([self._theta(g) for g in self.generators], dtype=images.dtype, device=images.device)
        size = (len(images), images.shape[1], *self.output_size)
        grid = F.affine_grid(theta, size, align_corners=False)
        return F.grid_sample(images - GREY, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + GREY


def resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The images as the model sees them without transforms: at its input size ``(height, width)``."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
