"""The embedded default model: a narrow InceptionV1 (GoogLeNet) for 64 x 64 images.

The forward pass follows the InceptionV1 figure: a stem of a 7x7/2 convolution, max-pool,
1x1 convolution, 3x3 convolution and max-pool, then mixed blocks whose four branches
(1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3 max-pool -> 1x1 projection) are
concatenated in that order, then global average pooling and a linear classifier. Layer
names follow Lucid's InceptionV1 (conv2d0 ... mixed3b). There is no batch-norm and no
local response norm, so every weight in the file is the weight the network uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 64


class Mixed(nn.Module):
    """An Inception block: four parallel branches concatenated along channels."""

    def __init__(self, c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int):
        super().__init__()
        self.conv_1x1 = nn.Conv2d(c_in, c1, 1)
        self.conv_3x3_bottleneck = nn.Conv2d(c_in, c3r, 1)
        self.conv_3x3 = nn.Conv2d(c3r, c3, 3, padding=1)
        self.conv_5x5_bottleneck = nn.Conv2d(c_in, c5r, 1)
        self.conv_5x5 = nn.Conv2d(c5r, c5, 5, padding=2)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.conv_pool_reduce = nn.Conv2d(c_in, cp, 1)
        self.channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = F.relu(self.conv_1x1(x))
        b3 = F.relu(self.conv_3x3(F.relu(self.conv_3x3_bottleneck(x))))
        b5 = F.relu(self.conv_5x5(F.relu(self.conv_5x5_bottleneck(x))))
        bp = F.relu(self.conv_pool_reduce(self.pool(x)))
        return torch.cat([b1, b3, b5, bp], dim=1)


class NarrowInceptionV1(nn.Module):
    """InceptionV1's stem and two mixed blocks at a fraction of the width.

    ``classes``: the classifier's outputs, one per value of each attribute of
    :mod:`.procedural` (8 shapes, 8 hues, 8 grating orientations, 8 curve orientations).
    """

    def __init__(self, classes: int = 32):
        super().__init__()
        self.conv2d0 = nn.Conv2d(3, 48, 7, stride=2, padding=3)
        self.maxpool0 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2d1 = nn.Conv2d(48, 48, 1)
        self.conv2d2 = nn.Conv2d(48, 96, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.mixed3a = Mixed(96, 32, 48, 64, 8, 16, 16)
        self.mixed3b = Mixed(self.mixed3a.channels, 48, 64, 96, 16, 32, 32)
        self.logits = nn.Linear(self.mixed3b.channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool0(F.relu(self.conv2d0(x)))
        x = F.relu(self.conv2d2(F.relu(self.conv2d1(x))))
        x = self.mixed3b(self.mixed3a(self.maxpool1(x)))
        return self.logits(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
