"""Expanded weights of every torchvision family against the gradient definition.

For each family (tests/zoo.py) a few adjacent pairs are checked, chosen by what they pass
through: a frozen gate or layer norm, a dense layer reading positions, and the first pair
of blocks. Every sampled output channel must match autograd through the linearised model
(generator.reference) within 1e-4 of the largest weight.
"""

import pytest
import torch

from generator import trace_layers
from generator.expanded import layer_weights
from tests import zoo
from tests.test_expanded import check_against_gradient

SAMPLED_CHANNELS = 6


def module_of(network, graph, layer: str) -> str:
    """The module whose output is the layer's value (hooks of the reference attach there)."""
    node = network.node(graph.values[layer])
    return node.target if node.op == "call_module" else layer


def sampled_pairs(graph, composed) -> list:
    kinds = {layer.name: layer.kind for layer in graph.layers}
    chosen = [w for w in composed.weights if w.frozen][:1] + [w for w in composed.weights if w.placed][:1]
    blocks = [w for w in composed.weights if w.src and kinds[w.src] == kinds[w.dst] != "conv"]
    readers = [w for w in composed.weights if sum(d == w.dst for _, d in graph.adjacent) > 1]
    chosen += [w for w in blocks[:1] + readers[-1:] + composed.weights[1:2] if w not in chosen]
    return chosen


@pytest.mark.parametrize("family", list(zoo.FAMILIES))
def test_expanded_weights_match_the_gradient(family):
    factory, size = zoo.FAMILIES[family]
    model = getattr(zoo, factory)().eval()
    shape = (3, size, size)
    network, graph = trace_layers(model, shape)
    composed = layer_weights(network, graph)
    pairs = sampled_pairs(graph, composed)
    assert pairs
    for w in pairs:
        every = max(1, len(w.kernel) // SAMPLED_CHANNELS)
        held = {layer.name: module_of(network, graph, layer.name) for layer in graph.layers
                if layer.name not in (w.src, w.dst)}  # the atlas counts paths through no other layer
        check_against_gradient(model, w.src, w.dst, shape, module_of(network, graph, w.src),
                               module_of(network, graph, w.dst), every, held)
    if family in ("MobileNet v3", "EfficientNet", "EfficientNet v2", "RegNet Y", "ConvNeXt"):
        assert any(w.frozen for w in pairs)  # gates or norms were frozen, and checked
    if family in ("AlexNet", "VGG"):
        assert any(w.placed for w in pairs)  # a dense layer over positions, checked


def test_an_input_transform_is_part_of_the_first_layer():
    """GoogLeNet with published weights rescales each colour channel (``transform_input``) and
    concatenates them: no layer of its own, and the first layer's kernel takes the scales in."""
    model = zoo.googlenet().eval()
    model.transform_input = True
    network, graph = trace_layers(model, (3, 64, 64))
    assert graph.layers[0].name == "conv1.conv" and "cat" not in [layer.name for layer in graph.layers]
    (first,) = [w for w in layer_weights(network, graph).weights if w.src is None]
    bn = model.conv1.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    channel_scales = torch.tensor([0.229, 0.224, 0.225]) / 0.5
    expected = model.conv1.conv.weight.detach() * scale[:, None, None, None] * channel_scales[None, :, None, None]
    torch.testing.assert_close(torch.from_numpy(first.kernel), expected)


def test_trained_onet_dense_weights_are_its_matrix_read_back_through_the_permute():
    """ONet flattens conv4's map permuted to (width, height, channels): each dense unit's map
    over conv4's positions is its row of weights put back in place, and matches the gradient."""
    model = zoo.onet().eval()
    network, graph = trace_layers(model, (3, 48, 48))
    (pair,) = [w for w in layer_weights(network, graph).weights if w.dst == "dense5"]
    expected = model.dense5.weight.detach().reshape(256, 3, 3, 128).permute(0, 3, 2, 1)  # [out, c, h, w]
    assert pair.src == "conv4" and pair.placed and pair.direct.all()
    torch.testing.assert_close(torch.from_numpy(pair.kernel), expected)
    check_against_gradient(model, "conv4", "dense5", (3, 48, 48), "prelu4", "dense5", every=32)
