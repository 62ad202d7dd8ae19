"""Pictures of weights, made straight from arrays: a colormap lookup and a PNG encode.

- A kernel tile is a ``kh x kw`` heatmap on the diverging RdBu scale of the circuits atlases, divided
  by its output unit's scale, so +scale is full red, -scale full blue and 0 exactly
  ``#f7f7f7``. Tiles stay at one pixel per weight, many to a sprite; pages enlarge them
  with nearest-neighbour sampling (``image-rendering: pixelated``).
- A first-layer kernel is shown as a colour image, min-max normalised over its three
  channels together.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from PIL import Image

RDBU_STOPS = ("#0571b0", "#92c5de", "#f7f7f7", "#f4a582", "#ca0020")  # negative -> positive
# 241 entries put one entry exactly on each stop (0, 1/4, 1/2, 3/4, 1): zero is exactly #f7f7f7,
# and a tile sprite fits a PNG palette (at most 256 colours), a third of its size in RGB.
LEVELS = 241
DIVERGING = LinearSegmentedColormap.from_list("atlas_rdbu", RDBU_STOPS, N=LEVELS)
PALETTE = np.round(DIVERGING(np.linspace(0, 1, LEVELS))[:, :3] * 255).astype(np.uint8)  # entry i: level i
PALETTE_BYTES = PALETTE.tobytes()  # as a PNG palette holds it


PICTURE_QUALITY = 70  # WebP quality of pictures in the site (80 looks the same, at 16% more bytes)


THINNEST = 8  # a stored image's longer side is at most this many times its shorter side


def readable_shape(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` of an image of that shape after :func:`readable`."""
    shortest = -(-max(height, width) // THINNEST)
    return max(height, shortest), max(width, shortest)


def readable(image: Image.Image) -> Image.Image:
    """The image, its shorter side widened by repeating pixels (nearest neighbour) to at least
    1/``THINNEST`` of its longer side. A one-dimensional picture or a long thin kernel then shows
    as a strip, not a hairline, wherever a page keeps an image's aspect; other images are
    returned as they are."""
    height, width = readable_shape(image.height, image.width)
    if (width, height) == image.size:
        return image
    return image.resize((width, height), Image.Resampling.NEAREST)


def shown_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """``(width, height)`` on screen of an image stored ``height`` x ``width`` (after
    :func:`readable`), its longer side ``longest`` pixels."""
    scale = longest / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an ``[h, w, 3]`` uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=1)  # small images: as small, faster
    return buffer.getvalue()


def webp(image: Image.Image | np.ndarray, size: int | None = None, quality: int = PICTURE_QUALITY) -> bytes:
    """WebP bytes of a picture (about half a JPEG's size at the same look), resized if given a
    ``size`` so that its longer side is ``size`` pixels (keeping its aspect); a very thin one is
    widened first (:func:`readable`)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = readable(image)
    if size is not None and max(image.size) != size:
        scale = size / max(image.size)
        image = image.resize(tuple(max(1, round(side * scale)) for side in image.size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # method 5 of libwebp's 0 to 6: 5% smaller than 4 on 224 px pictures at about the same time;
    # 6 saves 2% more at twice the time
    image.convert("RGB").save(buffer, format="WEBP", quality=quality, method=5)
    return buffer.getvalue()


def diverging_levels(values: np.ndarray, scale: float) -> np.ndarray:
    """``values`` as entries of :data:`PALETTE`, with ``[-scale, +scale]`` mapped end to end (0 is
    the middle entry exactly)."""
    unit = np.clip(values / scale, -1, 1) if scale > 0 else np.zeros_like(values)
    return np.round((unit + 1) / 2 * (LEVELS - 1)).astype(np.uint8)


def diverging_pixels(values: np.ndarray, scale: float) -> np.ndarray:
    """``values`` coloured on the RdBu scale with ``[-scale, +scale]`` mapped end to end."""
    return PALETTE[diverging_levels(values, scale)]


def palette_png(levels: np.ndarray) -> bytes:
    """PNG bytes of ``[h, w]`` entries of :data:`PALETTE` as a palette image.

    Written here rather than by Pillow: a page's tile sprite is a few hundred bytes, and
    Pillow's encoder took three times as long around the same zlib call (47 against 15 us;
    one sprite on each of ResNet-50's 16,000 pages)."""
    height, width = levels.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # each row after its filter type, 0: none
    rows[:, 1:] = levels
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit palette entries, no interlace
    # zlib level 6, as Pillow's default: level 9 is 1% smaller, 3 times slower
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + PALETTE_CHUNK + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: its length, kind, data and the CRC-32 of kind and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PALETTE_CHUNK = _chunk(b"PLTE", PALETTE_BYTES)


def rgb_kernel(kernel: np.ndarray) -> bytes:
    """PNG of a first-layer ``[3, kh, kw]`` kernel as a colour image (min-max over all channels)."""
    kernel = kernel.astype(np.float64)  # the range of float32 weights past 1e38 overflows float32
    low, high = float(kernel.min()), float(kernel.max())
    unit = (kernel - low) / (high - low) if high > low else np.full_like(kernel, 0.5)
    pixels = np.round(unit.transpose(1, 2, 0) * 255).astype(np.uint8)
    return png(np.asarray(readable(Image.fromarray(pixels, mode="RGB"))))


def tile_sprite(kernels: list[np.ndarray], scales: list[float]) -> tuple[bytes, list[tuple[int, int, int]]]:
    """One PNG holding many kernel tiles side by side, one pixel per weight, 1 px apart.

    Returns the PNG and each tile's ``(x, width, height)`` in it. Pages show a tile by
    enlarging the sprite with nearest-neighbour sampling and offsetting it, so a unit's
    tiles cost one image file and one PNG encode, not one per tile.
    """
    if len({(k.shape, k.dtype) for k in kernels}) == 1:  # the usual page: one shape, drawn at once
        stacked = np.stack(kernels)
        n, h, w = stacked.shape
        divisors = np.asarray(scales, dtype=stacked.dtype)
        scaled = np.where(divisors[:, None, None] > 0, stacked / np.where(divisors > 0, divisors, 1)[:, None, None], 0)
        canvas = np.zeros((h, n, w + 1), dtype=np.float32)
        canvas[:, :, :w] = scaled.transpose(1, 0, 2)
        canvas = canvas.reshape(h, n * (w + 1))[:, :-1]
        return palette_png(diverging_levels(canvas, 1.0)), [(i * (w + 1), w, h) for i in range(n)]
    widths = [k.shape[1] for k in kernels]
    height = max(k.shape[0] for k in kernels)
    canvas = np.zeros((height, sum(widths) + len(kernels) - 1), dtype=np.float32)
    places, x = [], 0
    for kernel, scale in zip(kernels, scales):
        h, w = kernel.shape
        canvas[:h, x : x + w] = kernel / scale if scale > 0 else 0
        places.append((x, w, h))
        x += w + 1
    return palette_png(diverging_levels(canvas, 1.0)), places


def factor_grid(pictures: list[np.ndarray], columns: int) -> bytes:
    """One PNG of many units' ``[kh, kw, 3]`` factor pictures (values in [0, 1]), ``columns`` to a
    row, one pixel per kernel position and no gap: pages cut a unit's out by its offset."""
    h, w = pictures[0].shape[:2]
    columns = min(columns, len(pictures))
    rows = -(-len(pictures) // columns)
    canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, picture in enumerate(pictures):
        row, column = divmod(i, columns)
        canvas[row * h:(row + 1) * h, column * w:(column + 1) * w] = np.round(np.clip(picture, 0, 1) * 255)
    return png(canvas)
