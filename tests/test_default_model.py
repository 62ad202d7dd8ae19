"""The committed default model: really trained, accurate, with structured first-layer kernels."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from generator.default_model import INPUT_SIZE, WEIGHTS, NarrowInceptionV1
from generator.default_model.labels import LABELLED, probe_label
from generator.default_model.measure import (curve_units, dataset_responses, high_frequency_share, line_units,
                                             probe_tuning)
from generator.default_model.probes import PROBES, arcs, circular_distance, selective
from generator.default_model.procedural import ATTRIBUTES, CURVES, draw
from generator.default_model.train import CurveTuning, augment, evaluate, neighbour_correlation, perturbed
from generator.graph import trace_layers
from generator.loading import load_weights, read_checkpoint

LABELS = Path(__file__).parents[1] / "site_config" / "default.labels.yml"
CIRCUIT_ALIGNED = 0.75  # the target; the committed model: 95% (see the README)


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


def test_held_out_accuracy_is_at_least_95_percent(model):
    accuracy = evaluate(model, images=2048, seed=12345)  # a seed training never drew from
    for attribute in ATTRIBUTES:
        assert accuracy[attribute] >= 0.95, accuracy


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
    bins = torch.round(a.facing / (2 * math.pi / len(CURVES))).long() % len(CURVES)
    assert torch.equal(bins, a.labels["curve"])  # the facing the curve label bins


def test_the_world_labels_four_attributes():
    batch = draw(4, 64, torch.Generator().manual_seed(0))
    assert list(ATTRIBUTES) == ["shape", "hue", "orientation", "curve"] and len(CURVES) == 8
    assert all(int(batch.labels[name].max()) < len(values) for name, values in ATTRIBUTES.items())


def test_high_frequency_share_tells_noise_from_smooth_images():
    noise = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = torch.sin(math.pi * x)[None, None].expand(1, 3, -1, -1)
    assert 0.7 < float(high_frequency_share(noise).median()) < 0.9  # 1 - pi/16 of the area
    assert float(high_frequency_share(smooth)[0]) < 0.01


def test_probes_are_images_in_range():
    for make in PROBES.values():
        probe = make(64)
        assert probe.images.shape[1:] == (3, 64, 64)
        assert 0 <= float(probe.images.min()) and float(probe.images.max()) <= 1
        assert int(probe.value.max()) < len(probe.values)
    assert len(arcs().values) == 16


def test_selective_tuning_accepts_a_narrow_peak_only():
    narrow = torch.tensor([[0, 1, 4, 10, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0]])
    broad = torch.tensor([[6, 7, 8, 10, 8, 7, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6.0]])
    angle, ok = selective(torch.cat([narrow, broad]), 360.0, 45.0)
    assert ok.tolist() == [True, False] and float(angle[0]) == 67.5
    assert float(circular_distance(350.0, 10.0)) == 20.0


def test_perturbations_stay_in_the_ball_and_the_image_range():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    batch = draw(4, 64, torch.Generator().manual_seed(1))
    moved = augment(batch.images, torch.Generator().manual_seed(2))
    adversarial = perturbed(model, moved, batch.labels, 0.5, 2)
    assert (adversarial - moved).flatten(1).norm(dim=1).max() <= 0.5 + 1e-4
    assert 0 <= float(adversarial.min()) and float(adversarial.max()) <= 1


def test_curve_tuning_asks_each_chosen_unit_for_its_own_orientation():
    """The training loss behind the curve units: channel k of the first ``count`` is pulled,
    by its largest activation over positions after a ReLU, towards ``gain`` on a curve at its
    own orientation (k * 360 / count degrees), under a fifth of it 45 degrees away and
    nearly nothing facing the other way; other channels are not asked anything."""
    conv = torch.nn.Conv2d(3, 10, 3)
    tuner = CurveTuning(conv, count=4, gain=2.0, sharpness=6.0)
    images = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    facing = torch.tensor([0.0, 90.0, 180.0, 270.0, 45.0, 135.0]) * math.pi / 180
    out = conv(images)
    responses = torch.relu(out[:, :4]).amax((2, 3))
    target = torch.zeros(6, 4)
    for i, phi in enumerate(facing.tolist()):
        for k in range(4):
            target[i, k] = 2.0 * math.exp(6.0 * (math.cos(phi - k * math.pi / 2) - 1))
    assert torch.allclose(tuner.loss(facing), ((responses - target) ** 2).mean())
    assert target[0, 0] == 2.0 and target[4, 0] < 2.0 / 5 and target[2, 0] < 1e-4
    conv(images)
    tuner.loss(facing).backward()
    assert conv.weight.grad[4:].abs().max() == 0 and conv.weight.grad[:4].abs().max() > 0
    tuner.remove()
    conv(images[:1])
    assert tuner.seen is None


@pytest.fixture(scope="module")
def probed(model):
    """Per labelled layer and probe, each unit's tuning curve; per layer, each unit's largest
    activation on the dataset images; and the labels file's entries that a probe gave, by
    layer and unit."""
    network, graph = trace_layers(model, (3, INPUT_SIZE, INPUT_SIZE))
    units = yaml.safe_load(LABELS.read_text())["units"]
    given = {(layer, unit): entry for layer in LABELLED for unit, entry in units[layer].items()
             if " probe" in entry.get("note", "")}
    return probe_tuning(network, graph, LABELLED), dataset_responses(network, graph).peak, given


def _angle(label: str) -> float:
    return float(label.rsplit(" ", 1)[1].removesuffix("deg"))


def test_every_curve_label_passes_the_arc_probe_at_its_orientation(probed):
    """The Curve Detectors article's test: a unit labelled "curve facing A" answers arcs at
    16 orientations most at A, and above half its peak only within 45 degrees of A; arcs
    drive it, the best at half its largest activation on dataset images or more; the curve
    units of mixed3b face every eighth of the circle."""
    tuning, peak, given = probed
    found = {(c.layer, c.unit): c.angle for c in curve_units(tuning, peak, LABELLED)}
    curves = {key: _angle(entry["label"]) for key, entry in given.items() if entry["family"] == "curves"}
    assert len(curves) >= 60
    assert all(found.get(key) == angle for key, angle in curves.items()), \
        [(key, angle, found.get(key)) for key, angle in curves.items() if found.get(key) != angle]
    assert {int(angle // 45) for (layer, _), angle in curves.items() if layer == "mixed3b"} == set(range(8))


def test_every_other_probe_label_is_the_probe_value_the_unit_prefers(probed):
    """Lines: selective within 22.5 degrees at the labelled orientation, and answering lines
    at least as much as arcs. Colours, colour contrast, high-low frequency and gratings: the
    probe value the unit answers most is the one its label names."""
    tuning, peak, given = probed
    lines = {(u.layer, u.unit): u.angle for u in line_units(tuning, peak, LABELLED, curve_units(tuning, peak, LABELLED))}
    checked = set()
    for (layer, unit), entry in given.items():
        if entry["family"] == "lines":
            assert lines.get((layer, unit)) == _angle(entry["label"]), (layer, unit, entry)
        elif entry["family"] != "curves":
            probe = entry["note"].split(" probe")[0]
            assert probe_label(probe, tuning[layer][probe][unit]) == entry["label"], (layer, unit, entry)
        checked.add(entry["family"])
    assert checked == {"curves", "lines", "colours", "colour contrast", "high-low frequency", "gratings"}


def test_a_unit_that_answers_arcs_faintly_is_no_curve_unit():
    """Selective on arcs is not enough: a unit whose best arc gives a hundredth of what it
    gives the dataset images is tuned to something else, and is not called a curve unit."""
    tuned = torch.tensor([[4.0, 1.0, 0.5, 0.2, 0.1, 0.2, 0.5, 1.0]])  # selective, facing 0deg
    tuning = {"layer": {"curve": torch.cat([tuned, tuned / 100])}}
    peak = {"layer": torch.tensor([5.0, 5.0])}
    assert [(c.unit, c.angle) for c in curve_units(tuning, peak, ("layer",))] == [(0, 0.0)]
    assert curve_units(tuning, {"layer": torch.tensor([9.0, 0.05])}, ("layer",))[0].unit == 1


def _orientation_apart(unit_label: str, source_label: str) -> float:
    """Degrees between two labelled orientations: curve facings over 360; a line or grating
    against a curve as the curve's tangent at its middle (its facing + 90), over 180."""
    a, b = (float(re.search(r"([0-9.]+)deg", label).group(1)) for label in (unit_label, source_label))
    a_curve, b_curve = unit_label.startswith("curve"), source_label.startswith("curve")
    if a_curve and b_curve:
        return float(circular_distance(a, b, 360.0))
    return float(circular_distance(a + 90 * a_curve, b + 90 * b_curve, 180.0))


