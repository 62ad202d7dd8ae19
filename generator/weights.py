"""Direct weights: the kernel of every direct connection, as the layer values see it.

A convolution's kernel is read from its module; grouped convolutions are spread to the
full ``[out, in, kh, kw]`` with zeros, dilated ones over their true extent; a linear map
is a ``1 x 1`` kernel. Eval-mode
batch-norm on either side of the module is folded in, since it only rescales channels
(its shift does not enter a weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import AtlasError
from .graph import Connection, LayerGraph


@dataclass(frozen=True)
class DirectWeights:
    """``kernel[o, i]`` joins unit ``connection.start + o`` of ``dst`` to unit ``i`` of ``src``."""

    connection: Connection
    kernel: np.ndarray  # float32 [dst units, src units, kh, kw]


def _bn_scale(module: nn.Module) -> torch.Tensor:
    scale = torch.ones(module.num_features) if module.weight is None else module.weight.detach()
    return scale / torch.sqrt(module.running_var + module.eps)


def dense_kernel(module: nn.Module) -> torch.Tensor:
    """The module's linear map as ``[out, in, kh, kw]`` over the input positions it reads.

    Grouped convolutions get zeros between groups; a dilated kernel is spread over its
    true extent, ``(k - 1) * dilation + 1``, with zeros between its taps.
    """
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return weight[:, :, None, None]
    out_per_group, in_per_group = module.out_channels // module.groups, module.in_channels // module.groups
    (kh, kw), (dh, dw) = weight.shape[2:], module.dilation
    dense = weight.new_zeros(module.out_channels, module.in_channels, (kh - 1) * dh + 1, (kw - 1) * dw + 1)
    for g in range(module.groups):
        rows, cols = slice(g * out_per_group, (g + 1) * out_per_group), slice(g * in_per_group, (g + 1) * in_per_group)
        dense[rows, cols, ::dh, ::dw] = weight[rows]
    return dense


def direct_weights(model: nn.Module, graph: LayerGraph) -> list[DirectWeights]:
    """The kernel of every direct connection of ``graph``."""
    modules = dict(model.named_modules())
    result = []
    for connection in graph.connections:
        kernel = dense_kernel(modules[connection.module]).float().clone()
        for name in connection.after:
            if isinstance(modules.get(name), nn.modules.batchnorm._BatchNorm):
                kernel *= _bn_scale(modules[name])[:, None, None, None]
        for name in connection.before:
            if isinstance(modules.get(name), nn.modules.batchnorm._BatchNorm):
                kernel *= _bn_scale(modules[name])[None, :, None, None]
        if not torch.isfinite(kernel).all():
            raise AtlasError(
                f"The weights of `{connection.module}` are not finite (NaN or infinity). The "
                f"checkpoint comes from a diverged or damaged run: use another checkpoint."
            )
        result.append(DirectWeights(connection, kernel.numpy()))
    return result
