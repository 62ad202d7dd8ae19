"""Synthetic stimuli that tell what a unit detects, in the manner of the Curve Detectors article.

Each probe is a set of images on a mid-grey canvas that vary one property (an arc's
orientation, a line's orientation, a colour, ...) and a unit's *response* to an image is
its largest activation over positions. A family's response to a property value is the
best response over the probe's nuisance parameters (radius, stroke polarity, phase, ...),
so a tuning curve says what the unit prefers, not how a particular stimulus happened to
be drawn. Angles are counter-clockwise from "right", "up" at 90 degrees
(:mod:`.procedural`'s convention); an arc's orientation is the direction its convex side
faces, a line's the direction it runs (over 180 degrees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .procedural import HUES, _hsv_to_rgb, _shape_distance, SHAPES, arc_distance, paint, segment_distance

GREY = 0.5
ARC_ORIENTATIONS = 16  # over 360 degrees
LINE_ORIENTATIONS = 16  # over 180 degrees
ARC_RADII = (0.2, 0.3, 0.45)  # image units (the image spans [-1, 1])
ARC_SPAN = 0.6 * math.pi
STROKE = 2.0  # stroke width in pixels
POLARITIES = (0.0, 1.0)  # black and white strokes
BOUNDARY_ORIENTATIONS = 8  # over 360 degrees, for edges between two regions
PROBE_HUES = 12


@dataclass
class Probe:
    """Images ``[N, 3, S, S]``, the property ``value`` of each ``[N]`` (an index into
    ``values``), and what the values mean."""

    name: str
    images: torch.Tensor
    value: torch.Tensor
    values: tuple[str, ...]


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    axis = torch.linspace(-1, 1, size)
    row, column = torch.meshgrid(axis, axis, indexing="ij")
    return column[None], -row[None], 2.0 / size


def _canvas(n: int, size: int, colour: float = GREY) -> torch.Tensor:
    return torch.full((n, 3, size, size), colour)


def arcs(size: int = 64) -> Probe:
    """Arcs at ``ARC_ORIENTATIONS`` orientations, of every radius in ``ARC_RADII``, black and
    white, the middle of each arc's chord at the image's centre."""
    x, y, pixel = _grid(size)
    rows = [(o, r, p) for o in range(ARC_ORIENTATIONS) for r in ARC_RADII for p in POLARITIES]
    facing = torch.tensor([o * 2 * math.pi / ARC_ORIENTATIONS for o, _, _ in rows])
    radius = torch.tensor([r for _, r, _ in rows])
    span = torch.full_like(radius, ARC_SPAN)
    direction = torch.stack([torch.cos(facing), torch.sin(facing)], 1)
    centre = -(radius * (1 + math.cos(ARC_SPAN / 2)) / 2)[:, None] * direction
    distance = arc_distance(x, y, centre, radius, facing, span)
    colour = torch.tensor([p for _, _, p in rows])[:, None].expand(-1, 3)
    images = paint(_canvas(len(rows), size), distance, torch.full_like(radius, STROKE * pixel), colour, pixel)
    names = tuple(f"{o * 360 / ARC_ORIENTATIONS:g}deg" for o in range(ARC_ORIENTATIONS))
    return Probe("curve", images, torch.tensor([o for o, _, _ in rows]), names)


def lines(size: int = 64) -> Probe:
    """Straight lines through the centre at ``LINE_ORIENTATIONS`` orientations over 180
    degrees, 0.9 image half-widths long, black and white, at three offsets across the line."""
    x, y, pixel = _grid(size)
    rows = [(o, s, p) for o in range(LINE_ORIENTATIONS) for s in (-0.1, 0.0, 0.1) for p in POLARITIES]
    angle = torch.tensor([o * math.pi / LINE_ORIENTATIONS for o, _, _ in rows])
    along = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    across = torch.stack([-torch.sin(angle), torch.cos(angle)], 1)
    middle = torch.tensor([s for _, s, _ in rows])[:, None] * across
    distance = segment_distance(x, y, middle - 0.45 * along, middle + 0.45 * along)
    colour = torch.tensor([p for _, _, p in rows])[:, None].expand(-1, 3)
    images = paint(_canvas(len(rows), size), distance, torch.full((len(rows),), STROKE * pixel), colour, pixel)
    names = tuple(f"{o * 180 / LINE_ORIENTATIONS:g}deg" for o in range(LINE_ORIENTATIONS))
    return Probe("line", images, torch.tensor([o for o, _, _ in rows]), names)


def _probe_hue(k: int) -> float:
    return k / PROBE_HUES


def colours(size: int = 64) -> Probe:
    """Uniform fields of ``PROBE_HUES`` saturated hues at two brightnesses."""
    rows = [(k, v) for k in range(PROBE_HUES) for v in (0.6, 1.0)]
    rgb = _hsv_to_rgb(torch.tensor([_probe_hue(k) for k, _ in rows]), torch.ones(len(rows)),
                      torch.tensor([v for _, v in rows]))
    images = rgb[:, :, None, None].expand(-1, -1, size, size).contiguous()
    names = tuple(f"hue {round(360 * _probe_hue(k))}deg" for k in range(PROBE_HUES))
    return Probe("colour", images, torch.tensor([k for k, _ in rows]), names)


def colour_edges(size: int = 64) -> Probe:
    """Two saturated hues meeting at a straight edge through the centre, at
    ``BOUNDARY_ORIENTATIONS`` orientations: every ordered pair of 6 hues 2 bins or more apart
    on the hue circle, at equal value. The value is the pair, the first hue on the side
    the orientation points to."""
    x, y, pixel = _grid(size)
    hues = range(0, PROBE_HUES, 2)
    pairs = [(a, b) for a in hues for b in hues if a != b]
    rows = [(i, o) for i, _ in enumerate(pairs) for o in range(BOUNDARY_ORIENTATIONS)]
    normal = torch.tensor([o * 2 * math.pi / BOUNDARY_ORIENTATIONS for _, o in rows])
    side = x * torch.cos(normal)[:, None, None] + y * torch.sin(normal)[:, None, None]
    first = torch.clamp(0.5 + side / pixel, 0, 1)[:, None]
    ones = torch.ones(len(rows))
    a = _hsv_to_rgb(torch.tensor([_probe_hue(pairs[i][0]) for i, _ in rows]), ones, 0.9 * ones)
    b = _hsv_to_rgb(torch.tensor([_probe_hue(pairs[i][1]) for i, _ in rows]), ones, 0.9 * ones)
    images = a[:, :, None, None] * first + b[:, :, None, None] * (1 - first)
    names = tuple(f"{round(360 * _probe_hue(p))}deg|{round(360 * _probe_hue(q))}deg" for p, q in pairs)
    return Probe("colour contrast", images, torch.tensor([i for i, _ in rows]), names)


def frequency_edges(size: int = 64) -> Probe:
    """A grey grating on one side of a straight edge through the centre and flat grey on the
    other, the grating on the side the orientation points to, at
    ``BOUNDARY_ORIENTATIONS`` orientations; gratings of 6 and 10 cycles per image, at
    four orientations and two phases."""
    x, y, pixel = _grid(size)
    rows = [(o, f, t, ph) for o in range(BOUNDARY_ORIENTATIONS) for f in (6.0, 10.0) for t in range(4)
            for ph in (0.0, math.pi)]
    normal = torch.tensor([o * 2 * math.pi / BOUNDARY_ORIENTATIONS for o, _, _, _ in rows])
    turn = torch.tensor([t * math.pi / 4 for _, _, t, _ in rows])
    freq = torch.tensor([f for _, f, _, _ in rows])
    phase = torch.tensor([p for _, _, _, p in rows])
    side = x * torch.cos(normal)[:, None, None] + y * torch.sin(normal)[:, None, None]
    high = torch.clamp(0.5 + side / pixel, 0, 1)
    along = x * torch.cos(turn)[:, None, None] + y * torch.sin(turn)[:, None, None]
    wave = 0.35 * torch.sin(math.pi * freq[:, None, None] * along + phase[:, None, None])
    images = (GREY + wave * high)[:, None].expand(-1, 3, -1, -1).contiguous()
    names = tuple(f"{o * 360 / BOUNDARY_ORIENTATIONS:g}deg" for o in range(BOUNDARY_ORIENTATIONS))
    return Probe("high-low frequency", images, torch.tensor([o for o, _, _, _ in rows]), names)


def gratings(size: int = 64) -> Probe:
    """Whole-image grey gratings at 8 orientations over 180 degrees (procedural.py's grating
    orientation), 3 frequencies and 2 phases."""
    x, y, _ = _grid(size)
    rows = [(o, f, ph) for o in range(8) for f in (3.0, 5.0, 8.0) for ph in (0.0, math.pi)]
    theta = torch.tensor([o * math.pi / 8 for o, _, _ in rows])
    freq = torch.tensor([f for _, f, _ in rows])
    phase = torch.tensor([p for _, _, p in rows])
    along = x * torch.cos(theta)[:, None, None] - y * torch.sin(theta)[:, None, None]
    wave = 0.35 * torch.sin(math.pi * freq[:, None, None] * along + phase[:, None, None])
    images = (GREY + wave)[:, None].expand(-1, 3, -1, -1).contiguous()
    names = tuple(f"{round(o * 180 / 8)}deg" for o in range(8))
    return Probe("grating", images, torch.tensor([o for o, _, _ in rows]), names)


def shapes(size: int = 64) -> Probe:
    """The 8 shapes of :mod:`.procedural`, white and black, at 8 rotations and two sizes, centred."""
    x, y, pixel = _grid(size)
    rows = [(k, a, r, p) for k in range(len(SHAPES)) for a in range(8) for r in (0.3, 0.42) for p in POLARITIES]
    kind = torch.tensor([k for k, _, _, _ in rows])
    alpha = torch.tensor([a * math.pi / 4 for _, a, _, _ in rows])[:, None, None]
    radius = torch.tensor([r for _, _, r, _ in rows])[:, None, None]
    u, v = torch.cos(alpha) * x + torch.sin(alpha) * y, -torch.sin(alpha) * x + torch.cos(alpha) * y
    cover = torch.clamp(0.5 - _shape_distance(kind, u, v, radius) / pixel, 0, 1)[:, None]
    colour = torch.tensor([p for _, _, _, p in rows])[:, None, None, None]
    images = GREY * (1 - cover) + colour * cover
    return Probe("shape", images.expand(-1, 3, -1, -1).contiguous(), kind, SHAPES)


PROBES = {"curve": arcs, "line": lines, "colour": colours, "colour contrast": colour_edges,
          "high-low frequency": frequency_edges, "grating": gratings, "shape": shapes}
_ = HUES  # the hue bins of the task; probe hues are finer (PROBE_HUES)


def tuning(responses: torch.Tensor, probe: Probe) -> torch.Tensor:
    """Per unit, the best response to each of the probe's values: ``[units, values]`` from
    responses ``[units, images]``."""
    best = torch.full((len(responses), len(probe.values)), -math.inf)
    for value in range(len(probe.values)):
        best[:, value] = responses[:, probe.value == value].amax(1)
    return best


def circular_distance(a: torch.Tensor | float, b: torch.Tensor | float, period: float = 360.0) -> torch.Tensor:
    """The distance between angles ``a`` and ``b`` (degrees) on a circle of ``period``."""
    d = torch.remainder(torch.as_tensor(a, dtype=torch.float32) - torch.as_tensor(b, dtype=torch.float32), period)
    return torch.minimum(d, period - d)


def orientation_distance(a: float, a_is_curve: bool, b: float, b_is_curve: bool) -> float:
    """Degrees between two orientations: two curves' facings over 360 degrees; otherwise over
    180, a curve read as its tangent at its middle (90 degrees off its facing), so that a
    line running at ``a`` matches the curves facing ``a + 90`` and ``a - 90``."""
    if a_is_curve and b_is_curve:
        return float(circular_distance(a, b, 360.0))
    return float(circular_distance(a + 90.0 * a_is_curve, b + 90.0 * b_is_curve, 180.0))


def selective(curve: torch.Tensor, period: float, width: float = 45.0) -> tuple[torch.Tensor, torch.Tensor]:
    """For tuning curves ``[units, K]`` over ``K`` evenly spaced angles of ``period`` degrees:
    each unit's preferred angle, and whether it is *selective*: its peak is positive and
    every angle where it responds above half its peak lies within ``width`` degrees of it."""
    k = curve.shape[1]
    peak, best = curve.max(1)
    angles = torch.arange(k) * period / k
    preferred = angles[best]
    far = circular_distance(angles[None, :], preferred[:, None], period) > width + 1e-3
    above = curve > peak[:, None] / 2
    return preferred, (peak > 0) & ~(far & above).any(1)
