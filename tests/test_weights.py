"""Direct weights against the gradient definition: d output unit / d input, at one position."""

import torch
from torch import nn

from generator.graph import trace_layers
from generator.weights import dense_kernel, direct_weights
from tests.toy_models import ResidualNet, SmallCNN


def gradient_kernel(fn, in_channels: int, size: int, out_unit: int, extent: int, stride: int, padding: int):
    """The window of input weights one output unit sees, by autograd through ``fn``."""
    x = torch.zeros(1, in_channels, size, size, requires_grad=True)
    y = fn(x)
    centre = y.shape[-1] // 2
    y[0, out_unit, centre, centre].backward()
    top = centre * stride - padding
    return x.grad[0, :, top : top + extent, top : top + extent]


def test_grouped_dilated_strided_conv_matches_the_gradient():
    conv = SmallCNN().conv3  # 12 -> 6 channels, groups 3, dilation 2, stride 2, padding 2
    dense = dense_kernel(conv)
    assert dense.shape == (6, 12, 5, 5)
    for o in range(6):
        reference = gradient_kernel(conv, 12, 16, o, extent=5, stride=2, padding=2)
        torch.testing.assert_close(dense[o], reference, rtol=1e-5, atol=1e-7)
    assert dense[0, 4:].abs().sum() == 0  # unit 0 belongs to group 0: inputs 0-3 only


def test_batch_norm_is_folded_into_the_kernel():
    model = ResidualNet().eval()
    with torch.no_grad():
        model.stem_bn.running_var.uniform_(0.5, 3)
        model.stem_bn.weight.uniform_(-2, 2)
    graph = trace_layers(model, (3, 16, 16))
    stem = next(w for w in direct_weights(model, graph) if w.connection.dst == "stem")
    linear_part = lambda x: model.stem_bn(model.stem(x)) - model.stem_bn(model.stem(torch.zeros_like(x)))  # noqa: E731
    for o in range(8):
        reference = gradient_kernel(linear_part, 3, 9, o, extent=3, stride=1, padding=1)
        torch.testing.assert_close(torch.from_numpy(stem.kernel[o]), reference, rtol=1e-5, atol=1e-7)


def test_linear_layer_is_a_one_by_one_kernel():
    model = SmallCNN()
    graph = trace_layers(model, (3, 16, 16))
    fc = next(w for w in direct_weights(model, graph) if w.connection.dst == "fc")
    assert fc.kernel.shape == (5, 6, 1, 1)
    assert torch.equal(torch.from_numpy(fc.kernel[:, :, 0, 0]), model.fc.weight.detach())


def test_plain_conv_is_its_weight():
    conv = nn.Conv2d(4, 3, 3)
    assert torch.equal(dense_kernel(conv), conv.weight.detach())
