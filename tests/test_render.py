import io

import numpy as np
from PIL import Image

from generator.render import kernel_tile, rgb_kernel


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def hex_colour(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


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


def test_positions_outside_the_true_extent_are_exactly_zero_colour():
    kernel = np.ones((3, 3))
    tile = pixels(kernel_tile(kernel, scale=1.0, extent=(5, 5)))
    assert tile.shape == (5, 5, 3)
    border = np.ones((5, 5), bool)
    border[1:4, 1:4] = False
    assert {hex_colour(p) for p in tile[border]} == {"#f7f7f7"}
    assert {hex_colour(p) for p in tile[~border]} == {"#ca0020"}


def test_first_layer_kernel_is_min_max_over_all_channels():
    kernel = np.zeros((3, 2, 2))
    kernel[0, 0, 0] = 4.0  # the brightest red
    kernel[2, 1, 1] = -4.0  # the darkest blue
    image = pixels(rgb_kernel(kernel))
    assert image.shape == (2, 2, 3)
    assert tuple(image[0, 0]) == (255, 128, 128)
    assert tuple(image[1, 1]) == (128, 128, 0)
    assert tuple(image[0, 1]) == (128, 128, 128)  # zero weight is mid-grey, shared by all channels
