"""Procedural images for the default model: a labelled task that needs early-vision detectors.

Every image is a small scene on a 64 x 64 canvas, painted back to front:

1. a *background* split by a straight boundary into a grating region (an oriented
   grating, sine or nearly square, in two low-saturation colours) and a smooth region (a
   gentle colour gradient): a boundary between high and low spatial frequency, and
   between colours;
2. zero to two *distractor strokes*: straight lines, thin and dark or light (a share
   ``CORNER_SHARE`` of them bent into corners, none in the default model's world);
3. one *shape*, filled with a saturated colour;
4. one *curve*: a thin dark or light arc of a circle, placed where it does not touch the
   shape.

Four attributes are labelled:

- ``shape``: which of ``SHAPES`` is drawn,
- ``hue``: which of ``HUES`` hue bins the shape is painted in,
- ``orientation``: which of ``ORIENTATIONS`` bins (over 180 degrees) the grating runs along,
- ``curve``: which of ``CURVES`` bins (over 360 degrees) the curve faces: the direction,
  from the circle's centre, of the arc's middle (its convex side). Angles are
  counter-clockwise from "right", with "up" at 90 degrees, as on the screen.

The curve is the attribute that asks for curve detectors by orientation: its radius,
length, width, colour and position are random, straight lines and corners stand beside
it, and a line detector sees the same tangent for a curve and the one facing the other
way; only a detector of curvature at each orientation tells them apart.

Images are drawn in batches with torch from an explicit generator, so a seed gives the
same images on every machine. Edges are anti-aliased over one pixel. Orientations are
drawn at most 0.3 of a bin from the bin's centre, so every label is unambiguous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("disk", "square", "triangle", "ring", "cross", "bar", "arc", "half-disk")
HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta")
ORIENTATIONS = tuple(f"{round(i * 180 / 8)}deg" for i in range(8))
CURVES = tuple(f"{round(i * 360 / 8)}deg" for i in range(8))
ATTRIBUTES = {"shape": SHAPES, "hue": HUES, "orientation": ORIENTATIONS, "curve": CURVES}
JITTER = 0.3  # how far from its bin's centre an orientation is drawn, in bins
# Distractor strokes drawn as corners: none. Corners look like curves from afar; with them,
# and with thinner, longer arcs, the curve attribute was still at chance after 1,500 steps.
CORNER_SHARE = 0.0


@dataclass
class Batch:
    """Images ``[N, 3, S, S]`` in [0, 1], one label tensor ``[N]`` per attribute, and the
    direction each curve faces ``[N]`` in radians (the ``curve`` label before binning)."""

    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    facing: torch.Tensor


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
SHAPE_EXTENT = 1.15  # every shape lies within this many radii of its centre


def arc_distance(x: torch.Tensor, y: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
                 facing: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Distance of every pixel to an arc, per image: the circle of ``centre`` ``[N, 2]`` and
    ``radius`` ``[N]``, between the angles ``facing - span / 2`` and ``facing + span / 2``
    (radians, counter-clockwise from "right" with "up" positive, so ``y`` grows upwards).
    ``x`` and ``y`` are ``[1, S, S]`` pixel coordinates; the result is ``[N, S, S]``."""
    dx, dy = x - centre[:, 0, None, None], y - centre[:, 1, None, None]
    angle = torch.atan2(dy, dx) - facing[:, None, None]
    off = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi  # from the arc's middle, in (-pi, pi]
    on_arc = off.abs() <= span[:, None, None] / 2
    to_circle = (torch.sqrt(dx * dx + dy * dy) - radius[:, None, None]).abs()
    ends = []
    for side in (-1, 1):
        end = facing + side * span / 2
        ex = centre[:, 0] + radius * torch.cos(end)
        ey = centre[:, 1] + radius * torch.sin(end)
        ends.append(torch.sqrt((x - ex[:, None, None]) ** 2 + (y - ey[:, None, None]) ** 2))
    return torch.where(on_arc, to_circle, torch.minimum(*ends))


