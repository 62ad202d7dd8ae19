"""Expanded weights against the gradient definition (generator.reference), model by model.

For each pair of layers, the composed kernel must equal, within 1e-4 relative error, the
window of d dst[o, centre] / d src taken by autograd through the linearised network, and
that gradient must be zero outside the window.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from generator import AtlasError, trace_layers
from generator.expanded import (StackedKernels, composed_by_target, expanded_weights, freeze, layer_weights, linear_map,
                                per_kernel)
from generator.ranking import kernel_norm, kernel_peak, kernel_statistics
from generator.images import reference_images
from generator.inceptionv1 import InceptionV1
from generator.reference import gradient_weights, window_of
from tests.toy_models import Absolute, DilatedGrouped, Gated, ResidualNet, Separable, SmallCNN, randomise_batch_norm


def check_against_gradient(model, src, dst, input_shape, src_module=None, dst_module=None, every=1, held=None):
    """Our composed map against the gradient reference; gates and norms frozen on the same
    noise images, measured independently by each side. ``held``: layer -> module of the
    layers whose values are held fixed (paths through them do not count)."""
    network, graph = trace_layers(model, input_shape)
    images = reference_images(input_shape)
    held = held or {}
    with torch.no_grad():
        m = linear_map(network, graph, src, dst, freeze(network, images, "noise"), tuple(held))
    channels = list(range(0, m.kernel.shape[0], every))
    reference = gradient_weights(model, src_module or src, dst_module or dst, input_shape, channels, images,
                                 tuple(held.values()))
    ours = m.kernel[channels]
    if m.placed:  # a dense layer: its map over every source position
        assert float((reference - ours).abs().max() / ours.abs().max()) < 1e-4
        return m
    if not m.spatial:  # after global pooling: the response to a unit increase at every position
        total = reference.sum(dim=(2, 3)) if reference.dim() == 4 else reference  # a non-spatial source as it is
        torch.testing.assert_close(ours[:, :, 0, 0], total, rtol=1e-4, atol=1e-4 * ours.abs().max())
        return m
    node = network.node(graph.values[dst]) if dst in graph.values else next(
        n for n in network.graph.nodes if n.op == "call_module" and n.target == dst)
    window = window_of(reference, tuple(m.kernel.shape), m.stride, m.offset, network.values[node].shape[2:])
    assert window.shape == ours.shape  # the window lies inside the map
    scale = ours.abs().max()
    assert float((window - ours).abs().max() / scale) < 1e-4
    outside = reference.clone()
    window_of(outside, tuple(m.kernel.shape), m.stride, m.offset, network.values[node].shape[2:]).zero_()
    assert float(outside.abs().max() / scale) < 1e-6  # the window holds every weight
    return m


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return InceptionV1().eval()


@pytest.mark.parametrize("src, dst, extent", [
    ("mixed3a", "mixed3b", 5), ("conv2d2", "mixed3b", 19), ("mixed4a", "mixed4b", 5), ("conv2d2", "mixed3a", 11),
    ("conv2d0", "mixed3a", 27),  # taps apart (after a stride-2 pool) through a later pool
])
def test_inceptionv1_matches_the_gradient(inception, src, dst, extent):
    m = check_against_gradient(inception, src, dst, (3, 224, 224), every=23)
    assert m.kernel.shape[2:] == (extent, extent)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(2, 2), nn.Identity()])
def test_taps_apart_pass_through_a_later_pool(pool):
    """A 3x3 convolution after a stride-2 pool keeps its taps undilated until the map is
    settled; a pool after it must keep them that far apart."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.down = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2, 2)
            self.b, self.pool, self.c = nn.Conv2d(4, 5, 3, padding=1), pool, nn.Conv2d(5, 6, 1)

        def forward(self, x):
            return self.c(self.pool(self.b(torch.relu(self.down(torch.relu(self.a(x)))))))

    torch.manual_seed(0)
    check_against_gradient(Net().eval(), "a", "c", (3, 32, 32))