def test_the_worked_example_is_a_curve_unit_built_from_units_of_its_own_orientation(model):
    """How to read's worked example, named in the labels file: a curve unit of mixed3b whose
    3 strongest inputs from mixed3a (expanded weights, through the branches, by L2 norm)
    excite it and are labelled with its own orientation, within 22.5 degrees."""
    from generator.expanded import layer_weights

    data = yaml.safe_load(LABELS.read_text())
    example = data["example"]
    assert example["layer"] == "mixed3b"
    own = data["units"]["mixed3b"][example["unit"]]["label"]
    assert own.startswith("curve facing"), own
    network, graph = trace_layers(model, (3, INPUT_SIZE, INPUT_SIZE))
    (pair,) = [w for w in layer_weights(network, graph, hops=1).weights if (w.src, w.dst) == ("mixed3a", "mixed3b")]
    kernels = torch.from_numpy(pair.kernel[example["unit"]])  # [mixed3a, k, k]
    assert kernels.shape[-1] > 1  # a spatial kernel, not a 1x1 branch's dot
    strongest = kernels.flatten(1).norm(dim=1).argsort(descending=True)[:3].tolist()
    for unit in strongest:
        label = data["units"]["mixed3a"][unit]["label"]
        assert _orientation_apart(own, label) <= 22.5, (unit, label)
        assert float(kernels[unit].sum()) > 0, unit


def test_the_curve_units_of_mixed3b_read_from_curve_and_line_units_of_their_own_orientation(model):
    """The circuit the default atlas shows: for most curve units of mixed3b, the 3 strongest
    inputs (expanded weights, by L2 norm) among mixed3a's curve and line units lie within 45
    degrees of their own orientation (a line read as the tangent at an arc's middle)."""
    from generator.default_model.measure import circuit

    network, graph = trace_layers(model, (3, INPUT_SIZE, INPUT_SIZE))
    tuning = probe_tuning(network, graph, ("mixed3a", "mixed3b"))
    peak = dataset_responses(network, graph).peak
    curves = curve_units(tuning, peak, ("mixed3a", "mixed3b"))
    rows = circuit(network, graph, curves, line_units(tuning, peak, ("mixed3a", "mixed3b"), curves))
    assert len(rows) >= 8 and {int(row["angle"] // 45) for row in rows} == set(range(8))
    assert sum(row["aligned"] for row in rows) / len(rows) >= CIRCUIT_ALIGNED, \
        [row for row in rows if not row["aligned"]]
