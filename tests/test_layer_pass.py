"""The layer pass: weights read one target layer at a time, only the kernels a page can show
kept. Everything the build makes of the kept kernels equals what it makes of all of them, and
one layer's kernels are let go before the next layer's are composed."""

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import generator.layer_pass as layer_pass
from generator.config import RankingConfig
from generator.default_model import INPUT_SIZE
from generator.default_model.measure import load as load_default_model
from generator.expanded import KeptKernels, layer_weights
from generator.factors import SHOWN_INPUTS, group_factors, unit_factors
from generator.graph import trace_layers
from generator.linearity import compared
from generator.paths import split_paths
from generator.ranking import kernel_statistics, rank
from tests.toy_models import ResidualNet, SmallCNN, randomise_batch_norm


class TwoSources(nn.Module):
    """``c`` reads two layers at once (``a`` and ``b``, concatenated): factors and inputs over both."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 5, 3, padding=1)
        self.c = nn.Conv2d(11, 7, 3, padding=1)

    def forward(self, x):
        a = torch.relu(self.a(x))
        return self.c(torch.cat([a, torch.relu(self.b(a))], dim=1))


def _link_facts(link):
    return (link.layer, link.unit, link.l2, link.sign, link.peak, link.scale, link.direct, link.row, link.column,
            link.share, link.kernel.tolist())


def _facts(units):
    return {key: ([_link_facts(k) for k in w.inputs], [_link_facts(k) for k in w.outputs],
                  [(f.layer, f.hops, [_link_facts(k) for k in f.links]) for f in w.further], w.input_count,
                  w.output_count, w.excitatory, w.inhibitory, w.input_l2, w.scale,
                  None if w.rgb_kernel is None else w.rgb_kernel.tolist()) for key, w in units.items()}


def _split(facts, numbers):
    """``facts`` with every float moved to ``numbers``: norms summed over a branch's own window
    (stacked kernels) and over the whole window differ in the last bits."""
    if isinstance(facts, float):
        numbers.append(facts)
        return "float"
    if isinstance(facts, dict):
        return {key: _split(value, numbers) for key, value in facts.items()}
    if isinstance(facts, (list, tuple)):
        return [_split(value, numbers) for value in facts]
    return facts


def assert_same_facts(found, expected):
    numbers, expected_numbers = [], []
    assert _split(found, numbers) == _split(expected, expected_numbers)
    np.testing.assert_allclose(numbers, expected_numbers, rtol=1e-12, atol=0)


CASES = {
    "small cnn": (lambda: SmallCNN(), (3, 16, 16), 1),
    "residual, two hops": (lambda: randomise_batch_norm(ResidualNet()), (3, 16, 16), 2),
    "two sources": (lambda: TwoSources(), (3, 12, 12), 1),
    "default model": (lambda: load_default_model(), (3, INPUT_SIZE, INPUT_SIZE), 1),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("top_k", [3, 50])
def test_what_is_made_of_kept_kernels_equals_what_is_made_of_all(case, top_k):
    make, shape, hops = CASES[case]
    torch.manual_seed(0)
    network, graph = trace_layers(make().eval(), shape)
    whole = layer_weights(network, graph, hops).weights
    layer = next(w.dst for w in whole if w.src is not None and w.hops == 1)
    members = list(range(min(4, next(w for w in whole if w.dst == layer).kernel.shape[0])))
    read = layer_pass.read_weights(network, graph, RankingConfig(top_k=top_k, hops=hops), None,
                                   [(layer, "planted", members)])
    assert [(w.src, w.dst, w.hops) for w in read.weights] == [(w.src, w.dst, w.hops) for w in whole]
    kept = [w for w in read.weights if w.src is not None]
    assert kept and all(isinstance(w.kernel, KeptKernels) for w in kept)
    if top_k == 3 and case == "default model":  # a real saving: few kernels of every pair are kept
        assert sum(w.kernel.nbytes for w in kept) < 0.25 * sum(w.kernel.nbytes for w in whole if w.src is not None)

    expected = rank(graph, kernel_statistics(whole), top_k)
    found = rank(graph, read.statistics, top_k)
    assert_same_facts(_facts(found), _facts(expected))

    factors = unit_factors(whole)
    assert read.factors.keys() == factors.keys()
    for name, f in factors.items():
        assert read.factors[name].channels is None  # let go: the pages read their summary
        for field in ("spatial", "explained", "shares", "strength", "strongest", "coefficients", "dominant_factor"):
            np.testing.assert_array_equal(getattr(read.factors[name], field), getattr(f, field))
        # every factor's shown inputs can be drawn from the kept kernels
        pair = {w.src: w for w in read.weights if w.dst == name and w.hops == 1}
        for unit in range(len(f.channels)):
            for c in range(3):
                for source, other, _, _ in f.top_inputs(unit, c, SHOWN_INPUTS):
                    np.testing.assert_array_equal(pair[source].kernel[unit, other],
                                                  next(w for w in whole if w.src == source and w.dst == name
                                                       and w.hops == 1).kernel[unit, other])
    (group,) = read.groups
    reference = group_factors(whole, layer, "planted", members)
    np.testing.assert_allclose(group.directions, reference.directions)

    paths, reference_paths = (split_paths(network, graph, w, units, None)
                              for w, units in ((read.weights, found), (whole, expected)))
    assert paths.keys() == reference_paths.keys()
    for key, pair in paths.items():
        assert pair.kernels.keys() == reference_paths[key].kernels.keys()


def test_kept_kernels_compare_with_effects_as_the_whole_kernels_do():
    rng = np.random.default_rng(0)
    kernel, effect = rng.normal(size=(6, 5, 3, 3)).astype(np.float32), rng.normal(size=(6, 5, 3, 3)).astype(np.float32)
    rows, columns = np.array([0, 2, 5, 5]), np.array([1, 4, 0, 3])
    kept = KeptKernels(kernel, rows, columns)
    cosine, ratio = compared(effect, kept)
    whole_cosine, whole_ratio = compared(effect, kernel)
    np.testing.assert_allclose(cosine[rows, columns], whole_cosine[rows, columns], rtol=1e-6)
    np.testing.assert_allclose(ratio[rows, columns], whole_ratio[rows, columns], rtol=1e-6)
    np.testing.assert_array_equal(kept[rows, columns], kernel[rows, columns])
    np.testing.assert_array_equal(kept[2, 4], kernel[2, 4])
    with pytest.raises(KeyError):
        kept[1, 1]


def test_one_layer_is_let_go_before_the_next_is_composed(monkeypatch):
    """When a target layer's weights start to be composed, every kernel of the targets before
    it is gone (but the kept copies): the pass holds one layer's weights at a time. (A first
    layer's colour kernels, on the image's channels, are kept whole.)"""
    import generator.expanded as expanded

    compose = expanded._pair_weights
    earlier: list[tuple[str, weakref.ref]] = []
    alive_at_start = {}

    def watched(network, graph, frozen, src, dst, *rest):
        if dst not in alive_at_start:
            gc.collect()
            alive_at_start[dst] = [name for name, ref in earlier if name != dst and ref() is not None]
        made = compose(network, graph, frozen, src, dst, *rest)
        if made is not None and src is not None:
            earlier.append((dst, weakref.ref(made.kernel)))
        return made

    monkeypatch.setattr(expanded, "_pair_weights", watched)
    network, graph = trace_layers(load_default_model(), (3, INPUT_SIZE, INPUT_SIZE))
    read = layer_pass.read_weights(network, graph, RankingConfig(), None, [])
    assert list(alive_at_start) == [layer.name for layer in graph.layers]
    assert alive_at_start == {layer.name: [] for layer in graph.layers}
    assert len(earlier) == len(graph.layers) - 1 and read.statistics