def test_inceptionv1_branches_share_one_centred_window(inception):
    m = linear_map(*trace_layers(inception, (3, 224, 224)), "mixed3a", "mixed3b")
    assert m.offset == (-2, -2) and m.stride == (1, 1)
    kernel = m.kernel
    one, three, five = kernel[:128], kernel[128:320], kernel[320:416]
    ring = torch.ones(5, 5, dtype=torch.bool)
    ring[1:4, 1:4] = False
    assert three[:, :, ring].abs().max() == 0 and three[:, :, 1:4, 1:4].abs().max() > 0  # 3x3 in a 5x5 crop
    assert five[:, :, ring].abs().max() > 0
    centre_only = torch.ones(5, 5, dtype=torch.bool)
    centre_only[2, 2] = False
    assert one[:, :, centre_only].abs().max() == 0  # the 1x1 branch is its kernel, at the centre


def test_classifier_weights_are_per_channel(inception):
    check_against_gradient(inception, "mixed5b", "softmax2_pre_activation", (3, 224, 224), every=97)
    weights = expanded_weights(inception, "mixed5b", "softmax2_pre_activation", (3, 224, 224))
    assert weights.shape == (1008, 1024)
    torch.testing.assert_close(weights, inception.softmax2_pre_activation.weight.detach())


def test_residual_network_with_batch_norm_and_strided_shortcut():
    model = randomise_batch_norm(ResidualNet())
    check_against_gradient(model, "stem", "block", (3, 16, 16), src_module="stem_bn")
    check_against_gradient(model, "block", "block2", (3, 16, 16))
    check_against_gradient(model, "stem", "block2", (3, 16, 16), src_module="stem_bn")
    check_against_gradient(model, "block2", "head", (3, 16, 16))


def test_depthwise_separable_network():
    model = randomise_batch_norm(Separable())
    check_against_gradient(model, "stem", "pw2", (3, 32, 32), src_module="stem_bn", dst_module="pw2_bn")
    check_against_gradient(model, "dw1", "dw2", (3, 32, 32), src_module="dw1_bn", dst_module="dw2_bn")


def test_dilated_and_grouped_convolutions():
    model = DilatedGrouped().eval()
    m = check_against_gradient(model, "conv1", "conv3", (3, 32, 32))
    assert m.kernel.shape[2:] == (13, 13)  # 3x3 at dilation 3 over a 3x3 max-pool over 3x3 at dilation 2
    check_against_gradient(model, "conv3", "fc", (3, 32, 32))  # global pooling right after: no border effects


def test_first_layer_and_direct_marks():
    model = SmallCNN()
    weights = {(w.src, w.dst): w for w in layer_weights(*trace_layers(model, (3, 16, 16))).weights}
    torch.testing.assert_close(torch.from_numpy(weights[(None, "conv1")].kernel), model.conv1.weight.detach())
    assert weights[(None, "conv1")].direct.all() and weights[("conv2", "conv3")].direct.all()
    assert not weights[("conv1", "conv2")].direct.any()  # through a max-pool: expanded


def test_further_hops_are_listed():
    pairs = {(w.src, w.dst, w.hops) for w in layer_weights(*trace_layers(SmallCNN(), (3, 16, 16)), hops=2).weights}
    assert ("conv1", "conv3", 2) in pairs and ("conv2", "fc", 2) in pairs
    assert not any(src is None for src, _, hops in pairs if hops == 2)


def test_operations_without_a_linear_twin_are_named_and_their_pairs_skipped():
    with pytest.raises(AtlasError, match=r"`abs`.*no linear twin"):
        expanded_weights(Absolute(), "conv1", "conv2", (3, 12, 12))
    composed = layer_weights(*trace_layers(Absolute(), (3, 12, 12)))
    assert [(w.src, w.dst) for w in composed.weights] == [(None, "conv1")]
    (skipped,) = composed.skipped
    assert (skipped.source, skipped.target) == ("conv1", "conv2") and "`abs`" in skipped.reason
    assert str(skipped).startswith("conv1 -> conv2: ")


def test_a_gate_is_frozen_at_its_mean_and_marked():
    model = Gated().eval()
    m = check_against_gradient(model, "conv1", "conv2", (3, 12, 12))
    images = reference_images((3, 12, 12))
    gate = torch.sigmoid(model.squeeze(model.conv1(images).mean(dim=(2, 3), keepdim=True))).mean(dim=0).reshape(-1)
    torch.testing.assert_close(m.kernel, model.conv2.weight.detach() * gate[None, :, None, None])
    (pair,) = [w for w in layer_weights(*trace_layers(model, (3, 12, 12))).weights if w.dst == "conv2"]
    assert pair.frozen == ("gate `gate` frozen at its mean over 16 uniform-noise images",)


