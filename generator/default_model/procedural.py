"""Procedural images for the default model: a labelled task that needs many detectors.

Every image is an oriented grating (background) with one coloured shape on it. Three
attributes are labelled, so the network must learn orientation detectors at many spatial
frequencies, colour detectors and shape (curve, corner, line) detectors:

- ``shape``: which of ``SHAPES`` is drawn,
- ``hue``: which of ``HUES`` hue bins the shape is painted in,
- ``orientation``: which of ``ORIENTATIONS`` bins (over 180 degrees) the grating runs along.

Images are drawn in batches with torch from an explicit generator, so a seed gives the
same images on every machine. Edges are anti-aliased over one pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("disk", "square", "triangle", "ring", "cross", "bar", "arc", "half-disk")
HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta")
ORIENTATIONS = tuple(f"{round(i * 180 / 8)}deg" for i in range(8))
ATTRIBUTES = {"shape": SHAPES, "hue": HUES, "orientation": ORIENTATIONS}


@dataclass
class Batch:
    """Images ``[N, 3, S, S]`` in [0, 1] and one label tensor ``[N]`` per attribute."""

    images: torch.Tensor
    labels: dict[str, torch.Tensor]


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV -> RGB; inputs ``[N]`` in [0, 1], output ``[N, 3]``."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v[:, None] - v[:, None] * s[:, None] * f


def _shape_distance(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) of each image's own shape, in its local coordinates."""
    distance = torch.empty_like(u)
    for k, shape in enumerate(SHAPES):
        chosen = kind == k
        if chosen.any():
            distance[chosen] = _DISTANCES[shape](u[chosen], v[chosen], r[chosen])
    return distance


def _radius(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(u * u + v * v)


_DISTANCES = {
    "disk": lambda u, v, r: _radius(u, v) - r,
    "square": lambda u, v, r: torch.maximum(u.abs(), v.abs()) - 0.8 * r,
    "triangle": lambda u, v, r: torch.maximum(u.abs() * 0.866 + v * 0.5, -v) - 0.5 * r,
    "ring": lambda u, v, r: (_radius(u, v) - 0.75 * r).abs() - 0.2 * r,
    "cross": lambda u, v, r: torch.minimum(
        torch.maximum(u.abs() - r, v.abs() - 0.25 * r), torch.maximum(v.abs() - r, u.abs() - 0.25 * r)
    ),
    "bar": lambda u, v, r: torch.maximum(u.abs() - 1.1 * r, v.abs() - 0.15 * r),
    "arc": lambda u, v, r: torch.maximum((_radius(u, v) - 0.8 * r).abs() - 0.15 * r, -v),
    "half-disk": lambda u, v, r: torch.maximum(_radius(u, v) - r, -v),
}


def draw(n: int, size: int, generator: torch.Generator) -> Batch:
    """Draw ``n`` labelled images of ``size`` x ``size`` pixels."""
    g = generator

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    shape = torch.randint(len(SHAPES), (n,), generator=g)
    hue = torch.randint(len(HUES), (n,), generator=g)
    orientation = torch.randint(len(ORIENTATIONS), (n,), generator=g)

    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    x, y = x[None], y[None]
    pixel = 2.0 / size

    # Background: a grating, sine or nearly square, in two low-saturation colours.
    theta = (orientation + uniform(-0.3, 0.3)) * math.pi / len(ORIENTATIONS)
    freq = uniform(1.5, 6.0)  # cycles per image width
    phase = uniform(0, 2 * math.pi)
    along = x * torch.cos(theta)[:, None, None] + y * torch.sin(theta)[:, None, None]
    wave = torch.sin(math.pi * freq[:, None, None] * along + phase[:, None, None])
    sharpness = uniform(1.0, 6.0)[:, None, None]
    stripes = torch.sigmoid(sharpness * wave)
    dark = _hsv_to_rgb(uniform(0, 1), uniform(0, 0.3), uniform(0.05, 0.45))
    light = _hsv_to_rgb(uniform(0, 1), uniform(0, 0.3), uniform(0.55, 0.95))
    background = dark[:, :, None, None] + (light - dark)[:, :, None, None] * stripes[:, None]

    # Foreground: one rotated shape in a saturated colour from its hue bin.
    centre = uniform(-0.45, 0.45, 2)
    radius = uniform(0.32, 0.55)[:, None, None]
    alpha = uniform(0, 2 * math.pi)
    ca, sa = torch.cos(alpha)[:, None, None], torch.sin(alpha)[:, None, None]
    dx, dy = x - centre[:, 0, None, None], y - centre[:, 1, None, None]
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    distance = _shape_distance(shape, u, v, radius)
    cover = torch.clamp(0.5 - distance / pixel, 0, 1)[:, None]
    colour = _hsv_to_rgb((hue + uniform(-0.2, 0.2)) / len(HUES) % 1, uniform(0.75, 1), uniform(0.7, 1))
    images = background * (1 - cover) + colour[:, :, None, None] * cover

    noise = uniform(0, 0.06)[:, None, None, None] * torch.randn(images.shape, generator=g)
    images = torch.clamp(images + noise, 0, 1)
    return Batch(images, {"shape": shape, "hue": hue, "orientation": orientation})
