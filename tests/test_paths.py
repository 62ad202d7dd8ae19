"""Paths of expanded weights (generator/paths.py): they add up to the expanded weight, their
shares add up to one, and one path checked against the stored weights it is made of."""

import numpy as np
import torch

from generator import trace_layers
from generator.default_model import NarrowInceptionV1
from generator.expanded import layer_weights
from generator.paths import route_name, routes, split_paths
from generator.ranking import rank
from tests.toy_models import ResidualNet, randomise_batch_norm


def _split(model, shape, hops=1, top_k=6):
    network, graph = trace_layers(model.eval(), shape)
    weights = layer_weights(network, graph, hops).weights
    units = rank(graph, weights, top_k)
    return network, graph, {(w.src, w.dst, w.hops): w for w in weights}, units, split_paths(network, graph, weights,
                                                                                              units, None)


def test_a_residual_connection_splits_into_its_convolutions_and_its_shortcut():
    torch.manual_seed(0)
    model = randomise_batch_norm(ResidualNet())
    network, graph, weights, units, paths = _split(model, (3, 16, 16))
    pair = paths[("block", "block2", 1)]
    assert pair.names == ["block2.conv1 \u2192 block2.conv2", "block2.shortcut.0"]
    w = weights[("block", "block2", 1)]
    listed = {(k.row, k.column) for o in range(16) for k in units[("block2", o)].inputs + units[("block", o)].outputs
              if k.weights is w}
    assert set(pair.kernels) == listed  # every listed connection, inputs and outputs
    for (row, column), kernels in pair.kernels.items():
        np.testing.assert_allclose(kernels.sum(axis=0), w.kernel[row, column], atol=1e-6)
        split = pair.of(row, column)
        assert abs(sum(share for _, share, _ in split) - 1) < 1e-5
    # The shortcut alone: its 1x1 kernel times batch-norm's scale, at the middle of the 5x5 window.
    bn = model.block2.shortcut[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    stored = model.block2.shortcut[0].weight.detach().numpy()[:, :, 0, 0] * scale[:, None]
    (row, column), kernels = next(iter(pair.kernels.items()))
    middle = kernels.shape[-1] // 2
    assert kernels[1][middle, middle] == np.float32(kernels[1].sum())  # one weight, in the middle
    np.testing.assert_allclose(kernels[1][middle, middle], stored[row, column], rtol=1e-5)


def test_a_mixed_unit_two_layers_up_reads_through_each_branch_of_the_block_between():
    torch.manual_seed(1)
    network, graph, weights, units, paths = _split(NarrowInceptionV1(), (3, 64, 64), hops=2)
    assert ("mixed3a", "mixed3b", 1) not in paths  # a mixed unit reads the block before through its own branch
    pair = paths[("conv2d2", "mixed3b", 2)]
    assert len(pair.names) == 4 * 4  # mixed3a's four branches, into each of mixed3b's
    assert sum("mixed3a.pool" in name for name in pair.names) == 4
    w = weights[("conv2d2", "mixed3b", 2)]
    for (row, column), kernels in list(pair.kernels.items())[:50]:
        np.testing.assert_allclose(kernels.sum(axis=0), w.kernel[row, column], atol=1e-6)
        split = pair.of(row, column)
        assert len(split) == 4  # the unit's own branch, after each of mixed3a's
        assert abs(sum(share for _, share, _ in split) - 1) < 1e-5


def test_routes_name_their_weighted_and_pooling_steps():
    network, graph = trace_layers(ResidualNet().eval(), (3, 16, 16))
    source, target = (network.node(graph.values[name]) for name in ("stem", "block"))
    names = [route_name(network, r) for r in routes(network, source, target, frozenset())]
    assert names == ["block.conv1 \u2192 block.conv2", "block.shortcut.0"]