def test_unknown_layers_and_wrong_direction():
    with pytest.raises(AtlasError, match="Unknown layer `conv7`"):
        expanded_weights(SmallCNN(), "conv7", "conv2", (3, 16, 16))
    with pytest.raises(AtlasError, match="does not read"):
        expanded_weights(SmallCNN(), "conv3", "conv1", (3, 16, 16))


class Arithmetic(torch.nn.Module):
    """Sums, differences and constants that must keep their signs and multiplicities."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.a(x)
        z = (1 - y) + (y + y) * 0.5 + torch.cat([y, y], 1)[:, 4:] / 4  # = y * (-1 + 1 + 0.25)
        return self.b(z)


class Split(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(4, 5, 1)

    def forward(self, x):
        left, right = torch.chunk(self.a(x), 2, dim=1)
        return self.b(right)


class Flattened(torch.nn.Module):
    """A VGG-style head: positions flattened into a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class Gate(torch.nn.Module):
    """A sigmoid right after a convolution is that layer's own output, not a path between layers."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.b(torch.sigmoid(self.a(x)))


class ConvHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.head = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 5, 1)

    def forward(self, x):
        return self.head(torch.nn.functional.adaptive_avg_pool2d(self.a(x), 1))


def test_signs_multiplicities_and_channel_slices():
    model = Arithmetic()
    w = expanded_weights(model, "a", "b", (3, 8, 8))
    torch.testing.assert_close(w, model.b.weight.detach() * 0.25)
    model = Split()
    w = expanded_weights(model, "a", "b", (3, 8, 8))
    expected = torch.zeros(5, 8, 1, 1)
    expected[:, 4:] = model.b.weight.detach()
    torch.testing.assert_close(w, expected)


def test_a_divisor_that_depends_on_the_layer_is_refused():
    class Divide(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.b(2 / self.a(x))

    with pytest.raises(AtlasError, match="truediv.*no linear twin"):
        expanded_weights(Divide(), "a", "b", (3, 8, 8))


def test_a_dense_layer_reading_flattened_positions_gets_a_map_per_input_channel():
    model = Flattened()
    weights = {(w.src, w.dst): w for w in layer_weights(*trace_layers(model, (3, 8, 8))).weights}
    dense = weights[("conv", "fc")]
    assert dense.placed and dense.kernel.shape == (3, 4, 8, 8)  # per output, per channel, an 8 x 8 map
    torch.testing.assert_close(torch.from_numpy(dense.kernel), model.fc.weight.detach().reshape(3, 4, 8, 8))
    check_against_gradient(model, "conv", "fc", (3, 8, 8))


def test_output_activations_belong_to_their_layer_and_heads_after_pooling_are_matrices():
    model = Gate()
    torch.testing.assert_close(expanded_weights(model, "a", "b", (3, 8, 8)), model.b.weight.detach())
    model = ConvHead()
    assert expanded_weights(model, "a", "head", (3, 8, 8)).shape == (5, 4)


class Squashed(torch.nn.Module):
    """Tanh and sigmoid as activations: part of their layers, taken at their slope at zero."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 5, 3), torch.nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.c(torch.sigmoid(self.b(torch.nn.functional.max_pool2d(torch.tanh(self.a(x)), 2))))


