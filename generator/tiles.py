"""A page's kernel tiles: one sprite image, each tile a CSS-placed window of it.

Sections ask a :class:`TileSheet` for a tile per kernel (:meth:`TileSheet.tile`); once the
page's sections are done, :meth:`TileSheet.finish` draws every kernel into one sprite (one
pixel per weight), writes it, and places each tile: its shape class (whole screen pixels per
weight, about ``tile_size`` pixels a side; a long thin kernel widened as
:func:`generator.render.readable` widens images) and its offset, which the templates write out.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """The tiles of one page, drawn from one sprite file called ``name``."""

    def __init__(self, name: str, tile_size: int):
        self.name, self.tile_size = name, tile_size
        self.tiles: list[Tile] = []

    def tile(self, kernel: np.ndarray, scale: float) -> Tile:
        tile = Tile(kernel, scale)
        self.tiles.append(tile)
        return tile

    def finish(self, write: Callable[[str, bytes], None]) -> str:
        """Draw the sprite (``write(name, png)``), place every tile, and return the page CSS of the
        tiles' shapes ('' without tiles)."""
        if not self.tiles:
            return ""
        sprite, places = tile_sprite([t.kernel for t in self.tiles], [t.scale for t in self.tiles])
        write(self.name, sprite)
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
        return "".join(f".{name}{{width:{w * fx}px;height:{h * fy}px;background-image:url({self.name});"
                       f"background-size:{width * fx}px {height * fy}px}}" for (w, h, fx, fy), name in shapes.items())
