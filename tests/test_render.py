import io

import numpy as np
from PIL import Image

from generator.render import PALETTE, palette_png, rgb_kernel, tile_sprite


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def kernel_tile(kernel: np.ndarray, scale: float) -> bytes:
    return tile_sprite([kernel], [scale])[0]


def hex_colour(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def test_a_palette_png_reads_back_as_its_levels_and_palette():
    """The sprites' PNG encoder (written by the atlas) against Pillow's decoder."""
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (3, 191), (11, 7), (40, 1)):
        levels = rng.integers(0, len(PALETTE), size=shape).astype(np.uint8)
        image = Image.open(io.BytesIO(palette_png(levels)))
        image.load()  # checks every chunk's CRC
        assert image.mode == "P" and image.size == shape[::-1]
        assert np.array_equal(np.asarray(image), levels)
        assert np.array_equal(np.asarray(image.getpalette()[: 3 * len(PALETTE)]).reshape(-1, 3), PALETTE)


def test_tile_colours_follow_the_five_rdbu_stops():
    kernel = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    tile = pixels(kernel_tile(kernel, scale=2.0))
    assert [hex_colour(p) for p in tile[0]] == ["#0571b0", "#92c5de", "#f7f7f7", "#f4a582", "#ca0020"]


def test_tile_is_one_pixel_per_weight_and_scale_saturates_only_the_peak():
    kernel = np.random.default_rng(0).normal(size=(5, 5))
    tile = pixels(kernel_tile(kernel, scale=np.abs(kernel).max() * 2))
    assert tile.shape == (5, 5, 3)  # no resampling: pages enlarge it with pixelated rendering
    assert hex_colour(tile.reshape(-1, 3)[np.abs(kernel).argmax()]) not in ("#0571b0", "#ca0020")
    clipped = pixels(kernel_tile(np.sign(kernel) * (1 + np.abs(kernel)), scale=1.0))
    assert set(map(hex_colour, clipped.reshape(-1, 3))) <= {"#0571b0", "#ca0020"}


def test_sprite_places_tiles_side_by_side_each_on_its_own_scale():
    a, b = np.full((3, 3), 2.0), np.full((5, 5), -2.0)
    data, places = tile_sprite([a, b], [2.0, 4.0])
    sprite = pixels(data)
    assert places == [(0, 3, 3), (4, 5, 5)] and sprite.shape == (5, 9, 3)
    assert {hex_colour(p) for p in sprite[:3, :3].reshape(-1, 3)} == {"#ca0020"}  # 2 on a scale of 2
    assert {hex_colour(p) for p in sprite[:, 4:].reshape(-1, 3)} == {"#92c5de"}  # -2 on a scale of 4: half way to blue
    assert {hex_colour(p) for p in sprite[3:, :3].reshape(-1, 3)} == {"#f7f7f7"}  # below the short tile: zero


def test_tiles_of_one_shape_are_drawn_as_tiles_of_mixed_shapes_are():
    rng = np.random.default_rng(0)
    same = [rng.normal(size=(5, 5)).astype(np.float32) for _ in range(4)]
    scales = [1.5, 0.0, 0.7, 3.0]  # a zero scale draws the tile blank
    one_shape, places = tile_sprite(same, scales)  # drawn at once
    mixed, mixed_places = tile_sprite([*same, np.ones((3, 2), np.float32)], [*scales, 1.0])  # tile by tile
    assert places == mixed_places[:4]
    assert np.array_equal(pixels(one_shape), pixels(mixed)[:, :places[-1][0] + 5])
    assert {hex_colour(p) for p in pixels(one_shape)[:, 6:11].reshape(-1, 3)} == {"#f7f7f7"}


def test_first_layer_kernel_is_min_max_over_all_channels():
    kernel = np.zeros((3, 2, 2))
    kernel[0, 0, 0] = 4.0  # the brightest red
    kernel[2, 1, 1] = -4.0  # the darkest blue
    image = pixels(rgb_kernel(kernel))
    assert image.shape == (2, 2, 3)
    assert tuple(image[0, 0]) == (255, 128, 128)
    assert tuple(image[1, 1]) == (128, 128, 0)
    assert tuple(image[0, 1]) == (128, 128, 128)  # zero weight is mid-grey, shared by all channels
