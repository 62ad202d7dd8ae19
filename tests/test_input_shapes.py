"""Inputs of any shape: grayscale and other channel counts, and images that are not square."""

import io
import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from generator import build_atlas, load_config
from generator.config import TransformConfig
from generator.dataset_examples import _strip, crop_box, image_source
from generator.featurevis import visualise_units
from generator.featurevis.optimise import Job, model_for, render
from generator.featurevis.param import FourierImage, initial_spectra
from generator.featurevis.transforms import RandomViews, resized
from generator.graph import trace_layers
from generator.images import load_image
from generator.loading import load_model, weights_hash
from tests.conftest import QUICK_PICTURES, write_config

HEIGHT, WIDTH = 40, 56


class GrayscaleCNN(nn.Module):
    """A small CNN that reads one channel (grayscale), traced at 40 x 56."""

    def __init__(self, channels: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 10, 3, stride=2, padding=1)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv3(F.relu(self.conv2(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def grayscale_cnn():
    return GrayscaleCNN(1)


def two_channel_cnn():
    return GrayscaleCNN(2)


def rgb_cnn():
    return GrayscaleCNN(3)


@pytest.fixture(scope="module")
def mixed_images(tmp_path_factory):
    """PNG images of mixed sizes and modes (grey, RGB, wide, tall, small, square)."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    sizes = [(30, 30), (80, 60), (50, 120), (200, 90), (40, 56), (17, 23)]  # (height, width)
    for i in range(12):
        height, width = sizes[i % len(sizes)]
        y, x = np.mgrid[0:height, 0:width]
        wave = 0.5 + 0.5 * np.sin(x * rng.uniform(0.1, 0.8) + y * rng.uniform(0.1, 0.8))
        pixels = (255 * wave).astype(np.uint8)
        image = Image.fromarray(pixels, "L") if i % 2 else Image.fromarray(np.stack([pixels] * 3, axis=2), "RGB")
        image.save(root / f"{i:02d}.png")
    return root


def _config(tmp_path, **settings):
    settings.setdefault("model", {"source": "tests.test_input_shapes:grayscale_cnn"})
    settings.setdefault("input", {"channels": 1, "size": [HEIGHT, WIDTH]})
    return load_config(write_config(tmp_path, **settings))


def test_a_grayscale_model_of_non_square_input_builds_a_full_atlas(tmp_path, mixed_images):
    # 28: the pictures' longer side, so they are 20 x 28, the input's aspect.
    config = _config(tmp_path, featurevis={**QUICK_PICTURES, "size": 28},
                     dataset={"source": str(mixed_images), "top": 3}, site={"output": str(tmp_path / "site")})
    assert config.input.shape == (1, HEIGHT, WIDTH) and config.input.mean == (0.5,) and config.input.std == (0.25,)
    assert config.picture_shape == (20, 28)
    report = build_atlas(config)
    units = 6 + 8 + 10 + 4  # three convolutions and the classifier
    assert report.units == units and report.pictures_made == 2 * units  # positive and negative pictures
    assert (tmp_path / "site" / "index.html").is_file()

    pictures = sorted((tmp_path / "cache" / "featurevis").rglob("*.png"))
    assert len(pictures) == 2 * units
    for path in pictures:
        with Image.open(path) as picture:
            assert picture.size == (28, 20)  # (width, height)
            grey = np.asarray(picture.convert("RGB"))
            assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
        record = json.loads(path.with_suffix(".json").read_text())
        assert (record["height"], record["width"], record["size"]) == (20, 28, 28)
        assert "decorrelated" not in record["parameterisation"]  # one channel: no colour to decorrelate
    shown = [p for p in (tmp_path / "site").rglob("*.webp") if ".fv" in p.name or ".thumb" in p.name]
    assert shown
    for path in shown:
        with Image.open(path) as picture:
            assert abs(picture.width / picture.height - 28 / 20) < 0.1, path  # the picture's aspect, kept

    strips = sorted((tmp_path / "cache" / "examples").rglob("*.webp"))
    assert len(strips) == units
    for path in strips:
        with Image.open(path) as strip:
            # 3 columns of 64 px; whole images 64 x 46 (40 x 56 fitted), under 64 px crops or alone
            assert strip.width == 3 * 66 - 2 and strip.height in (46, 64 + 2 + 46)
    for records in (tmp_path / "cache" / "examples").rglob("examples.json"):
        for unit in json.loads(records.read_text()):
            assert len(unit) == 3
            for example in unit:
                top, left, bottom, right = example["box"]
                assert 0 <= top < bottom <= HEIGHT and 0 <= left < right <= WIDTH
                assert example["label"].endswith(".png")


def test_pictures_are_the_input_shape_by_default(tmp_path):
    config = _config(tmp_path, layers=["conv3"])  # featurevis.size 0: the input's (height, width)
    assert config.picture_shape == (HEIGHT, WIDTH)
    model = load_model(config)
    network, graph = trace_layers(model, config.input.shape)
    pictures = visualise_units(config, network, graph.restricted(config.layers), weights_hash(model))
    assert pictures.made == 2 * 10
    for direction in (1, -1):
        with Image.open(pictures.image("conv3", 9, direction)) as picture:
            assert picture.size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("factory, channels, decorrelated", [
    ("two_channel_cnn", 2, False), ("rgb_cnn", 3, True), ("grayscale_cnn", 1, False)])
def test_render_other_channel_counts_and_odd_sizes(tmp_path, factory, channels, decorrelated):
    size = [33, 47]  # odd sides: the Fourier image must keep its width
    config = _config(tmp_path, model={"source": f"tests.test_input_shapes:{factory}"},
                     input={"channels": channels, "size": size})
    model = load_model(config)
    network, graph = trace_layers(model, config.input.shape)
    made = render(model_for(network, graph, "conv2", 1), Job("conv2", (0, 3), 1), config.featurevis, config.input,
                  torch.device("cpu"))
    assert [p.image.shape for p in made] == [(33, 47, channels)] * 2
    assert all(math.isfinite(p.objective) and math.isfinite(p.noise) for p in made)
    generators = [np.random.default_rng(0)]
    assert FourierImage(initial_spectra(generators, channels, (33, 47)), width=47).decorrelate == decorrelated


def test_fourier_image_of_any_shape_starts_grey():
    generators = [np.random.default_rng(i) for i in range(2)]
    with torch.no_grad():
        for height, width in ((20, 28), (33, 47), (64, 9)):
            image = FourierImage(initial_spectra(generators, 1, (height, width)), width=width)()
            assert image.shape == (2, 1, height, width)
            assert 0.45 < float(image.mean()) < 0.55 and float(image.std()) < 0.05
    with pytest.raises(ValueError, match="not of an image"):
        FourierImage(initial_spectra(generators, 1, (20, 28)), width=30)


def test_views_of_a_non_square_picture_neither_stretch_nor_move_it():
    generators = [np.random.default_rng(1)]
    picture = torch.rand(1, 2, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    still = RandomViews(TransformConfig(pad=0, jitter=0, scale=(1.0, 1.0), rotate=0.0), (HEIGHT, WIDTH),
                        (HEIGHT, WIDTH), generators)
    assert torch.allclose(still(picture), picture, atol=1e-5)  # no transforms: the picture itself
    views = RandomViews(TransformConfig(pad=6, jitter=4, scale=(0.9, 1.1), rotate=30.0), (20, 28), (HEIGHT, WIDTH),
                        generators)
    assert views(picture[:, :, :20, :28]).shape == (1, 2, HEIGHT, WIDTH)
    for _ in range(20):
        theta = np.array(views._theta(generators[0]))[:, :2]
        # Back in pixels (image pixels per input pixel), the map is a rotation times one scale.
        pixels = np.diag([28 / 2, 20 / 2]) @ theta @ np.diag([2 / WIDTH, 2 / HEIGHT])
        gram = pixels.T @ pixels
        assert gram[0, 1] == pytest.approx(0, abs=1e-9) and gram[0, 0] == pytest.approx(gram[1, 1])
    assert resized(picture, (20, 28)).shape == (1, 2, 20, 28)


def test_transforms_below_one_are_shares_of_each_side_and_rotation_needs_a_wide_picture():
    shares = TransformConfig()  # pad 0.05, jitter 0.04, rotate 10
    assert shares.pixels((224, 224)) == ((11, 11), (9, 9), 10.0)  # Lucid's 12 and 8, near enough
    assert shares.pixels((12, 12)) == ((1, 1), (0, 0), 10.0)
    assert shares.pixels((1024, 1)) == ((51, 0), (41, 0), 0.0)  # along the length only, never turned
    assert TransformConfig(pad=12, jitter=8).pixels((12, 12)) == ((12, 12), (8, 8), 10.0)  # pixels, as given
    generators = [np.random.default_rng(3)]
    thin = RandomViews(shares, (1024, 1), (1024, 1), generators)
    for _ in range(20):
        theta = thin._theta(generators[0])
        assert theta[0][1] == 0 and theta[1][0] == 0 and theta[0][2] == 0  # no turn, no move across


def test_face_detectors_of_12_and_24_pixels_beat_noise_with_the_default_transforms():
    """MTCNN's trained PNet (12 x 12) and RNet (24 x 24): at least 90% of their units' pictures,
    made with the default transforms, excite them more than uniform noise does."""
    from generator.config import FeatureVisConfig, InputConfig
    from tests.zoo import ensure_importable

    ensure_importable()
    import facenet_pytorch
    settings = FeatureVisConfig(steps=64)  # the default transforms
    for name, size in (("PNet", 12), ("RNet", 24)):
        network, graph = trace_layers(getattr(facenet_pytorch, name)().eval(), (3, size, size))
        inp = InputConfig(channels=3, size=size, mean=[0.5] * 3, std=[0.5] * 3)
        made = [p for layer in graph.layers if layer.name.startswith("conv")
                for p in render(model_for(network, graph, layer.name, 1), Job(layer.name, tuple(range(layer.channels)), 1),
                                settings, inp, torch.device("cpu"))]
        assert sum(p.objective > p.noise for p in made) >= 0.9 * len(made), name


def test_images_from_a_folder_fit_the_input(mixed_images):
    for path in sorted(mixed_images.glob("*.png")):
        assert load_image(path, (HEIGHT, WIDTH), 1).shape == (HEIGHT, WIDTH, 1)
        assert load_image(path, (HEIGHT, WIDTH), 3).shape == (HEIGHT, WIDTH, 3)
        assert load_image(path, (50, 20), 3).shape == (50, 20, 3)
    with pytest.raises(ValueError, match="grey or RGB"):
        load_image(path, (HEIGHT, WIDTH), 2)


def test_crops_of_a_non_square_image():
    window = (16, 24, 24, 32)  # an 8-pixel square around the centre of a 40 x 56 image
    assert crop_box(window, (5, 7), 2, 3, (HEIGHT, WIDTH)) == (15, 23, 25, 33)  # at least a quarter of 40
    assert crop_box(window, (5, 7), 0, 6, (HEIGHT, WIDTH)) == (0, 46, 10, 56)  # moved back inside
    assert crop_box((0, 2, 40, 54), (1, 1), 0, 0, (HEIGHT, WIDTH)) == (0, 2, 40, 54)  # cut to the height
    assert crop_box(None, (1, 1), 0, 0, (HEIGHT, WIDTH)) == (0, 0, HEIGHT, WIDTH)
    images = [np.zeros((HEIGHT, WIDTH, 3), np.uint8)] * 2
    with Image.open(io.BytesIO(_strip(images, [(0, 0, HEIGHT, WIDTH)] * 2))) as strip:
        assert strip.size == (2 * 66 - 2, 46)
    tall = [np.zeros((WIDTH, HEIGHT, 3), np.uint8)] * 2
    with Image.open(io.BytesIO(_strip(tall, [(0, 0, 10, 10)] * 2))) as strip:
        assert strip.size == (2 * 66 - 2, 64 + 2 + 64)


@pytest.mark.parametrize("input_settings, folder, reason", [
    ({"channels": 1, "size": 64}, False, "procedural images are RGB and the model reads 1 channels"),
    ({"channels": 3, "size": [HEIGHT, WIDTH]}, False, "procedural images are square and the model reads 40 x 56"),
    ({"channels": 2, "size": [HEIGHT, WIDTH]}, True, "grey (1 channel) or RGB (3) and the model reads 2 channels"),
])
def test_images_the_model_cannot_read_are_skipped(tmp_path, caplog, mixed_images, input_settings, folder, reason):
    config = _config(tmp_path, input=input_settings, dataset={"source": str(mixed_images) if folder else "procedural"})
    with caplog.at_level(logging.INFO, logger="weight_atlas"):
        assert image_source(config) is None
    assert reason in caplog.text