def test_squashing_activations_are_part_of_their_layers():
    model = Squashed()
    network, graph = trace_layers(model, (3, 16, 16))
    assert [layer.name for layer in graph.layers] == ["a", "b", "c"]
    # b's value is after its sigmoid, whose slope at zero is 1/4; the reference stops at b's convolution
    ours = linear_map(network, graph, "a", "b")
    reference = gradient_weights(model, "a", "b", (3, 16, 16))
    window = window_of(reference, tuple(ours.kernel.shape), ours.stride, ours.offset, (5, 5))
    torch.testing.assert_close(ours.kernel, window / 4, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(expanded_weights(model, "b", "c", (3, 16, 16)), model.c.weight.detach())


def test_maps_over_the_memory_budget_are_skipped_and_the_rest_composed_in_slices():
    from generator.default_model import NarrowInceptionV1

    network, graph = trace_layers(NarrowInceptionV1(), (3, 64, 64))
    whole = {(w.src, w.dst): w for w in layer_weights(network, graph).weights}
    # held as a build holds them: a mixed block's kernels in its branches' parts
    sizes = {(w.src, w.dst): w.kernel.nbytes for _, ws, _ in composed_by_target(network, graph) for w in ws}
    assert sizes[("mixed3a", "mixed3b")] < whole[("mixed3a", "mixed3b")].kernel.nbytes
    limited = layer_weights(network, graph, memory_mb=2)
    kept = {(w.src, w.dst): w for w in limited.weights}
    assert set(kept) == {pair for pair, size in sizes.items() if size <= 2 * 2**20} != set(sizes)
    for pair, w in kept.items():  # composed a few source channels at a time: the same numbers
        np.testing.assert_array_equal(w.kernel, whole[pair].kernel)
    assert len(limited.skipped) == len(sizes) - len(kept)
    assert all("more than `ranking.memory_mb` (2 MB)" in s.reason for s in limited.skipped)


class Transposed(torch.nn.Module):
    """A stride-1 transposed convolution between two layers: a convolution by its flipped kernel."""

    def __init__(self):
        super().__init__()
        self.a, self.up = torch.nn.Conv2d(3, 4, 3), torch.nn.ConvTranspose2d(4, 5, 3, padding=0)
        self.b = torch.nn.Conv2d(5, 2, 3)

    def forward(self, x):
        return self.b(torch.relu(self.up(torch.relu(self.a(x)))))


def test_a_stride_one_transposed_convolution_is_composed():
    check_against_gradient(Transposed().eval(), "a", "b", (3, 16, 16))


def test_group_norm_is_one_registry_entry_checked_by_the_gradient_reference():
    """Group norm's twin: its statistics frozen over reference images, each channel scaled by its
    weight over its group's deviation, the same deviation for every channel of a group. Like
    batch-norm, it is part of the value of the layer it follows (conv2)."""
    from tests.toy_models import group_normed

    model = group_normed().eval()
    m = check_against_gradient(model, "conv1", "conv2", (3, 12, 12), dst_module="norm")
    images = reference_images((3, 12, 12))
    with torch.no_grad():
        grouped = model.conv2(torch.relu(model.conv1(images))).reshape(len(images), 4, -1)
    deviation = torch.sqrt(grouped.var(dim=2, unbiased=False) + model.norm.eps).mean(dim=0)  # one per group
    factors = model.norm.weight.detach() / deviation.repeat_interleave(3)
    torch.testing.assert_close(m.kernel, model.conv2.weight.detach() * factors[:, None, None, None])
    check_against_gradient(model, "conv2", "conv3", (3, 12, 12), src_module="norm")  # after the norm: conv3
    network, graph = trace_layers(model, (3, 12, 12))
    pairs = {w.dst: w for w in layer_weights(network, graph).weights}
    assert pairs["conv2"].frozen == ("group norm deviation `norm` frozen at its mean over 16 uniform-noise images",)
    assert pairs["conv2"].direct.all()  # one convolution and a per-channel norm: the stored kernel, scaled


def test_the_identity_s_columns_are_picked_from_the_weight_and_anything_else_multiplied():
    """The first operation after the source layer reads the identity map: its product is the
    weight's columns, the same as the general product, for a slice, a permutation or a repeat of it."""
    from generator import linear_maps as lm

    torch.manual_seed(0)
    weight = torch.randn(7, 5, 3, 3)
    for m in (lm.identity(5), lm.identity(5, slice(1, 4)), lm.LinearMap(torch.eye(5)[[2, 0, 4, 1, 3]][:, :, None, None]),
              lm.LinearMap(torch.eye(5)[:, [0, 0, 1]][:, :, None, None])):
        assert lm._picked_inputs(m.kernel) is not None
        product = torch.einsum("oiyx,is->osyx", weight, m.kernel[:, :, 0, 0])
        assert torch.equal(lm.conv(m, weight, 1, 1, 1, 1).kernel, product)
        assert torch.equal(lm.mixed(lm.pooled_globally(m), weight[:, :, 0, 0]).kernel, product[:, :, :1, :1])
    for kernel in (2 * torch.eye(5), torch.eye(5) + 0.1, torch.ones(5, 1)):
        m = lm.LinearMap(kernel[:, :, None, None])
        assert lm._picked_inputs(m.kernel) is None
        product = torch.einsum("oiyx,is->osyx", weight, kernel)
        torch.testing.assert_close(lm.conv(m, weight, 1, 1, 1, 1).kernel, product)


@pytest.mark.parametrize("taps, dilation, boxes", [
    ((3, 3), (2, 2), [((3, 3), (1, 1))]),  # InceptionV1's 3x3 branch after its stride-2 pool
    ((5, 4), (2, 3), [((3, 2), (1, 2)), ((2, 3), (2, 1))]),  # unequal axes, two pools
    ((1, 1), (1, 1), [((3, 3), (1, 1)), ((3, 3), (2, 2))]),  # a pool projection after a strided pool
    ((11, 11), (1, 1), [((2, 2), (1, 1))]),  # more taps than one matrix takes: axis by axis
    ((3, 3), (4, 1), []),  # taps apart, no pool
])
def test_spread_kernels_are_dilated_taps_filtered_by_each_box(taps, dilation, boxes):
    """``spread`` against its definition: the taps placed ``dilation`` pixels apart among zeros,
    then each pool's box filter applied by a full convolution (torch's conv2d)."""
    from generator import linear_maps as lm

    torch.manual_seed(0)
    kernel = torch.randn(6, 5, *taps, dtype=torch.float64)
    expected = kernel.new_zeros(6, 5, (taps[0] - 1) * dilation[0] + 1, (taps[1] - 1) * dilation[1] + 1)
    expected[:, :, :: dilation[0], :: dilation[1]] = kernel
    for (kh, kw), (sy, sx) in boxes:
        box = torch.full((1, 1, kh, kw), 1 / (kh * kw), dtype=torch.float64)
        pad = ((kh - 1) * sy, (kw - 1) * sx)
        filtered = torch.nn.functional.conv2d(expected.reshape(-1, 1, *expected.shape[2:]), box, padding=pad,
                                              dilation=(sy, sx))
        expected = filtered.reshape(6, 5, *filtered.shape[2:])
    torch.testing.assert_close(lm.spread(kernel, dilation, tuple(boxes)), expected, rtol=1e-12, atol=1e-12)
    # the same through a map: a transposed product's view (taps outermost) spread as it lies
    transposed = kernel.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    settled = lm.settled(lm.LinearMap(transposed, dilation=dilation, boxes=tuple(boxes)))
    torch.testing.assert_close(settled.kernel, expected, rtol=1e-12, atol=1e-12)
    assert settled.dilation == (1, 1) and settled.boxes == ()


def test_stacked_kernels_read_as_the_whole_array_does():
    """A mixed block's weights held as its branches' parts (each over the window it reaches)
    read, by rows or by kernels, as the whole padded array; the memory budget counts the parts."""
    from generator.default_model import NarrowInceptionV1

    torch.manual_seed(0)
    network, graph = trace_layers(NarrowInceptionV1(), (3, 64, 64))
    (stacked,) = [w for _, ws, _ in composed_by_target(network, graph) for w in ws if w.dst == "mixed3b"]
    assert isinstance(stacked.kernel, StackedKernels) and len(stacked.kernel.parts) == 4
    whole = linear_map(network, graph, "mixed3a", "mixed3b").kernel.numpy()
    assert stacked.kernel.shape == whole.shape and stacked.kernel.nbytes < whole.nbytes
    kernel = stacked.kernel
    np.testing.assert_array_equal(np.asarray(kernel), whole)
    for rows in (5, slice(40, 60), slice(None), np.array([150, 3, 47, 48, 200]), np.arange(44, 52)):
        np.testing.assert_array_equal(kernel[rows], whole[rows])
    rows, columns = np.array([0, 60, 60, 207, 130]), np.array([5, 0, 127, 64, 3])
    np.testing.assert_array_equal(kernel[rows, columns], whole[rows, columns])
    np.testing.assert_array_equal(kernel[60, 7], whole[60, 7])
    np.testing.assert_array_equal(kernel[rows[:, None], columns[None, :]], whole[rows[:, None], columns[None, :]])
    np.testing.assert_allclose(kernel_norm(kernel), kernel_norm(whole), rtol=1e-12)
    np.testing.assert_array_equal(per_kernel(kernel, kernel_peak, np.float32), kernel_peak(whole))


class PooledHead(torch.nn.Module):
    """VGG's head in small: two convolutions, a 2x2 max-pool, a flatten, two dense layers."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 6, 3, padding=1)
        self.fc1, self.fc2 = torch.nn.Linear(6 * 4 * 4, 5), torch.nn.Linear(5, 3)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.mark.parametrize("src, dst", [("conv2", "fc1"), ("conv1", "fc1"), ("conv2", "fc2")])
def test_dense_layers_after_a_pool_against_the_gradient(src, dst):
    """A dense layer's map over positions, spread back through the pool channel by channel
    (conv2), through a convolution (conv1), and on through a second dense layer (fc2)."""
    torch.manual_seed(0)
    m = check_against_gradient(PooledHead().eval(), src, dst, (3, 8, 8))
    assert m.placed and tuple(m.kernel.shape[2:]) == (8, 8)


def test_placed_kernels_are_held_as_the_weight_and_read_as_the_whole_array_does(monkeypatch):
    """A dense layer's weights over positions are held as its weight and spread when read, a
    block of rows at a time: by rows or by kernels, they read as the whole array."""
    from generator.expanded import PlacedKernels

    torch.manual_seed(0)
    network, graph = trace_layers(PooledHead().eval(), (3, 8, 8))
    monkeypatch.setattr(PlacedKernels, "BLOCK", 2 * 6 * 8 * 8)  # two rows a block
    pairs = {(w.src, w.dst): w for _, ws, _ in composed_by_target(network, graph, hops=2) for w in ws}
    for src, dst in (("conv2", "fc1"), ("conv1", "fc1"), ("conv2", "fc2")):
        kernel = pairs[(src, dst)].kernel
        whole = linear_map(network, graph, src, dst).kernel.numpy()
        assert isinstance(kernel, PlacedKernels) and kernel.shape == whole.shape, (src, dst)
        if (src, dst) == ("conv2", "fc1"):
            assert kernel.nbytes < whole.nbytes  # the weight, 4 positions for each it spreads to
        np.testing.assert_allclose(np.asarray(kernel), whole, rtol=1e-6, atol=1e-7)
        n = len(whole)
        for rows in (n - 1, slice(1, n), slice(None), np.array([n - 1, 0, 2, 2]), np.arange(1, n)):
            np.testing.assert_allclose(kernel[rows], whole[rows], rtol=1e-6, atol=1e-7)
        rows, columns = np.array([0, 4, 4, 2, 1]) % n, np.array([5, 0, 3, 1, 2]) % whole.shape[1]
        np.testing.assert_allclose(kernel[rows, columns], whole[rows, columns], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(kernel[rows[:, None], columns[None, :]], whole[rows[:, None], columns[None, :]],
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(kernel_norm(kernel), kernel_norm(whole), rtol=1e-6)
        np.testing.assert_allclose(per_kernel(kernel, kernel_peak, np.float32), kernel_peak(whole), rtol=1e-6)
        # the statistics, read in one pass of blocks, are those of the whole array
        (held,), (full,) = (kernel_statistics([replace(pairs[(src, dst)], kernel=k)]) for k in (kernel, whole))
        np.testing.assert_allclose(held.l2, full.l2, rtol=1e-6)
        np.testing.assert_allclose(held.peak, full.peak, rtol=1e-6)
        np.testing.assert_array_equal(held.sign, full.sign)


def test_held_kernels_refuse_an_index_the_whole_array_would_refuse():
    """Stacked and placed kernels read by (row, column) count negative indices from the end, and an
    index out of range is an IndexError, not whatever memory held."""
    torch.manual_seed(0)
    network, graph = trace_layers(PooledHead().eval(), (3, 8, 8))
    pairs = {(w.src, w.dst): w for _, ws, _ in composed_by_target(network, graph) for w in ws}
    kernel = pairs[("conv2", "fc1")].kernel
    whole = np.asarray(kernel)
    np.testing.assert_array_equal(kernel[-1, -2], whole[-1, -2])
    np.testing.assert_array_equal(kernel[np.array([-1, 0]), 3], whole[np.array([-1, 0]), 3])
    for index in ((len(whole), 0), (0, whole.shape[1]), (np.array([0, 99]), 1), (1, slice(None))):
        with pytest.raises(IndexError):
            kernel[index]
