"""Measured effects (generator/linearity.py) against what they must be: the expanded weights
where nothing is non-linear, zero where a ReLU never opens, and an independent autograd
recomputation of the mean gradient where the network is non-linear."""

import numpy as np
import torch
from torch import nn

from generator import trace_layers
from generator.expanded import layer_weights
from generator.linearity import MARK, Pair, compared, measured_effect


def _pairs(model, shape, hops=1):
    network, graph = trace_layers(model.eval(), shape)
    return network, graph, {(w.src, w.dst): w for w in layer_weights(network, graph, hops).weights}


class Linear(nn.Module):
    """Two convolutions with only linear operations between them (an average pool, a stride)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2)

    def forward(self, x):
        return self.conv2(self.pool(self.conv1(x)))


def test_without_a_nonlinearity_the_measured_effect_is_the_expanded_weight():
    torch.manual_seed(0)
    network, graph, pairs = _pairs(Linear(), (3, 32, 32))
    w = pairs[("conv1", "conv2")]
    effect = measured_effect(network, graph, Pair.of(w), torch.randn(6, 3, 32, 32), batch=4)
    assert effect.shape == w.kernel.shape
    cosine, ratio = compared(effect, w.kernel)
    np.testing.assert_allclose(cosine, 1, atol=1e-5)
    np.testing.assert_allclose(ratio, 1, atol=1e-5)
    np.testing.assert_allclose(effect, w.kernel, atol=1e-6)


class Closed(nn.Module):
    """conv1 -> hidden -> a ReLU behind a bias so negative that it never opens -> conv2 (conv1 to
    conv2 is two layers apart)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.hidden = nn.Conv2d(4, 4, 1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        with torch.no_grad():
            self.hidden.bias.fill_(-1e4)

    def forward(self, x):
        return self.conv2(torch.relu(self.hidden(self.conv1(x))))


def test_a_relu_that_never_opens_measures_zero_and_is_marked():
    torch.manual_seed(1)
    network, graph, pairs = _pairs(Closed(), (3, 12, 12), hops=2)
    w = pairs[("conv1", "conv2")]
    assert np.abs(w.kernel).max() > 0  # the linear view sees a connection
    effect = measured_effect(network, graph, Pair.of(w), torch.rand(4, 3, 12, 12))
    assert np.abs(effect).max() == 0
    cosine, ratio = compared(effect, w.kernel)
    assert (cosine < MARK).all() and (ratio == 0).all()


class Nonlinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        return self.conv2(self.pool(torch.relu(self.conv1(x))))


def test_the_measured_effect_is_the_mean_gradient_at_a_unit_inside_the_map():
    """Independent reference: for one unit at the middle position, autograd of the model with
    respect to conv1's value (after its ReLU, as the atlas shows a layer), averaged over the
    images, cropped to the kernel's window. Only the middle position's window fits the map."""
    torch.manual_seed(2)
    model = Nonlinear().eval()
    network, graph, pairs = _pairs(model, (3, 16, 16))
    w = pairs[("conv1", "conv2")]
    images = torch.rand(5, 3, 16, 16)
    effect = measured_effect(network, graph, Pair.of(w), images, batch=5)  # one batch: every unit at the middle
    a1 = torch.relu(model.conv1(images)).detach().requires_grad_(True)
    out = model.conv2(model.pool(a1))
    y, x = out.shape[2] // 2, out.shape[3] // 2
    (sy, sx), (oy, ox) = w.stride, w.offset
    kh, kw = w.kernel.shape[2:]
    for unit in range(3):
        grad = torch.autograd.grad(out[:, unit, y, x].sum(), a1, retain_graph=True)[0].mean(0)
        window = grad[:, y * sy + oy : y * sy + oy + kh, x * sx + ox : x * sx + ox + kw]
        np.testing.assert_allclose(effect[unit], window.numpy(), atol=1e-6)
    cosine, ratio = compared(effect, w.kernel)
    assert np.abs(ratio - 1).max() > 0.1  # a max-pool passes its gradient whole, where its twin averages


class Dense(nn.Module):
    """A convolution, a global pool and two dense layers with nothing non-linear between them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 4)

    def forward(self, x):
        return self.fc2(self.fc1(self.conv(x).mean(dim=(2, 3))))


def test_between_dense_layers_the_measured_effect_is_the_weight_matrix():
    torch.manual_seed(3)
    network, graph, pairs = _pairs(Dense(), (3, 8, 8))
    for pair in (("conv", "fc1"), ("fc1", "fc2")):
        w = pairs[pair]
        effect = measured_effect(network, graph, Pair.of(w), torch.randn(4, 3, 8, 8))
        np.testing.assert_allclose(effect, w.kernel, atol=1e-5 * np.abs(w.kernel).max())
