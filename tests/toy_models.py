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


class ResidualNet(nn.Module):
    """A stem, one residual block with batch-norm and a strided 1x1 shortcut, a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(8)
        self.block = nn.ModuleDict({
            "conv1": nn.Conv2d(8, 16, 3, stride=2, padding=1), "bn1": nn.BatchNorm2d(16),
            "conv2": nn.Conv2d(16, 16, 3, padding=1), "bn2": nn.BatchNorm2d(16),
            "shortcut": nn.Conv2d(8, 16, 1, stride=2),
        })
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        b = self.block
        y = b["bn2"](b["conv2"](F.relu(b["bn1"](b["conv1"](x)))))
        x = F.relu(y + b["shortcut"](x))
        return self.head(x.mean(dim=(2, 3)))


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


def perceptron():
    return Perceptron()


def data_dependent():
    return DataDependent()


def not_a_module():
    return "a string"
