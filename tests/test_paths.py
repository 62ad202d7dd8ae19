"""Paths of expanded weights (generator/paths.py): they add up to the expanded weight, their
shares add up to one, and one path checked against the stored weights it is made of."""

import copy

import numpy as np
import torch

from generator import trace_layers
from generator.default_model import NarrowInceptionV1
from generator.expanded import layer_weights
from generator.paths import route_name, routes, split_paths
from generator.ranking import kernel_statistics, rank
from tests.toy_models import ResidualNet, randomise_batch_norm


def _split(model, shape, hops=1, top_k=6):
    network, graph = trace_layers(model.eval(), shape)
    weights = layer_weights(network, graph, hops).weights
    units = rank(graph, kernel_statistics(weights), top_k)
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
        assert abs(sum(path.share for path in split) - 1) < 1e-5
    # The shortcut alone: its 1x1 kernel times batch-norm's scale, at the middle of the 5x5 window.
    bn = model.block2.shortcut[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    stored = model.block2.shortcut[0].weight.detach().numpy()[:, :, 0, 0] * scale[:, None]
    (row, column), kernels = next(iter(pair.kernels.items()))
    middle = kernels.shape[-1] // 2
    assert kernels[1][middle, middle] == np.float32(kernels[1].sum())  # one weight, in the middle
    np.testing.assert_allclose(kernels[1][middle, middle], stored[row, column], rtol=1e-5)
    # The convolutions' path, found as what the shortcut leaves of the whole: the whole expanded
    # weight of the same model with its shortcut's weights set to zero.
    alone = copy.deepcopy(model)
    with torch.no_grad():
        alone.block2.shortcut[0].weight.zero_()
    network, graph = trace_layers(alone.eval(), (3, 16, 16))
    [convolutions] = [w for w in layer_weights(network, graph, 1).weights if (w.src, w.dst) == ("block", "block2")]
    for (row, column), kernels in pair.kernels.items():
        np.testing.assert_allclose(kernels[0], convolutions.kernel[row, column], atol=1e-6)


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
        assert abs(sum(path.share for path in split) - 1) < 1e-5


def test_routes_name_their_weighted_and_pooling_steps():
    network, graph = trace_layers(ResidualNet().eval(), (3, 16, 16))
    source, target = (network.node(graph.values[name]) for name in ("stem", "block"))
    names = [route_name(network, r) for r in routes(network, source, target, frozenset())]
    assert names == ["block.conv1 \u2192 block.conv2", "block.shortcut.0"]


def test_a_residual_atlas_carries_each_listed_connection_s_paths_in_its_data(tmp_path):
    """Inputs of block2 and outputs of block, in the unit data: the paths' kernels decode to the
    expanded weight's, and their shares add up to one."""
    import base64
    import json
    import zlib

    from generator.build import build_atlas
    from generator.config import load_config
    from tests.conftest import write_config

    config = write_config(tmp_path, model={"source": "tests.toy_models:residual_net"}, input={"size": 16},
                          featurevis={"enabled": False}, site={"output": str(tmp_path / "site")})
    build_atlas(load_config(config))

    def decoded(block, peaks):
        values = np.frombuffer(zlib.decompress(base64.b64decode(block["zlib"])), "i1").reshape(block["shape"]) / 127
        return values * np.array(peaks)[:, None, None]

    for layer, direction in (("block2", "inputs"), ("block", "outputs")):
        data = json.loads((tmp_path / "site" / "units" / layer / "3.json").read_text(encoding="utf-8"))
        [group] = [g for g in data[direction] if g.get("from", g.get("to")) in ("block", "block2")]
        kernels = decoded(group["kernels"], group["peak"])
        assert len(group["paths"]) == len(group["units"]) and all(group["paths"])
        for kernel, split in zip(kernels, group["paths"]):
            assert split["names"] == ["block2.conv1 \u2192 block2.conv2", "block2.shortcut.0"]
            assert abs(sum(split["shares"]) - 1) < 2e-3  # four digits each
            whole = decoded(split["kernels"], split["peaks"]).sum(axis=0)
            assert np.abs(whole - kernel).max() <= 0.01 * np.abs(kernel).max()
