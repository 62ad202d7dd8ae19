"""Robustness transforms: every step, each image is seen padded, moved, scaled and turned.

A visualisation that still excites its unit under small random changes of position,
scale and angle is one the unit responds to, not an adversarial pattern that works at a
single alignment. Lucid applies pad, jitter, scale, rotate and jitter again one after
the other; here the same family is one affine resampling per image (one bilinear blur,
not four), with each image's changes drawn from its own random generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TransformConfig

GREY = 0.5  # the colour of the padding


class RandomViews:
    """Draws, per step, one random view of every image of a batch, at the model's input size."""

    def __init__(self, settings: TransformConfig, image_size: int, output_size: int,
                 generators: list[np.random.Generator]):
        self.settings, self.generators = settings, generators
        self.image_size, self.output_size = image_size, output_size
        padded = image_size + 2 * settings.pad
        # Lucid's two jitters (the second is half the first) shrink the window they leave.
        self.second_jitter = settings.jitter // 2
        self.window = (padded - settings.jitter - self.second_jitter) / image_size  # in image widths

    def _theta(self, g: np.random.Generator) -> list[list[float]]:
        """The affine map from output to image coordinates (both in [-1, 1]) for one view."""
        s = self.settings
        shift = g.integers(-(s.jitter // 2), s.jitter // 2, size=2, endpoint=True) + \
            g.integers(-(self.second_jitter // 2), self.second_jitter // 2, size=2, endpoint=True)
        factor = g.uniform(s.scale[0], s.scale[1])
        angle = math.radians(g.uniform(-s.rotate, s.rotate))
        zoom = self.window / factor
        tx, ty = 2 * shift / self.image_size
        return [[zoom * math.cos(angle), -zoom * math.sin(angle), tx],
                [zoom * math.sin(angle), zoom * math.cos(angle), ty]]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        theta = torch.tensor([self._theta(g) for g in self.generators], dtype=images.dtype, device=images.device)
        size = (len(images), images.shape[1], self.output_size, self.output_size)
        grid = F.affine_grid(theta, size, align_corners=False)
        return F.grid_sample(images - GREY, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + GREY


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """The images as the model sees them without transforms: at its input size."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
