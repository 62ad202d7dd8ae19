"""Every operation the atlas knows by name: its role in a layer and its linear twin.

The one registry the other stages read. The layer graph asks which operations are part
of a layer's value (activations, batch-norm), expanded weights ask for each operation's
nearest linear twin, the gradient reference swaps the same activations for the same twins,
and feature visualisation asks which operations are ReLUs. An operation is added here.

Operations are named as torch.fx records them: a module by its class, a function or a
tensor method by its name (``relu``, ``add``, ``view``).
"""

from __future__ import annotations

import operator

import torch
import torch.fx
from torch import nn

# -- roles -------------------------------------------------------------------------------------
WEIGHTED_MODULES = (nn.Conv2d, nn.Linear)

# Activations whose linear twin is the identity: ReLU-like functions, dropout, local response
# norm (no twin of its own: left out, as METHOD.md says), and no-ops.
IDENTITY_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.Hardswish,
    nn.Mish, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.LocalResponseNorm,
)
IDENTITY_FUNCTIONS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "gelu", "silu", "silu_", "elu", "celu", "selu",
    "hardswish", "hardswish_", "mish", "prelu", "dropout", "dropout2d", "alpha_dropout", "local_response_norm",
    "contiguous", "clone", "stochastic_depth",
})
# Squashing activations: as a layer's activation, the twin is their slope at zero.
SLOPE_AT_ZERO = {"sigmoid": 0.25, "tanh": 1.0, "hardsigmoid": 1 / 6, "softplus": 0.5, "hardtanh": 1.0,
                 "softsign": 1.0}
SQUASHING_MODULES = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Hardsigmoid: "hardsigmoid",
                     nn.Softplus: "softplus", nn.Hardtanh: "hardtanh", nn.Softsign: "softsign"}
RELU_FUNCTIONS = frozenset({torch.relu, torch.relu_, torch.nn.functional.relu})

CONCATENATIONS = frozenset({torch.cat, torch.concat})
SUMS = frozenset({operator.add, operator.iadd, torch.add, "add", "add_"})
DIFFERENCES = frozenset({operator.sub, operator.isub, torch.sub, "sub", "sub_"})
PRODUCTS = frozenset({"mul", "mul_", "imul"})
QUOTIENTS = frozenset({"truediv", "itruediv", "div", "div_"})
# Operations that only move elements: the twin is the same rearrangement.
SHAPE_FUNCTIONS = frozenset({"view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze",
                             "movedim", "t", "unflatten"})
SHAPE_MODULES = (nn.Flatten, nn.Unflatten)
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d)
ADAPTIVE_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def name_of(node: torch.fx.Node) -> str:
    """An operation's name: the module's target, or the function's or method's name."""
    if node.op == "call_module":
        return node.target
    return str(getattr(node.target, "__name__", node.target))


def is_batch_norm(module: nn.Module | None, name: str) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "batch_norm"


def identity_twin(module: nn.Module | None, name: str) -> bool:
    """An activation (or no-op) whose linear twin is the identity."""
    if module is not None:
        return isinstance(module, IDENTITY_MODULES)
    return name in IDENTITY_FUNCTIONS


def slope(module: nn.Module | None, name: str) -> float | None:
    """A squashing activation's slope at zero, or None for any other operation."""
    if module is not None:
        return next((SLOPE_AT_ZERO[n] for cls, n in SQUASHING_MODULES.items() if isinstance(module, cls)), None)
    return SLOPE_AT_ZERO.get(name)


def per_channel(module: nn.Module | None, name: str) -> bool:
    """Part of the value of the layer before it: an element-wise activation or batch-norm.
    A direct connection through these keeps the stored kernel as it is (up to a scale)."""
    return identity_twin(module, name) or slope(module, name) is not None or is_batch_norm(module, name)
