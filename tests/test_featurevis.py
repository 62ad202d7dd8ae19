"""Feature visualisation: pictures that excite their unit, cached, resumable, reproducible."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from generator import load_config
from generator.config import AtlasConfig
from generator.default_model.procedural import draw
from generator.featurevis import visualise_units
from generator.featurevis.cache import PictureCache
from generator.featurevis.layers import fused_local_response_norm, redirected_gradient
from generator.featurevis.objectives import channels
from generator.featurevis.optimise import Job, model_for, render
from generator.featurevis.param import FourierImage, initial_spectra
from generator.featurevis.transforms import resized
from generator.graph import trace_layers
from generator.inceptionv1 import InceptionV1
from generator.loading import load_model, weights_hash
from tests.conftest import ROOT, killed_part_way, write_config

LAYERS = ("conv2d2", "mixed3a", "mixed3b")


def layer_values(model, images: torch.Tensor, before_activation: bool = False) -> dict[str, torch.Tensor]:
    """The default model's layer values, computed by its own modules (no tracing, no truncation);
    ``before_activation``: before the final ReLUs (of every branch, for a mixed layer)."""
    branches = ("conv_1x1", "conv_3x3", "conv_5x5", "conv_pool_reduce")
    seen: dict[str, torch.Tensor] = {}
    hooks = [getattr(getattr(model, block), name).register_forward_hook(
        lambda module, args, out, key=f"{block}.{name}": seen.__setitem__(key, out))
        for block in ("mixed3a", "mixed3b") for name in branches]
    try:
        x = (images - 0.5) / 0.25
        x = model.maxpool0(F.relu(model.conv2d0(x)))
        pre = model.conv2d2(F.relu(model.conv2d1(x)))
        x = F.relu(pre)
        values = {"conv2d2": pre if before_activation else x}
        values["mixed3a"] = x = model.mixed3a(model.maxpool1(x))
        values["mixed3b"] = model.mixed3b(x)
    finally:
        for hook in hooks:
            hook.remove()
    if before_activation:
        for block in ("mixed3a", "mixed3b"):
            values[block] = torch.cat([seen[f"{block}.{name}"] for name in branches], dim=1)
    return values


def channel_means(model, images: torch.Tensor, layer: str, before_activation: bool = False) -> torch.Tensor:
    with torch.no_grad():
        return layer_values(model, images, before_activation)[layer].mean(dim=(2, 3))  # [images, units]


@pytest.fixture(scope="module")
def full_settings():
    """Pictures of a few live units per layer, made by the loop at the default atlas's own settings."""
    config = load_config(ROOT / "site_config" / "default.yml")
    model = load_model(config)
    network, graph = trace_layers(model, (3, 64, 64))
    probe = draw(256, 64, torch.Generator().manual_seed(1)).images
    pictures = {}
    for layer in LAYERS:
        alive = (channel_means(model, probe, layer).amax(dim=0) > 0).nonzero().flatten().tolist()
        chosen = alive[:: max(1, len(alive) // 4)][:4]
        for direction in (1, -1):
            job = Job(layer, tuple(chosen), direction)
            for picture in render(model_for(network, graph, layer, direction), job, config.featurevis, config.input,
                                  torch.device("cpu")):
                pictures[(layer, picture.unit, picture.direction)] = picture
    return config, model, pictures


def as_tensor(picture) -> torch.Tensor:
    """The picture as stored (8-bit), as the model would read it from the site: at its input size."""
    stored = torch.from_numpy(picture.image.astype(np.float32) / 255).permute(2, 0, 1)
    return resized(stored[None], (64, 64))[0]


def test_each_picture_excites_its_own_unit_more_than_noise_and_other_units(full_settings):
    _, model, pictures = full_settings
    noise = torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    for (layer, unit, direction), picture in pictures.items():
        if direction < 0:
            continue
        on_noise = channel_means(model, noise, layer)[:, unit]
        response = channel_means(model, as_tensor(picture)[None], layer)[0]
        own = float(response[unit])
        others = float(torch.cat([response[:unit], response[unit + 1:]]).mean())
        assert own > 1.5 * float(on_noise.max()), (layer, unit, own, float(on_noise.max()))  # any of 64
        assert own > others, (layer, unit, own, others)
        assert picture.objective == pytest.approx(own, rel=0.05, abs=1e-3)  # what the page states is true


def test_negative_pictures_drive_their_unit_down(full_settings):
    _, model, pictures = full_settings
    typical = draw(64, 64, torch.Generator().manual_seed(7)).images  # images like those it was trained on
    for (layer, unit, direction), picture in pictures.items():
        if direction > 0:
            continue
        images = torch.stack([as_tensor(pictures[(layer, unit, 1)]), as_tensor(picture)])
        positive, negative = channel_means(model, images, layer, before_activation=True)[:, unit].tolist()
        on_typical = channel_means(model, typical, layer, before_activation=True)[:, unit]
        assert negative < float(on_typical.min()) and negative < positive, (layer, unit, positive, negative)
        assert picture.objective == pytest.approx(negative, rel=0.05, abs=1e-3)


def test_provenance_names_how_each_picture_was_made(full_settings, tmp_path):
    config, model, pictures = full_settings
    cache = PictureCache(tmp_path, weights_hash(model), config)
    (key, picture), *_ = pictures.items()
    cache.put(picture, "cpu")
    record = cache.provenance(*key)
    assert record["steps"] == 96 and record["size"] == 80 and record["seed"] == 0
    assert record["transforms"] == {"pad": 10, "jitter": 10, "scale": [0.9, 1.1], "rotate": 10.0}
    assert record["learning_rate"] == 0.1 and record["optimiser"] == "Adam"
    assert "Fourier" in record["parameterisation"] and "decorrelated colour" in record["parameterisation"]
    assert record["objective_value"] == pytest.approx(picture.objective, abs=1e-5)
    assert record["weights_sha256"] == weights_hash(model)
    assert np.array_equal(np.asarray(Image.open(cache.image(*key))), picture.image)


def test_fourier_image_starts_grey_and_each_image_serves_its_own_unit():
    generators = [np.random.default_rng(i) for i in range(2)]
    with torch.no_grad():
        image = FourierImage(initial_spectra(generators, 3, (32, 32)))()
    assert image.shape == (2, 3, 32, 32) and 0.45 < float(image.mean()) < 0.55 and float(image.std()) < 0.05
    activations = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    both = channels([1, 2], [1, -1])
    assert both(activations).tolist() == [5.5, -21.5]  # unit 1 of image 0 up, unit 2 of image 1 down


def _small_config(tmp_path, **featurevis):
    settings = {"steps": 6, "batch": 16, "jobs": 1, **featurevis}
    return load_config(write_config(tmp_path, layers=["conv2d1"], featurevis=settings,
                                    site={"output": str(tmp_path / "site")}))


def _stage(config):
    model = load_model(config)
    network, graph = trace_layers(model, (3, 64, 64))
    return visualise_units(config, network, graph.restricted(config.layers), weights_hash(model))


def _folder_bytes(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def counted_steps(monkeypatch):
    """How many optimiser steps ran in this process."""
    count = {"steps": 0}
    original = torch.optim.Adam.step

    def counting(self, *args, **kwargs):
        count["steps"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    return count


def test_rebuild_takes_every_picture_from_the_cache_byte_for_byte(tmp_path, counted_steps):
    config = _small_config(tmp_path)
    first = _stage(config)
    assert first.made == 96 and counted_steps["steps"] == 6 * 6  # 48 units x 2 directions, 16 a job
    stored = _folder_bytes(tmp_path / "cache")
    counted_steps["steps"] = 0
    again = _stage(config)
    assert again.made == 0 and again.reused == 96 and counted_steps["steps"] == 0
    assert _folder_bytes(tmp_path / "cache") == stored
    # Same settings in an empty cache: the same pictures, byte for byte.
    other = dataclasses.replace(config, cache=str(tmp_path / "other"))
    _stage(other)
    assert _folder_bytes(tmp_path / "other") == stored
    # A setting that changes the pictures gets a cache of its own; speed-only settings do not.
    assert _stage(dataclasses.replace(config, featurevis=dataclasses.replace(config.featurevis, batch=8))).made == 0
    assert _stage(dataclasses.replace(config, featurevis=dataclasses.replace(config.featurevis, seed=1))).made == 96
    # Float32 is keyed as before `precision` existed; bfloat16 pictures are others.
    assert "precision" not in PictureCache(tmp_path, "w", config).key["picture"]
    bfloat16 = dataclasses.replace(config, featurevis=dataclasses.replace(config.featurevis, precision="bfloat16"))
    assert PictureCache(tmp_path, "w", bfloat16).folder != PictureCache(tmp_path, "w", config).folder


def test_parallel_jobs_make_the_same_kind_of_pictures(tmp_path):
    config = _small_config(tmp_path, jobs=2)
    result = _stage(config)
    assert result.processes == 2 and result.made == 96
    serial = _stage(dataclasses.replace(config, cache=str(tmp_path / "serial"),
                                        featurevis=dataclasses.replace(config.featurevis, jobs="1")))
    for unit in (0, 17, 47):
        a = np.asarray(Image.open(result.image("conv2d1", unit, 1)), dtype=int)
        b = np.asarray(Image.open(serial.image("conv2d1", unit, 1)), dtype=int)
        assert np.abs(a - b).max() <= 2  # one or two threads per process: the same picture up to rounding


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, counted_steps):
    config_path = write_config(tmp_path, layers=["conv2d1", "conv2d2"],
                               featurevis={"steps": 20, "batch": 8, "jobs": 1},
                               site={"output": str(tmp_path / "site")})
    finished = killed_part_way(config_path, tmp_path / "cache", 16)
    total = (48 + 96) * 2
    assert 16 <= finished < total, finished  # stopped part way
    assert not (tmp_path / "site").exists()
    config = load_config(config_path)
    resumed = _stage(config)
    assert resumed.reused == finished and resumed.made == total - finished
    jobs_left = (total - finished) // 8  # whole jobs of 8 ran; each layer and direction is a multiple of 8
    assert counted_steps["steps"] == 20 * jobs_left
    assert len(list((tmp_path / "cache").rglob("*.json"))) == total


def test_cache_key_follows_the_weights():
    model = load_model(AtlasConfig())
    before = weights_hash(model)
    with torch.no_grad():
        model.conv2d0.weight[0, 0, 0, 0] += 1e-6
    assert len(before) == 64 and weights_hash(model) != before


@pytest.mark.parametrize("shape, size", [((2, 24, 5, 6), 11), ((2, 24, 5, 6), 4), ((3, 9, 7), 5)])
def test_fused_response_norm_is_pytorchs_with_the_gradient_of_its_definition(shape, size):
    settings = {"alpha": 0.3, "beta": 0.75, "k": 2.0}
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours, theirs = fused_local_response_norm(x, size, **settings), F.local_response_norm(x, size, **settings)
    assert torch.equal(ours, theirs)  # the same arithmetic forward
    grad = torch.randn_like(ours)
    (mine,) = torch.autograd.grad(ours, x, grad)
    (reference,) = torch.autograd.grad(theirs, x, grad)  # autograd through PyTorch's definition
    assert torch.allclose(mine, reference, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: fused_local_response_norm(t, size, **settings), (x,))
    single = x.detach().float()  # float32, InceptionV1's own settings
    assert torch.equal(fused_local_response_norm(single, 11, 11e-4, 0.5, 2.0),
                       F.local_response_norm(single, 11, 11e-4, 0.5, 2.0))


def test_redirected_gradient_is_the_same_with_or_without_the_shortcut():
    x = torch.randn(4, 3, 5, 5)
    x[1] = -x[1].abs()  # image 1: every unit off, so its ordinary gradient is zero
    y, grad = x.clamp_min(0), torch.randn(4, 3, 5, 5)
    for inputs in ((grad, x, y), (grad[[0, 2, 3]], x[[0, 2, 3]], y[[0, 2, 3]])):  # some images off; none off
        with_shortcut = redirected_gradient(*inputs, shortcut=True)
        assert torch.equal(with_shortcut, redirected_gradient(*inputs, shortcut=False))
    redirected = redirected_gradient(grad, x, y, shortcut=False)
    assert torch.equal(redirected[0], torch.where(x[0] > 0, grad[0], 0.0))  # ordinary where alive
    assert torch.equal(redirected[1], torch.where(grad[1] < 0, grad[1], 0.0))  # only what raises image 1


def test_the_optimised_model_fuses_response_norms_and_keeps_its_values():
    torch.manual_seed(0)
    network, graph = trace_layers(InceptionV1().eval(), (3, 224, 224))  # two response norms before conv2d2
    model = model_for(network, graph, "mixed3a", 1)
    targets = [node.target for node in model.graph.nodes if node.op == "call_function"]
    assert targets.count(fused_local_response_norm) == 2 and F.local_response_norm not in targets
    images = torch.rand(2, 3, 224, 224)
    assert torch.equal(model(images)[0], network.truncated([graph.values["mixed3a"]])(images)[0])
