import numpy as np
import pytest
import torch

from generator.graph import trace_layers
from generator.ranking import kernel_statistics, rank, strongest
from generator.expanded import layer_weights
from tests.toy_models import SmallCNN


@pytest.fixture(scope="module")
def ranked():
    model = SmallCNN()
    network, graph = trace_layers(model, (3, 16, 16))
    composed = layer_weights(network, graph).weights
    return rank(graph, kernel_statistics(composed), top_k=5), {w.dst: w.kernel for w in composed}


def test_inputs_are_the_strongest_by_l2_brute_force(ranked):
    units, weights = ranked
    kernel = weights["conv2"]  # [12, 8, 6, 6]: 3x3 over a 2x2 max-pool
    for o in range(12):
        norms = [float(np.sqrt((kernel[o, i].astype(np.float64) ** 2).sum())) for i in range(8)]
        expected = sorted(range(8), key=lambda i: -norms[i])[:5]
        unit = units[("conv2", o)]
        assert [link.unit for link in unit.inputs] == expected
        assert [link.l2 for link in unit.inputs] == pytest.approx([norms[i] for i in expected])
        for link in unit.inputs:
            assert link.sign == int(np.sign(kernel[o, link.unit].sum()))
            assert link.scale == pytest.approx(np.abs(kernel[o]).max())  # over all 8 inputs, not the 5 shown
        assert unit.input_count == 8
        assert unit.excitatory + unit.inhibitory == 8


def test_outputs_are_the_largest_shares_brute_force(ranked):
    """An output's share: its kernel's L2 norm over the L2 norm of all inputs of the unit it feeds."""
    units, weights = ranked
    kernel = weights["conv2"].astype(np.float64)
    total = np.sqrt((kernel**2).sum(axis=(1, 2, 3)))  # per conv2 unit, all its inputs
    for i in range(8):
        shares = {o: float(np.sqrt((kernel[o, i] ** 2).sum()) / total[o]) for o in range(12)}
        expected = sorted(shares, key=lambda o: -shares[o])[:5]
        unit = units[("conv1", i)]
        assert [(link.layer, link.unit) for link in unit.outputs] == [("conv2", o) for o in expected]
        assert [link.share for link in unit.outputs] == pytest.approx([shares[o] for o in expected])
        for link in unit.outputs:
            assert link.scale == pytest.approx(np.abs(kernel[link.unit]).max())  # the output unit's scale
            assert np.array_equal(link.kernel, weights["conv2"][link.unit, i])


def test_first_layer_keeps_its_colour_kernel(ranked):
    units, weights = ranked
    unit = units[("conv1", 3)]
    assert np.array_equal(unit.rgb_kernel, weights["conv1"][3])
    assert unit.inputs == [] and len(unit.outputs) == 5
    assert unit.scale == pytest.approx(np.abs(weights["conv1"][3]).max())


def test_kernels_of_zero_are_no_connection():
    """A depthwise convolution joins each unit to one input: its other kernels are not listed or counted."""
    class Depthwise(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 6, 3), torch.nn.Conv2d(6, 6, 3, groups=6)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    network, graph = trace_layers(Depthwise(), (3, 16, 16))
    units = rank(graph, kernel_statistics(layer_weights(network, graph).weights), top_k=5)
    for u in range(6):
        inputs, outputs = units[("b", u)].inputs, units[("a", u)].outputs
        assert [(k.layer, k.unit) for k in inputs] == [("a", u)] and units[("b", u)].input_count == 1
        assert [(k.layer, k.unit) for k in outputs] == [("b", u)] and units[("a", u)].output_count == 1


@pytest.mark.parametrize("k", [1, 5, 12, 40])
def test_top_k_is_a_stable_sort_cut_short(k):
    """The partial selection picks what a full stable sort picks, ties (many here) by index."""
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 6, size=(30, 40)).astype(np.float64)  # few values: ties everywhere
    scores[3] = 0.0
    expected = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(strongest(scores, k), expected)
    np.testing.assert_array_equal(strongest(scores, k, block=100), expected)  # a few rows at a time
    smooth = rng.random((7, 40))
    np.testing.assert_array_equal(strongest(smooth, k), np.argsort(-smooth, axis=-1, kind="stable")[:, :k])
    for other in (scores.astype(">f8"), scores[:, ::-1], scores.astype(np.float32)):  # as torch cannot read it, and float32
        np.testing.assert_array_equal(strongest(other, k), np.argsort(-other, axis=-1, kind="stable")[:, :k])


def test_kernel_peak_is_the_largest_absolute_weight_of_each_kernel(monkeypatch):
    """Taken a block of rows at a time (here 3 kernels of 5x5 a block), it is each kernel's
    largest absolute weight, a negative one where that is larger."""
    import generator.ranking as ranking

    monkeypatch.setattr(ranking, "PEAK_BLOCK", 3 * 4 * 25)
    kernel = np.random.default_rng(0).normal(size=(7, 4, 5, 5)).astype(np.float32)
    kernel[2, 1, 3, 3] = -50.0
    peak = ranking.kernel_peak(kernel)
    assert peak.dtype == np.float32 and peak.shape == (7, 4)
    np.testing.assert_array_equal(peak, np.abs(kernel).max(axis=(2, 3)))
    assert peak[2, 1] == 50.0
