"""A page's kernel tiles: one sprite image in the page's CSS, each tile a CSS-placed window of it.

Sections ask a :class:`TileSheet` for a tile per kernel (:meth:`TileSheet.tile`); once the
page's sections are done, :meth:`TileSheet.finish` draws every kernel into one sprite (one
pixel per weight) and places each tile: its shape class (whole screen pixels per weight,
about ``tile_size`` pixels a side; a long thin kernel widened as
:func:`generator.render.readable` widens images) and its offset, which the templates write out.
The sprite is a data URI in the page's CSS, not a file: a unit's is about a kilobyte, and
creating a file cost as much as writing the page (ResNet-50's 16,000 pages: 8% of their time).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from .render import readable_shape, tile_sprite


@dataclass(slots=True)
class Tile:
    """One kernel on the page: drawn at ``kernel / scale`` (so ``scale`` is full red or blue)."""

    kernel: np.ndarray
    scale: float
    shape: str = ""  # its CSS class (size and sprite), set by TileSheet.finish
    x: int = 0  # its offset into the enlarged sprite, in screen pixels


class TileSheet:
    """The tiles of one page, drawn from one sprite."""

    def __init__(self, tile_size: int):
        self.tile_size = tile_size
        self.tiles: list[Tile] = []

    def tile(self, kernel: np.ndarray, scale: float) -> Tile:
        tile = Tile(kernel, scale)
        self.tiles.append(tile)
        return tile

    def finish(self) -> str:
        """Draw the sprite, place every tile, and return the page CSS: the sprite for every tile,
        and the tiles' shapes ('' without tiles)."""
        if not self.tiles:
            return ""
        sprite, places = tile_sprite([t.kernel for t in self.tiles], [t.scale for t in self.tiles])
        width, height = sum(w + 1 for _, w, _ in places) - 1, max(h for _, _, h in places)
        shapes: dict[tuple[int, int, int, int], str] = {}
        scales: dict[tuple[int, int], tuple[str, int]] = {}  # a kernel's width and height: its class, pixels across
        for tile, (x, w, h) in zip(self.tiles, places):
            if (w, h) not in scales:
                factor = max(1, round(self.tile_size / max(w, h)))
                tall, wide = readable_shape(h, w)
                across, down = max(factor, round(factor * wide / w)), max(factor, round(factor * tall / h))
                scales[(w, h)] = shapes.setdefault((w, h, across, down), f"t{len(shapes)}"), across
            tile.shape, across = scales[(w, h)]
            tile.x = x * across
        return (f".wa-tile{{background-image:url(data:image/png;base64,{base64.b64encode(sprite).decode()})}}"
                + "".join(f".{name}{{width:{w * fx}px;height:{h * fy}px;background-size:{width * fx}px {height * fy}px}}"
                          for (w, h, fx, fy), name in shapes.items()))
