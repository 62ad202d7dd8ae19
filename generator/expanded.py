"""Expanded weights: the linear map between two layers of the linearised network.

Every operation between the two layers is replaced by its nearest linear twin (METHOD.md):
ReLU-like activations, dropout and local response norm become the identity, max-pooling
becomes average pooling of the same window, eval-mode batch-norm keeps only its scale, and
biases and other constants drop out. What remains is linear and translation-equivariant,
so it is a convolution kernel, found by composing the kernels of the operations directly:
no backward pass, no probing with inputs.

A map from the source layer to a node is held as :class:`LinearMap`::

    value[c, y, x] = sum over c', i, j of  kernel[c, c', i, j] * src[c', y*sy + oy + i, x*sx + ox + j]

for units away from the border (stride ``(sy, sx)``, offset ``(oy, ox)``). After global
pooling a map is no longer spatial: ``kernel[c, c', 0, 0]`` is then the response to a unit
increase of source channel ``c'`` at every position.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .errors import AtlasError
from .graph import ACTIVATION_FUNCTIONS, ACTIVATION_MODULES, LayerGraph, TracedModel, _op_name, trace_layers

RESHAPES = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
SUMS = {operator.add, operator.iadd, torch.add, "add", "add_", operator.sub, operator.isub, torch.sub, "sub", "sub_"}


@dataclass(frozen=True)
class LinearMap:
    """The linear map from the source layer to one node; see the module docstring."""

    kernel: torch.Tensor  # [channels, source channels, h, w]
    stride: tuple[int, int] = (1, 1)
    offset: tuple[int, int] = (0, 0)
    spatial: bool = True
    # Average pools not yet applied: ((kh, kw), (step_y, step_x)) box filters in source pixels.
    # A box acts on every channel alike, so it commutes with everything up to the next
    # concatenation or sum; applying it there, after the channel-mixing convolutions have
    # shrunk the kernel, saves most of the work.
    boxes: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = ()


def _with_boxes(m: LinearMap) -> LinearMap:
    """``m`` with its pending average pools applied to the kernel (a box is separable)."""
    kernel = m.kernel
    for (kh, kw), (sy, sx) in m.boxes:
        h, w = kernel.shape[2:]
        rows = kernel.new_zeros(*kernel.shape[:2], h + (kh - 1) * sy, w)
        for a in range(kh):
            rows[:, :, a * sy : a * sy + h] += kernel
        kernel = kernel.new_zeros(*kernel.shape[:2], rows.shape[2], w + (kw - 1) * sx)
        for b in range(kw):
            kernel[:, :, :, b * sx : b * sx + w] += rows
        kernel /= kh * kw
    return replace(m, kernel=kernel, boxes=())


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _conv(m: LinearMap, weight: torch.Tensor, stride, padding, dilation, groups: int) -> LinearMap:
    """Compose ``m`` with a convolution: its taps land ``dilation * m.stride`` source pixels apart."""
    if not m.spatial:
        if weight.shape[2:] != (1, 1) or groups != 1:
            raise ValueError("a spatial convolution after global pooling")
        return replace(m, kernel=torch.einsum("oi,is->os", weight[:, :, 0, 0].to(m.kernel.dtype),
                                              m.kernel[:, :, 0, 0])[:, :, None, None])
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    step = (dilation[0] * m.stride[0], dilation[1] * m.stride[1])
    # kernel'[o, c'] = sum_i,a W[o, i, a] K[i, c', u - a*step]: a transposed convolution of K by W,
    # with the source channel c' as the batch.
    out_channels, in_per_group = weight.shape[:2]
    if m.kernel.shape[2:] == (1, 1) and groups == 1:  # the common case, a plain matrix product
        kernel = torch.einsum("oiyx,is->osyx", weight.to(m.kernel.dtype), m.kernel[:, :, 0, 0])
        spread = kernel.new_zeros(*kernel.shape[:2], (kernel.shape[2] - 1) * step[0] + 1,
                                  (kernel.shape[3] - 1) * step[1] + 1)
        spread[:, :, :: step[0], :: step[1]] = kernel
        return LinearMap(
            spread.contiguous(),
            (stride[0] * m.stride[0], stride[1] * m.stride[1]),
            (m.offset[0] - padding[0] * m.stride[0], m.offset[1] - padding[1] * m.stride[1]),
            boxes=m.boxes,
        )
    transposed = (weight.reshape(groups, out_channels // groups, in_per_group, *weight.shape[2:])
                  .transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, *weight.shape[2:]))
    kernel = F.conv_transpose2d(m.kernel.transpose(0, 1), transposed, groups=groups, dilation=step).transpose(0, 1)
    return LinearMap(
        kernel,
        (stride[0] * m.stride[0], stride[1] * m.stride[1]),
        (m.offset[0] - padding[0] * m.stride[0], m.offset[1] - padding[1] * m.stride[1]),
        boxes=m.boxes,
    )


def _pool(m: LinearMap, kernel_size, stride, padding, dilation=1) -> LinearMap:
    """Average pooling (the linear twin of max-pooling): a box filter, applied later."""
    if not m.spatial:
        raise ValueError("pooling after global pooling")
    size, dilation, padding = _pair(kernel_size), _pair(dilation), _pair(padding)
    stride = _pair(stride) if stride not in (None, ()) else size
    step = (dilation[0] * m.stride[0], dilation[1] * m.stride[1])
    return LinearMap(
        m.kernel,
        (stride[0] * m.stride[0], stride[1] * m.stride[1]),
        (m.offset[0] - padding[0] * m.stride[0], m.offset[1] - padding[1] * m.stride[1]),
        boxes=m.boxes + ((size, step),),
    )


def _scale(m: LinearMap, factors: torch.Tensor | float) -> LinearMap:
    if isinstance(factors, torch.Tensor):
        factors = factors.reshape(-1, 1, 1, 1).to(m.kernel.dtype)
    return replace(m, kernel=m.kernel * factors)


def _global(m: LinearMap) -> LinearMap:
    """After global average pooling: a box sums to one, so pending boxes drop out."""
    return m if not m.spatial else LinearMap(m.kernel.sum(dim=(2, 3), keepdim=True), spatial=False)


def _combined(maps: list[LinearMap | None], channels: list[int], stack: bool) -> LinearMap:
    """Parts on one window of source positions: stacked along channels (a concatenation) or
    added (a sum). A part that does not reach a position is zero there; None is a part
    that does not depend on the source (zero, ``channels`` wide when stacked)."""
    present = [_with_boxes(m) for m in maps if m is not None]
    if all(not m.spatial for m in present):
        window, spatial, stride, top, left = (1, 1), False, (1, 1), 0, 0
    elif any(not m.spatial for m in present) or len({m.stride for m in present}) > 1:
        raise ValueError("parts at different resolutions")
    else:
        spatial, stride = True, present[0].stride
        top, left = min(m.offset[0] for m in present), min(m.offset[1] for m in present)
        window = (max(m.offset[0] + m.kernel.shape[2] for m in present) - top,
                  max(m.offset[1] + m.kernel.shape[3] for m in present) - left)
    sources = present[0].kernel.shape[1]
    rows = sum(channels) if stack else present[0].kernel.shape[0]
    kernel = present[0].kernel.new_zeros(rows, sources, *window)
    start, parts = 0, iter(present)
    for m, width in zip(maps, channels):
        if m is not None:
            m = next(parts)
            y, x = (m.offset[0] - top, m.offset[1] - left) if spatial else (0, 0)
            h, w = m.kernel.shape[2:]
            kernel[start : start + width if stack else rows, :, y : y + h, x : x + w] += m.kernel
        start += width if stack else 0
    return LinearMap(kernel, stride, (top, left), spatial)


class _Linearised:
    """Propagates :class:`LinearMap` from one node of a traced model to the nodes after it."""

    def __init__(self, traced: TracedModel, where: str):
        self.t, self.where = traced, where

    def unsupported(self, node: torch.fx.Node, why: str = "") -> AtlasError:
        module = f" (module `{node.target}`, {type(self.t.module(node)).__name__})" if node.op == "call_module" else ""
        return AtlasError(
            f"Expanded weights {self.where} pass through `{_op_name(node)}`{module}, node `{node.name}`, "
            f"which has no linear twin{': ' + why if why else ''}. Only linear operations, ReLU-like "
            f"activations, pooling, batch-norm, dropout and local response norm can be linearised; choose "
            f"layers with no such operation between them."
        )

    def propagate(self, src: torch.fx.Node | None, dst: torch.fx.Node) -> LinearMap | None:
        t = self.t
        start = src if src is not None else next(n for n in t.graph.nodes if n.op == "placeholder")
        needed = {dst} | _ancestors(dst, t)
        if start not in needed:
            raise AtlasError(f"Expanded weights {self.where}: the second layer does not read the first one.")
        channels = t.values[start].shape[1]
        maps: dict[torch.fx.Node, Any] = {start: LinearMap(torch.eye(channels)[:, :, None, None])}
        for node in t.graph.nodes:
            if node in maps or node not in needed or not t.is_data(node):
                continue
            if all(maps.get(p) is None for p in t.inputs(node)):
                maps[node] = None  # a constant as far as the source layer is concerned
            else:
                try:
                    maps[node] = self.twin(node, lambda a: maps.get(a) if isinstance(a, torch.fx.Node) else None)
                except (ValueError, StopIteration, TypeError, KeyError, IndexError, RuntimeError) as error:
                    raise self.unsupported(node, str(error).splitlines()[0] if str(error) else "") from None
            if node is dst:
                break
        return maps[dst]

    def twin(self, node: torch.fx.Node, operand) -> Any:
        """The map at ``node`` from the maps of its operands (``operand(arg)``; None: a constant)."""
        t = self.t
        if node.op == "call_module":
            return self._module(node, t.module(node), operand(node.args[0]))
        name = _op_name(node)
        args = torch.fx.node.map_arg(node.args, lambda n: t.values[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: t.values[n])
        if t.concat(node):
            parts = node.args[0]
            return _combined([operand(p) for p in parts], [t.values[p].shape[1] for p in parts], stack=True)
        if node.target in SUMS:
            if "alpha" in node.kwargs:
                raise ValueError("a sum with alpha")
            first, second = operand(node.args[0]), operand(node.args[1])
            if "sub" in str(getattr(node.target, "__name__", node.target)) and second is not None:
                second = _scale(second, -1.0)
            return _combined([first, second], [t.values[node].shape[1]] * 2, stack=False)
        if name in ("mul", "mul_", "truediv", "div", "div_"):
            dependent = [i for i, a in enumerate(node.args[:2]) if operand(a) is not None]
            if len(dependent) != 1 or ("div" in name and dependent == [1]):
                raise ValueError("a product or quotient of tensors that depend on the first layer")
            constant = args[1 - dependent[0]]
            if isinstance(constant, torch.Tensor) and constant.numel() != 1:
                raise ValueError("a product with a tensor")
            constant = float(constant)
            return _scale(operand(node.args[dependent[0]]), 1 / constant if "div" in name else constant)
        x = operand(node.args[0])
        if x is None or any(operand(a) is not None for a in node.all_input_nodes if a is not node.args[0]):
            raise ValueError("it combines several tensors that depend on the first layer")
        if name in ACTIVATION_FUNCTIONS:
            return x
        if name == "neg":
            return _scale(x, -1.0)
        if name in ("chunk", "split", "tensor_split"):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
            if dim % t.values[node.args[0]].dim() != 1:
                raise ValueError("a split along other than channels")
            edges = np.cumsum([0] + [v.shape[1] for v in t.values[node]]).tolist()
            return tuple(replace(x, kernel=x.kernel[a:b]) for a, b in zip(edges, edges[1:]))
        if name == "getitem":
            if isinstance(x, tuple):
                return x[args[1]]
            return self._getitem(x, args[1])
        if name in ("max_pool2d", "avg_pool2d"):
            params = _arguments(args[1:], kwargs, ("kernel_size", "stride", "padding", "dilation"), (None, None, 0, 1))
            if name == "avg_pool2d":
                params["dilation"] = 1
            return _pool(x, params["kernel_size"], params["stride"], params["padding"], params["dilation"])
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            return self._adaptive(node, x, args[1] if len(args) > 1 else kwargs["output_size"])
        if name == "mean":
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            dims = {d % t.values[node.args[0]].dim() for d in ((dims,) if isinstance(dims, int) else dims)}
            if dims != {2, 3}:
                raise ValueError("a mean over other than the two spatial axes")
            return _global(x)
        if name in RESHAPES:
            if not x.spatial or t.values[node].shape == t.values[node.args[0]].shape:
                return x
            raise PositionsError(self.unsupported(node, "it reshapes positions into features, so per-channel weights are undefined"))
        if name == "pad":
            pad = args[1] if len(args) > 1 else kwargs["pad"]
            if len(pad) != 4:
                raise ValueError("padding of other than the two spatial axes")
            return replace(x, offset=(x.offset[0] - pad[2] * x.stride[0], x.offset[1] - pad[0] * x.stride[1]))
        if name == "batch_norm":
            var, weight = args[2], (args[3] if len(args) > 3 else kwargs.get("weight"))
            eps = kwargs.get("eps", args[7] if len(args) > 7 else 1e-5)
            return _scale(x, (weight if weight is not None else 1.0) / torch.sqrt(var + eps))
        if name == "conv2d":
            params = _arguments(args[2:], kwargs, ("bias", "stride", "padding", "dilation", "groups"), (None, 1, 0, 1, 1))
            return _conv(x, args[1], params["stride"], _padding(params["padding"], args[1], params["dilation"]),
                         params["dilation"], params["groups"])
        if name == "linear":
            return self._linear(node, x, args[1])
        raise self.unsupported(node)

    def _module(self, node: torch.fx.Node, module: nn.Module, x: LinearMap) -> LinearMap:
        if isinstance(module, nn.Conv2d):
            return _conv(x, module.weight.detach(), module.stride,
                         _padding(module.padding, module.weight, module.dilation), module.dilation, module.groups)
        if isinstance(module, nn.Linear):
            return self._linear(node, x, module.weight.detach())
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training or module.running_var is None:
                raise ValueError("batch-norm in training mode has no fixed scale; call model.eval()")
            weight = module.weight.detach() if module.weight is not None else 1.0
            return _scale(x, weight / torch.sqrt(module.running_var + module.eps))
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            return _pool(x, module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return self._adaptive(node, x, module.output_size)
        if isinstance(module, ACTIVATION_MODULES):
            return x
        if isinstance(module, (nn.Flatten, nn.Unflatten)):
            if not x.spatial:
                return x
            raise PositionsError(self.unsupported(node, "it flattens positions into features"))
        raise self.unsupported(node)

    def _adaptive(self, node: torch.fx.Node, x: LinearMap, size) -> LinearMap:
        if _pair(size) == (1, 1):
            return _global(x)
        if tuple(self.t.values[node].shape[2:]) == tuple(self.t.values[self.t.inputs(node)[0]].shape[2:]):
            return x  # pools to the size it already has
        raise ValueError(f"adaptive pooling to {size} depends on the input size")

    def _linear(self, node: torch.fx.Node, x: LinearMap, weight: torch.Tensor) -> LinearMap:
        if (x.spatial and x.kernel.shape[2:] != (1, 1)) or weight.shape[1] != x.kernel.shape[0]:
            raise PositionsError(self.unsupported(
                node, "a linear layer reading flattened positions, so per-channel weights are undefined"))
        return LinearMap(torch.einsum("oi,icxy->ocxy", weight.to(x.kernel.dtype), x.kernel), spatial=False)

    def _concat(self, node: torch.fx.Node, parts: list[LinearMap | None]) -> LinearMap:
        return _combined(parts, [self.t.values[p].shape[1] for p in self.t.inputs(node)], stack=True)

    def _getitem(self, x: LinearMap, index) -> LinearMap:
        if isinstance(index, tuple) and len(index) >= 2 and index[0] == slice(None) and \
                all(i == slice(None) for i in index[2:]) and isinstance(index[1], slice):
            return replace(x, kernel=x.kernel[index[1]])
        raise ValueError("indexing other than a slice of channels")


class PositionsError(AtlasError):
    """The second layer reads positions as features (flatten, then linear): no per-channel map."""


def _arguments(args, kwargs, names, defaults) -> dict:
    values = dict(zip(names, defaults))
    values.update(zip(names, args))
    values.update({k: v for k, v in kwargs.items() if k in names})
    return values


def _padding(padding, weight: torch.Tensor, dilation) -> tuple[int, int]:
    """Numeric padding for 'valid' and 'same' (the extra pixel of even kernels goes right)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        d = _pair(dilation)
        return tuple(d[i] * (weight.shape[2 + i] - 1) // 2 for i in range(2))
    return _pair(padding)


def _ancestors(node: torch.fx.Node, t: TracedModel) -> set:
    seen, stack = set(), [node]
    while stack:
        for p in t.inputs(stack.pop()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _resolve(graph: LayerGraph, name: str | None) -> torch.fx.Node | None:
    """The node whose value a layer (or module) name means; None is the input image."""
    if name is None:
        return None
    if name in graph.outputs:
        return graph.outputs[name]
    calls = [n for n in graph.traced.graph.nodes if n.op == "call_module" and n.target == name]
    if len(calls) == 1:
        return calls[0]
    if len(calls) > 1:
        raise AtlasError(f"Module `{name}` is called {len(calls)} times in the forward pass; name a browsed layer instead.")
    graph.layer(name)  # raises the error that lists the browsed layers
    raise AssertionError("unreachable")


def linear_map(graph: LayerGraph, src: str | None, dst: str) -> LinearMap:
    """The expanded map from ``src`` (a layer or module name; None: the image) to ``dst``."""
    where = f"from `{src or 'the input image'}` to `{dst}`"
    result = _Linearised(graph.traced, where).propagate(_resolve(graph, src), _resolve(graph, dst))
    if result is None:
        raise AtlasError(f"Expanded weights {where}: the second layer does not read the first one.")
    return _with_boxes(result)


def expanded_weights(model: nn.Module, src: str, dst: str, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """The expanded weights from layer ``src`` to layer ``dst`` of ``model``.

    ``src`` and ``dst`` are browsed layer names (see :func:`generator.trace_layers`) or
    module names from ``model.named_modules()``; ``input_shape`` is the model input's
    ``(channels, height, width)``.

    Returns ``[C_dst, C_src, kh, kw]``, or ``[C_dst, C_src]`` when ``dst`` is not spatial
    (after global pooling, such as a classifier). Centring convention: for a ``dst`` unit
    at ``(y, x)`` far from the image border, ``kernel[:, :, i, j]`` weighs the ``src``
    position ``(y * sy + oy + i, x * sx + ox + j)``, where ``(sy, sx)`` is the total
    stride between the layers and ``(oy, ox)`` the offset their paddings add up to. The
    window is exactly the set of ``src`` positions that can reach the unit, so for
    symmetric padding it is centred on the unit; zeros fill the window where one branch
    reaches less far than another. Use :func:`linear_map` for the stride and offset.
    """
    model.eval()
    result = linear_map(trace_layers(model, input_shape), src, dst)
    return result.kernel if result.spatial else result.kernel[:, :, 0, 0]


@dataclass(frozen=True)
class LayerWeights:
    """The weights from every unit of ``src`` to every unit of ``dst``, ``hops`` layers apart.

    ``kernel[o, i]`` joins unit ``o`` of ``dst`` to unit ``i`` of ``src`` (None: the
    image's channels). ``direct[o]`` says that unit ``o`` reads ``src`` through one
    weight layer and per-channel operations only, so its kernel is the stored kernel
    itself, not an expansion through pooling, bottlenecks or branches.
    """

    src: str | None
    dst: str
    hops: int
    kernel: np.ndarray  # float32 [dst units, src units, kh, kw]
    direct: np.ndarray  # bool [dst units]


def layer_weights(graph: LayerGraph, hops: int = 1) -> list[LayerWeights]:
    """Weights between adjacent layers, and between layers up to ``hops`` apart."""
    result = []
    with torch.no_grad():
        for distance in range(1, hops + 1):
            pairs = graph.adjacent if distance == 1 else [
                (src, layer.name) for layer in graph.layers for src in graph.upstream(layer.name, distance)]
            for src, dst in pairs:
                try:
                    m = linear_map(graph, src, dst)
                except PositionsError as error:
                    graph.skipped.append(f"{src} -> {dst}: {error}")
                    continue
                direct = np.zeros(m.kernel.shape[0], dtype=bool)
                if distance == 1:
                    for c in graph.connections:
                        if c.src == src and c.dst == dst and all(_per_channel(graph, op) for op in c.before):
                            direct[c.start : c.stop] = True
                kernel = m.kernel.float().numpy()
                if not np.isfinite(kernel).all():
                    raise AtlasError(
                        f"The weights between `{src or 'the input image'}` and `{dst}` are not finite (NaN or "
                        f"infinity): the checkpoint comes from a diverged or damaged run. Use another checkpoint.")
                result.append(LayerWeights(src, dst, distance, kernel, direct))
    return result


def _per_channel(graph: LayerGraph, op: str) -> bool:
    """An operation that leaves kernels as they are: not a pooling or padding."""
    module = graph.traced.modules.get(op)
    if module is not None:
        return isinstance(module, ACTIVATION_MODULES + (nn.modules.batchnorm._BatchNorm,))
    return op in ACTIVATION_FUNCTIONS
