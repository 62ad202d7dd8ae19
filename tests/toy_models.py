"""Small models the tests build atlases of; importable as ``tests.toy_models:NAME``."""

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, padding=2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.conv3 = nn.Conv2d(12, 6, 3, stride=2, padding=2, dilation=2, groups=3)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv3(F.relu(self.conv2(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class BasicBlock(nn.Module):
    """A ResNet block: two 3x3 convolutions with batch-norm, and a strided 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class ResidualNet(nn.Module):
    """A stem, two residual blocks (the first strided), a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(8)
        self.block = BasicBlock(8, 16, stride=2)
        self.block2 = BasicBlock(16, 16, stride=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.block2(self.block(x))
        return self.head(x.mean(dim=(2, 3)))


class Separable(nn.Module):
    """MobileNet-style depthwise-separable convolutions with batch-norm and ReLU6."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.dw1, self.dw1_bn = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.pw1, self.pw1_bn = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        self.dw2, self.dw2_bn = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), nn.BatchNorm2d(16)
        self.pw2, self.pw2_bn = nn.Conv2d(16, 12, 1), nn.BatchNorm2d(12)

    def forward(self, x):
        for conv, bn in ((self.stem, self.stem_bn), (self.dw1, self.dw1_bn), (self.pw1, self.pw1_bn),
                         (self.dw2, self.dw2_bn), (self.pw2, self.pw2_bn)):
            x = F.relu6(bn(conv(x)))
        return x


class DilatedGrouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=2, dilation=2, groups=4)
        self.conv3 = nn.Conv2d(12, 8, 3, stride=2, padding=3, dilation=3, groups=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.leaky_relu(self.conv1(x))
        x = F.gelu(self.conv3(F.max_pool2d(F.silu(self.conv2(x)), 3, stride=1, padding=1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Gated(nn.Module):
    """Squeeze-and-excitation between two layers: a gate, one sigmoid per channel."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.squeeze, self.gate = nn.Conv2d(4, 4, 1), nn.Sigmoid()

    def forward(self, x):
        y = self.conv1(x)
        return self.conv2(y * self.gate(self.squeeze(y.mean(dim=(2, 3), keepdim=True))))


class Absolute(nn.Module):
    """An absolute value between two layers: no linear twin."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.conv2(torch.abs(self.conv1(x)))


def randomise_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch-norm non-trivial statistics and affine weights, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


class EvilNames(nn.Module):
    """Module names that are markup and a path: they must stay data."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self._modules["<script>alert(1)</script>"] = nn.Conv2d(4, 5, 3, padding=1)
        self._modules["../../evil"] = nn.Conv2d(5, 3, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self._modules["<script>alert(1)</script>"](x))
        return self._modules["../../evil"](x)


class HostileNames(nn.Module):
    """A chain of convolutions whose names are markup, a path, 300 characters long, unicode,
    blank, and two that a file name cannot tell apart."""

    NAMES = ('<img src=x onerror="document.body.dataset.pwned=1">', "..", "a" * 300, "ünïcödé ✓", " ",
             "x/y", "x-y")

    def __init__(self):
        super().__init__()
        channels = [3, 4, 5, 4, 5, 4, 5, 3]
        for name, c_in, c_out in zip(self.NAMES, channels, channels[1:]):
            self._modules[name] = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x):
        for name in self.NAMES:
            x = F.relu(self._modules[name](x))
        return x


class Perceptron(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3 * 8 * 8, 10), nn.Linear(10, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(-x)


def small_cnn():
    return SmallCNN()


def residual_net():
    return ResidualNet()


def evil_names():
    return EvilNames()


def seeded_cnn():
    """:class:`SmallCNN` with the same weights at every call."""
    torch.manual_seed(0)
    return SmallCNN()


def hostile_names():
    torch.manual_seed(0)
    return HostileNames()


def _scaled(model: nn.Module, largest: float) -> nn.Module:
    """``model`` with every weight tensor scaled to a largest absolute value of ``largest``."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.div_(m.weight.abs().max()).mul_(largest)
    return model


def huge_weights():
    """Weights near float32's largest value (3.4e38): their squares, sums and products overflow it."""
    torch.manual_seed(0)
    return _scaled(SmallCNN(), 2e38)


class TwoChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


def two_channels():
    return TwoChannels()


def perceptron():
    return Perceptron()


def data_dependent():
    return DataDependent()


def not_a_module():
    return "a string"


def data_dependent_broken():
    raise RuntimeError("weights server unavailable")


def absolute():
    return Absolute()


# -- factories that misbehave (tests/test_hostile.py) ----------------------------------------
def exits():
    """A factory that ends the program instead of returning a model."""
    import sys

    sys.exit(0)


def changes_global_state():
    """A factory that turns off gradients, makes float64 the default and reseeds every generator."""
    import random

    import numpy as np

    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    with torch.device("cpu"):
        model = SmallCNN()
    return model.float()


def dies_in_workers():
    """:class:`SmallCNN` in the build's own process; in a worker process, a fatal signal."""
    import multiprocessing
    import os
    import signal

    if multiprocessing.parent_process() is not None:
        os.kill(os.getpid(), signal.SIGABRT)
    return seeded_cnn()


class Thin(nn.Module):
    """Reads one row of pixels (1 x 1000): kernels of 1 x 5 and 1 x 3."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, (1, 5), padding=(0, 2))
        self.conv2 = nn.Conv2d(4, 4, (1, 3), padding=(0, 1))

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


def thin():
    torch.manual_seed(0)
    return Thin()


class OneDimensional(nn.Module):
    """A pitch tracker's shape: one channel of 1024 x 1 samples, kernels of 256 x 1 and 32 x 1."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, (256, 1), stride=(4, 1), padding=(126, 0))
        self.conv2 = nn.Conv2d(8, 6, (32, 1), padding=(16, 0))
        self.classifier = nn.Linear(6 * 16, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (4, 1))
        x = F.max_pool2d(F.relu(self.conv2(x)), (4, 1))
        return self.classifier(torch.flatten(x[:, :, :16], 1))


def one_dimensional():
    torch.manual_seed(0)
    return OneDimensional()


class GroupNormed(nn.Module):
    """Three convolutions; the second's output group-normed (4 groups of 3 channels)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 12, 3, padding=1)
        self.norm = nn.GroupNorm(4, 12)
        self.conv3 = nn.Conv2d(12, 5, 3, padding=1)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 2.0)
            self.norm.bias.uniform_(-1.0, 1.0)

    def forward(self, x):
        return self.conv3(F.relu(self.norm(self.conv2(F.relu(self.conv1(x))))))


def group_normed():
    torch.manual_seed(0)
    return GroupNormed()


class Exported(nn.Module):
    """A small network written the way converters and exporters write one: arithmetic on
    constants ((x - 0.5) / 0.25), a hard swish as x * relu6(x + 3) / 6, a squeeze-and-excitation
    gate as x * hardsigmoid(...), a residual sum, squeeze and unsqueeze, and a classifier
    after global pooling and flatten. Exported to ONNX by the tests."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.project = nn.Conv2d(16, 8, 1)
        self.head = nn.Conv2d(8, 12, 1)
        self.classifier = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem((x - 0.5) / 0.25)
        x = x * F.relu6(x + 3) / 6  # hard swish, as TensorFlow exports it
        y = F.relu(self.depthwise(F.relu(self.expand(x))))
        pooled = y.mean(dim=(2, 3))[:, :, None, None]
        gate = F.hardsigmoid(self.excite(F.relu(self.squeeze(pooled))))
        x = x + self.project(y * gate)
        x = F.relu(self.head(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1).squeeze(3).unsqueeze(3), 1))


def exported():
    torch.manual_seed(4)
    model = Exported()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.bias.normal_(0, 0.1)
    return model.eval()