def segment_distance(x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Distance of every pixel ``[1, S, S]`` to a segment per image, ``start``/``end`` ``[N, 2]``."""
    ax, ay = start[:, 0, None, None], start[:, 1, None, None]
    bx, by = end[:, 0, None, None], end[:, 1, None, None]
    vx, vy = bx - ax, by - ay
    t = ((x - ax) * vx + (y - ay) * vy) / (vx * vx + vy * vy).clamp_min(1e-9)
    t = t.clamp(0, 1)
    return torch.sqrt((x - ax - t * vx) ** 2 + (y - ay - t * vy) ** 2)


def stroke_colours(n: int, uniform) -> torch.Tensor:
    """``[n, 3]`` colours of thin strokes: dark (value at most 0.15) or light (at least 0.88,
    nearly white) at random, so a stroke stands out against the mid-tone background."""
    light = uniform(0, 1) < 0.5
    saturation = torch.where(light, uniform(0, 0.2), uniform(0, 0.6))
    value = torch.where(light, uniform(0.88, 1.0), uniform(0.0, 0.15))
    return _hsv_to_rgb(uniform(0, 1), saturation, value)


def paint(canvas: torch.Tensor, distance: torch.Tensor, width: torch.Tensor, colour: torch.Tensor,
          pixel: float, where: torch.Tensor | None = None) -> torch.Tensor:
    """``canvas`` ``[N, 3, S, S]`` with a stroke of ``width`` ``[N]`` (in image units) along the
    pixels at ``distance`` ``[N, S, S]`` painted over it in ``colour`` ``[N, 3]``; only in the
    images ``where`` is true, when given."""
    cover = torch.clamp(0.5 + (width[:, None, None] / 2 - distance) / pixel, 0, 1)
    if where is not None:
        cover = cover * where[:, None, None]
    cover = cover[:, None]
    return canvas * (1 - cover) + colour[:, :, None, None] * cover


def draw(n: int, size: int, generator: torch.Generator) -> Batch:
    """Draw ``n`` labelled images of ``size`` x ``size`` pixels."""
    g = generator

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    shape = torch.randint(len(SHAPES), (n,), generator=g)
    hue = torch.randint(len(HUES), (n,), generator=g)
    orientation = torch.randint(len(ORIENTATIONS), (n,), generator=g)
    curve = torch.randint(len(CURVES), (n,), generator=g)

    axis = torch.linspace(-1, 1, size)
    row, column = torch.meshgrid(axis, axis, indexing="ij")
    x, y = column[None], -row[None]  # y grows upwards
    pixel = 2.0 / size

    # Background, high frequencies: a grating in two low-saturation colours of moderate contrast.
    theta = (orientation + uniform(-JITTER, JITTER)) * math.pi / len(ORIENTATIONS)
    freq = uniform(2.5, 8.0)  # cycles per image width
    phase = uniform(0, 2 * math.pi)
    along = x * torch.cos(theta)[:, None, None] - y * torch.sin(theta)[:, None, None]
    wave = torch.sin(math.pi * freq[:, None, None] * along + phase[:, None, None])
    stripes = torch.sigmoid(uniform(1.0, 6.0)[:, None, None] * wave)
    dark = _hsv_to_rgb(uniform(0, 1), uniform(0, 0.3), uniform(0.25, 0.42))
    light = _hsv_to_rgb(uniform(0, 1), uniform(0, 0.3), uniform(0.55, 0.72))
    grating = dark[:, :, None, None] + (light - dark)[:, :, None, None] * stripes[:, None]

    # Background, low frequencies: a gentle gradient between two colours of one hue family.
    tone = uniform(0, 1)
    near = _hsv_to_rgb(tone, uniform(0.2, 0.6), uniform(0.3, 0.7))
    far = _hsv_to_rgb((tone + uniform(-0.08, 0.08)) % 1, uniform(0.2, 0.6), uniform(0.3, 0.7))
    slope = uniform(0, 2 * math.pi)
    ramp = (x * torch.cos(slope)[:, None, None] + y * torch.sin(slope)[:, None, None] + 1.5) / 3
    smooth = near[:, :, None, None] + (far - near)[:, :, None, None] * ramp[:, None]

    # The boundary between them: a straight line, the grating on one side.
    normal = uniform(0, 2 * math.pi)
    side = x * torch.cos(normal)[:, None, None] + y * torch.sin(normal)[:, None, None] - uniform(-0.3, 0.3)[:, None, None]
    high = torch.clamp(0.5 + side / pixel, 0, 1)[:, None]
    images = smooth * (1 - high) + grating * high

    # Distractors: up to two straight strokes, CORNER_SHARE of them corners.
    for _ in range(2):
        present = uniform(0, 1) < 0.6
        start = uniform(-0.8, 0.8, 2)
        heading, length = uniform(0, 2 * math.pi), uniform(0.25, 0.7)
        middle = start + length[:, None] * torch.stack([torch.cos(heading), torch.sin(heading)], 1)
        turn = heading + math.pi + torch.where(uniform(0, 1) < 0.5, 1.0, -1.0) * uniform(0.35, 0.65) * math.pi
        finish = middle + length[:, None] * torch.stack([torch.cos(turn), torch.sin(turn)], 1)
        distance = segment_distance(x, y, start, middle)
        corner = uniform(0, 1) < CORNER_SHARE
        distance = torch.where(corner[:, None, None], torch.minimum(distance, segment_distance(x, y, middle, finish)),
                               distance)
        images = paint(images, distance, uniform(1.2, 2.5) * pixel, stroke_colours(n, uniform), pixel,
                       present.float())

    # The shape: rotated, in a saturated colour from its hue bin.
    centre = uniform(-0.55, 0.55, 2)
    radius = uniform(0.26, 0.42)
    alpha = uniform(0, 2 * math.pi)
    ca, sa = torch.cos(alpha)[:, None, None], torch.sin(alpha)[:, None, None]
    dx, dy = x - centre[:, 0, None, None], y - centre[:, 1, None, None]
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    distance = _shape_distance(shape, u, v, radius[:, None, None])
    cover = torch.clamp(0.5 - distance / pixel, 0, 1)[:, None]
    colour = _hsv_to_rgb((hue + uniform(-0.2, 0.2)) / len(HUES) % 1, uniform(0.75, 1), uniform(0.7, 1))
    images = images * (1 - cover) + colour[:, :, None, None] * cover

    # The curve: an arc facing its bin's direction, placed clear of the shape.
    facing = (curve + uniform(-JITTER, JITTER)) * 2 * math.pi / len(CURVES)
    arc_radius = uniform(0.2, 0.5)
    span = uniform(0.4, 0.65) * math.pi
    extent = arc_radius * torch.sin(span / 2) + 0.06  # the arc lies within this of its middle chord's centre
    direction = torch.stack([torch.cos(facing), torch.sin(facing)], 1)
    clear = SHAPE_EXTENT * radius + extent + 0.08 + uniform(0, 0.2)
    tries = 16
    around = uniform(0, 2 * math.pi)[:, None] + torch.arange(tries) * 2 * math.pi / tries  # [N, tries]
    spots = centre[:, None] + clear[:, None, None] * torch.stack([torch.cos(around), torch.sin(around)], 2)
    room = (1 - extent)[:, None] - spots.abs().amax(2)  # > 0: the arc lies inside the image
    best = torch.where(room > 0, tries - torch.arange(tries), -tries + room.argsort(1).argsort(1)).argmax(1)
    middle = spots[torch.arange(n), best]
    arc_centre = middle - (arc_radius * (1 + torch.cos(span / 2)) / 2)[:, None] * direction
    distance = arc_distance(x, y, arc_centre, arc_radius, facing, span)
    images = paint(images, distance, uniform(2.5, 3.5) * pixel, stroke_colours(n, uniform), pixel)

    noise = uniform(0, 0.04)[:, None, None, None] * torch.randn(images.shape, generator=g)
    images = torch.clamp(images + noise, 0, 1)
    return Batch(images, {"shape": shape, "hue": hue, "orientation": orientation, "curve": curve},
                 torch.remainder(facing, 2 * math.pi))
