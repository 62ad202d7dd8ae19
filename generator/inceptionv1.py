"""InceptionV1 as the Circuits articles used it: Lucid's "inception5h" GoogLeNet.

The Caffe/TensorFlow variant of GoogLeNet (Szegedy et al., 2015) that Lucid ships, with
no batch-norm, local response norm after the first max-pool and after conv2d2, and
TensorFlow's "SAME" paddings written out for a 224 x 224 input. Layer names are Lucid's:
conv2d0, conv2d1, conv2d2, mixed3a ... mixed5b, softmax2_pre_activation. Inside a mixed
block the branches are ``1x1``, ``3x3_bottleneck`` -> ``3x3``, ``5x5_bottleneck`` -> ``5x5``
and ``pool`` -> ``pool_reduce``, concatenated in the order 1x1, 3x3, 5x5, pool.

The weights are the widely used PyTorch conversion of Lucid's graph (``inception5h.pth``,
a flat state dict with keys such as ``mixed3a_3x3_pre_relu_conv.weight``);
:func:`from_conversion_keys` maps its keys onto this module. The model expects RGB in
[0, 1] mapped to [-117, 138] (``x * 255 - 117``): mean 117/255, std 1/255 per channel.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .files import atomic_write

CONVERSION_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"
INPUT_SIZE = 224
MEAN = (117 / 255,) * 3
STD = (1 / 255,) * 3
CLASSES = 1008

# block: input width, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool reduce
MIXED = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
# TensorFlow's LRN(depth_radius=5, bias=2, alpha=1e-4, beta=0.5) in PyTorch's terms.
LRN = {"size": 11, "alpha": 11e-4, "beta": 0.5, "k": 2.0}


def _max_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """3x3 max-pool with TensorFlow's SAME padding (padding never wins a max)."""
    pad = (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1)
    return F.max_pool2d(F.pad(x, pad, value=float("-inf")), 3, stride)


class Mixed(nn.Module):
    """An Inception block: four parallel branches concatenated along channels."""

    def __init__(self, c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int):
        super().__init__()
        for name, conv in (("1x1", nn.Conv2d(c_in, c1, 1)), ("3x3_bottleneck", nn.Conv2d(c_in, c3r, 1)),
                           ("3x3", nn.Conv2d(c3r, c3, 3)), ("5x5_bottleneck", nn.Conv2d(c_in, c5r, 1)),
                           ("5x5", nn.Conv2d(c5r, c5, 5)), ("pool_reduce", nn.Conv2d(c_in, cp, 1))):
            self.add_module(name, conv)  # Lucid's names, which are not Python identifiers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self._modules
        b1 = F.relu(conv["1x1"](x))
        b3 = F.relu(conv["3x3"](F.pad(F.relu(conv["3x3_bottleneck"](x)), (1, 1, 1, 1))))
        b5 = F.relu(conv["5x5"](F.pad(F.relu(conv["5x5_bottleneck"](x)), (2, 2, 2, 2))))
        bp = F.relu(conv["pool_reduce"](_max_pool(x, stride=1)))
        return torch.cat([b1, b3, b5, bp], dim=1)


class InceptionV1(nn.Module):
    def __init__(self, classes: int = CLASSES):
        super().__init__()
        self.conv2d0 = nn.Conv2d(3, 64, 7, stride=2)
        self.conv2d1 = nn.Conv2d(64, 64, 1)
        self.conv2d2 = nn.Conv2d(64, 192, 3)
        for name, widths in MIXED.items():
            self.add_module(name, Mixed(*widths))
        self.softmax2_pre_activation = nn.Linear(1024, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2d0(F.pad(x, (2, 3, 2, 3))))
        x = F.local_response_norm(_max_pool(x, stride=2), **LRN)
        x = F.relu(self.conv2d1(x))
        x = F.relu(self.conv2d2(F.pad(x, (1, 1, 1, 1))))
        x = _max_pool(F.local_response_norm(x, **LRN), stride=2)
        x = self.mixed3b(self.mixed3a(x))
        x = _max_pool(x, stride=2)
        x = self.mixed4e(self.mixed4d(self.mixed4c(self.mixed4b(self.mixed4a(x)))))
        x = _max_pool(x, stride=2)
        x = self.mixed5b(self.mixed5a(x))
        return self.softmax2_pre_activation(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def from_conversion_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The conversion's flat keys (``mixed3a_3x3_pre_relu_conv.weight``) as this module's."""
    renamed = {}
    for key, value in state.items():
        stem, _, kind = key.rpartition(".")
        suffix = next((s for s in ("_pre_relu_conv", "_matmul") if stem.endswith(s)), None)
        if suffix is None:
            renamed[key] = value  # left for load_weights to report as unexpected
            continue
        stem = stem[: -len(suffix)]
        layer, _, branch = stem.partition("_") if stem.startswith("mixed") else (stem, "", "")
        renamed[f"{layer}.{branch}.{kind}" if branch else f"{layer}.{kind}"] = value
    return renamed


def to_conversion_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This module's keys in the conversion's format (for checkpoints written by tests and benches)."""
    result = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "softmax2_pre_activation":
            result[f"softmax2_pre_activation_matmul.{parts[1]}"] = value
        elif len(parts) == 3:
            result[f"{parts[0]}_{parts[1]}_pre_relu_conv.{parts[2]}"] = value
        else:
            result[f"{parts[0]}_pre_relu_conv.{parts[1]}"] = value
    return result


def write_random_checkpoint(path: str | Path, seed: int = 0) -> None:
    """A checkpoint in the conversion's format with random weights (offline tests, benchmarks),
    written whole or not at all."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = to_conversion_keys(InceptionV1().state_dict())
    data = io.BytesIO()
    torch.save(state, data)
    atomic_write(Path(path), data.getvalue())



def random_atlas_config(folder: Path, *changes: tuple[str, str], extra: str = "") -> Path:
    """``site_config/inceptionv1.yml`` in ``folder``, reading random weights written there and
    building into ``folder/site``, with ``changes`` (pattern, replacement) and ``extra`` lines:
    the InceptionV1 atlas of the benchmarks, offline."""
    write_random_checkpoint(folder / "inception5h.pth")
    text = (Path(__file__).resolve().parent.parent / "site_config" / "inceptionv1.yml").read_text()
    for pattern, replacement in (("checkpoint: .*", f"checkpoint: {folder / 'inception5h.pth'}"),
                                 ("output: .*", f"output: {folder / 'site'}"), *changes):
        text = re.sub(pattern, replacement, text)
    (folder / "atlas.yml").write_text(text + extra)
    return folder / "atlas.yml"
