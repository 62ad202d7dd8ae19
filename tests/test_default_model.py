"""The committed default model: really trained, accurate, with structured first-layer kernels."""

import json

import pytest
import torch
from safetensors import safe_open

from generator.default_model import WEIGHTS, NarrowInceptionV1
from generator.default_model.procedural import ATTRIBUTES, draw
from generator.default_model.train import evaluate, neighbour_correlation
from generator.loading import load_weights, read_checkpoint


@pytest.fixture(scope="module")
def model():
    net = NarrowInceptionV1(classes=sum(len(v) for v in ATTRIBUTES.values()))
    load_weights(net, read_checkpoint(WEIGHTS), str(WEIGHTS))
    return net.eval()


def test_checkpoint_is_small_safetensors_with_its_accuracy():
    assert WEIGHTS.stat().st_size <= 5 * 1024 * 1024
    with safe_open(str(WEIGHTS), "pt") as f:
        metadata = f.metadata()
    assert set(json.loads(metadata["accuracy"])) == {*ATTRIBUTES, "all"}


def test_held_out_accuracy_is_at_least_90_percent(model):
    accuracy = evaluate(model, images=2048, seed=12345)  # a seed training never drew from
    for attribute in ATTRIBUTES:
        assert accuracy[attribute] >= 0.90, accuracy


def test_first_layer_kernels_are_structured_not_noise(model):
    smoothness = neighbour_correlation(model.conv2d0.weight.detach())
    assert smoothness.median() >= 0.5
    assert (smoothness >= 0.5).float().mean() >= 0.75


def test_neighbour_correlation_tells_noise_from_structure():
    noise = torch.randn(200, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    assert abs(float(neighbour_correlation(noise).median())) < 0.15
    y, x = torch.meshgrid(torch.linspace(-1, 1, 7), torch.linspace(-1, 1, 7), indexing="ij")
    edge = torch.stack([torch.tanh(3 * x), -torch.tanh(3 * x), torch.exp(-(x**2 + y**2))])[None]
    assert float(neighbour_correlation(edge)[0]) > 0.8


def test_procedural_images_are_reproducible_and_labelled():
    a = draw(8, 64, torch.Generator().manual_seed(7))
    b = draw(8, 64, torch.Generator().manual_seed(7))
    assert torch.equal(a.images, b.images)
    assert a.images.shape == (8, 3, 64, 64) and 0 <= a.images.min() and a.images.max() <= 1
    for name, values in ATTRIBUTES.items():
        assert a.labels[name].shape == (8,) and int(a.labels[name].max()) < len(values)
