"""Every operation the atlas knows: one entry each, the one place that says what it is.

An entry (:class:`Operation`) says how the operation is recognised (module classes, and the
names torch.fx gives its function or tensor method: ``relu``, ``add``, ``view``), its role
in a layer, its linear twin for expanded weights, how the gradient reference replaces it,
and how feature visualisation treats it. The layer graph, expanded weights, the gradient
reference and feature visualisation read entries and hold no operation names of their own.

To add an operation, add an entry to :data:`OPERATIONS` (and a test that its twin agrees
with the gradient reference, as ``tests/test_expanded.py`` does for group norm).

A linear twin is a function ``twin(ctx, node, x)``: ``x`` is the map the linearisation has
reached at the node's first input (None for the roles in :data:`COMBINING`, which read
their operands themselves), and
``ctx`` (the propagation in :mod:`generator.expanded`) gives the traced network (``ctx.t``),
the map of any other input (``ctx.operand(arg)``), a statistic frozen over reference images
(``ctx.frozen_value(node, what)``) and the source layer's size (``ctx.source``). A twin
raises ValueError (with a reason) where the operation cannot be linearised as used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import linear_maps as lm
from .linear_maps import LinearMap, Rearranged

# Roles: what an operation is to the layer graph.
WEIGHTED = "weighted"  # a convolution or linear layer: a browsed layer's own weights
ACTIVATION = "activation"  # element-wise, part of the value of the layer before it
NORM = "norm"  # per-channel normalisation (batch-norm, group norm): part of the layer's value
MIXING = "mixing"  # mixes channels through a statistic (layer norm)
POOL = "pool"  # pooling and resampling over positions
SHAPE = "shape"  # moves elements without changing them (reshape, permute, flatten)
CONCAT = "concatenation"
SUM = "sum"  # of two tensors: a residual connection
DIFFERENCE = "difference"
PRODUCT = "product"  # products and quotients: by constants, or by a gate
COMBINING = (CONCAT, SUM, DIFFERENCE, PRODUCT)  # roles whose twins read several operands (ctx.operand)
OTHER = "other"

Twin = Callable[[Any, torch.fx.Node, Any], Any]


@dataclass(frozen=True)
class Operation:
    """One kind of operation.

    ``reference`` says how the gradient reference (:mod:`generator.reference`) replaces the
    functions named in ``functions`` while the model's own forward pass runs: ``identity``,
    ``slope`` (by ``slope``), ``average pool`` and ``adaptive average pool`` (a max-pool by
    the average pool of its window), ``zero pad`` (constants carry no weight), ``frozen`` (a
    norm's ``frozen``, with its ``statistic`` measured over reference images), or None (kept as
    it is: linear already, or the identity in eval mode).
    ``featurevis`` says how feature visualisation treats it: ``redirect`` (a ReLU whose
    gradient also flows where it is off, Lucid's redirected ReLU) or ``fuse`` (local response
    norm, fused with its closed-form gradient), or None.
    """

    name: str
    role: str
    twin: Twin | None
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[str, ...] = ()
    slope: float | None = None  # a squashing activation's slope at zero
    reference: str | None = None
    featurevis: str | None = None
    kind: str = ""  # for a weighted operation: the kind of layer it makes ("conv", "linear")
    # A normalisation linearised with its statistic frozen over reference images: ``statistic(x,
    # second, eps)`` measures it on the norm's input (``second``: what the function takes second,
    # a normalised shape or a number of groups), ``frozen(x, second, weight, statistic)`` is the
    # norm with it frozen, for the gradient reference (``reference="frozen"``).
    statistic: Callable[..., torch.Tensor] | None = None
    frozen: Callable[..., torch.Tensor] | None = None
    # Modules recognised by more than their class: ``match(module)`` (a converter's generic
    # module class whose instances compute different things, such as onnx2torch's arithmetic).
    match: Callable[[nn.Module], bool] | None = None


def name_of(node: torch.fx.Node) -> str:
    """An operation's name: the module's target, or the function's or method's name."""
    if node.op == "call_module":
        return node.target
    return str(getattr(node.target, "__name__", node.target))


# -- twins ---------------------------------------------------------------------------------------
def _same(ctx, node, x):
    return x


def _scaled(x, factor: float):
    if isinstance(x, Rearranged):
        return replace(x, base=lm.scale(x.base, factor))
    return lm.scale(x, factor)


def _sloped(ctx, node, x):
    return _scaled(x, operation_of(ctx.t, node).slope)


def _arguments(args, kwargs, names, defaults) -> dict:
    values = dict(zip(names, defaults))
    values.update(zip(names, args))
    values.update({k: v for k, v in kwargs.items() if k in names})
    return values


def _values(ctx, node) -> tuple[tuple, dict]:
    """The node's arguments and keyword arguments, with the traced values of other nodes."""
    return (torch.fx.node.map_arg(node.args, lambda n: ctx.t.values[n]),
            torch.fx.node.map_arg(node.kwargs, lambda n: ctx.t.values[n]))


def _padding(padding, weight: torch.Tensor, dilation) -> tuple[int, int]:
    """Numeric padding for 'valid' and 'same' (the extra pixel of even kernels goes right)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        d = lm.pair(dilation)
        return tuple(d[i] * (weight.shape[2 + i] - 1) // 2 for i in range(2))
    return lm.pair(padding)


def _spatial(x, what: str):
    if isinstance(x, Rearranged):
        raise ValueError(f"{what} on rearranged positions")
    return x


def _convolution(ctx, node, x):
    module = ctx.t.module(node)
    x = _spatial(x, "a convolution")
    if module is not None:
        return lm.conv(x, module.weight.detach(), module.stride,
                       _padding(module.padding, module.weight, module.dilation), module.dilation, module.groups)
    args, kwargs = _values(ctx, node)
    params = _arguments(args[2:], kwargs, ("bias", "stride", "padding", "dilation", "groups"), (None, 1, 0, 1, 1))
    return lm.conv(x, args[1], params["stride"], _padding(params["padding"], args[1], params["dilation"]),
                   params["dilation"], params["groups"])


def _transposed_convolution(ctx, node, x):
    module = ctx.t.module(node)
    x = _spatial(x, "a transposed convolution")
    if max(lm.pair(module.stride)) > 1 or module.groups != 1 or max(lm.pair(module.dilation)) > 1:
        raise ValueError("a strided transposed convolution gives units at even and odd positions "
                         "different kernels, so no one kernel per pair of units")
    # with stride 1 it is a convolution by the flipped kernel, padded on the other side
    weight = module.weight.detach().transpose(0, 1).flip((2, 3))
    padding = tuple(k - 1 - p for k, p in zip(weight.shape[2:], lm.pair(module.padding)))
    return lm.conv(x, weight, 1, padding, 1, 1)


def _linear(ctx, node, x):
    module = ctx.t.module(node)
    return _mixed(ctx, x, (module.weight if module is not None else _values(ctx, node)[0][1]).detach())


def _matrix_product(ctx, node, x):
    """``x @ W`` with a constant matrix ``W``: a linear layer of weight ``W.T`` (how an exporter
    writes a linear layer over the last axis, such as ConvNeXt's over channels-last maps)."""
    if ctx.operand(node.args[1]) is not None:
        raise ValueError("a product of two tensors that depend on the first layer")
    matrix = _values(ctx, node)[0][1]
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        raise ValueError("a matrix product with other than one constant matrix")
    return _mixed(ctx, x, matrix.detach().T)


def _mixed(ctx, x, weight: torch.Tensor):
    """A linear layer's map: ``weight [out, in]`` over the channels (or the positions a flatten made)."""
    if isinstance(x, Rearranged):
        if x.elements.dim() == 1:
            return lm.placed(x, weight, ctx.source)
        if x.axes is not None and x.axes[-1] == 0:
            return lm.channels_last_mix(x, weight)
        raise ValueError("a linear layer over other than channels or flattened positions")
    if isinstance(x, lm.Placed):  # a dense layer after a dense layer reading positions
        if weight.shape[1] != len(x.image):
            raise ValueError("a linear layer whose inputs are not the channels")
        return lm.mixed(x, weight)
    if x.spatial and x.kernel.shape[2:] != (1, 1):
        raise ValueError("a linear layer reading positions that were not flattened")
    if weight.shape[1] != x.kernel.shape[0]:
        raise ValueError("a linear layer whose inputs are not the channels")
    return lm.mixed(LinearMap(x.kernel, spatial=False, placed=x.placed), weight)


# Twins that only scale or mix a non-spatial map's rows: a dense layer's map over positions
# passes them unspread (:class:`.linear_maps.Placed`); every other twin reads it spread.
ROW_TWINS = frozenset({_same, _sloped, _linear, _matrix_product})


def _batch_norm(ctx, node, x):
    """Eval-mode batch-norm keeps its scale; its shift adds no weight."""
    x = _spatial(x, "batch-norm")
    module = ctx.t.module(node)
    if module is not None:
        if module.training or module.running_var is None:
            raise ValueError("batch-norm in training mode has no fixed scale; call model.eval()")
        weight, var, eps = module.weight, module.running_var, module.eps
    else:
        args, kwargs = _values(ctx, node)
        var, weight = args[2], (args[3] if len(args) > 3 else kwargs.get("weight"))
        eps = kwargs.get("eps", args[7] if len(args) > 7 else 1e-5)
    weight = weight.detach() if weight is not None else 1.0
    return lm.scale(x, weight / torch.sqrt(var + eps))


def norm_parameters(t, node: torch.fx.Node) -> tuple[Any, Any, float]:
    """A layer norm's normalised shape, or a group norm's number of groups (what its function
    takes second), its weight and its eps."""
    module = t.module(node)
    if isinstance(module, nn.GroupNorm):
        return module.num_groups, module.weight, module.eps
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape), module.weight, module.eps
    args = torch.fx.node.map_arg(node.args, lambda n: t.values[n])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: t.values[n])
    second = args[1] if len(args) > 1 else kwargs.get("normalized_shape", kwargs.get("num_groups"))
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    return second, weight, args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)


def _deviation(x: torch.Tensor, shape, eps: float) -> torch.Tensor:
    """A layer norm's deviation over ``shape`` (its last axes), averaged over the images."""
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    return torch.sqrt(x.var(dim=dims, unbiased=False) + eps).mean()


def _group_deviations(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """A group norm's deviation per group, averaged over the images: ``[groups]``."""
    return torch.sqrt(x.reshape(len(x), groups, -1).var(dim=2, unbiased=False) + eps).mean(dim=0)


def _frozen_layer_norm(x, shape, weight, deviation):
    """Layer norm dividing by a frozen deviation (its centring kept)."""
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    y = (x - x.mean(dim=dims, keepdim=True)) / deviation
    return y * weight if weight is not None else y


def _frozen_group_norm(x, groups, weight, deviations):
    """Group norm with frozen statistics, up to its constant shift: each channel scaled by its
    weight over its group's deviation."""
    factors = deviations.repeat_interleave(x.shape[1] // groups).reciprocal()
    factors = factors * weight if weight is not None else factors
    return x * factors.reshape(1, -1, *([1] * (x.dim() - 2)))


def _layer_norm(ctx, node, x):
    """Layer norm over channels, its deviation frozen: ``weight * (x - mean over channels) / deviation``."""
    shape, weight, _ = norm_parameters(ctx.t, node)
    if isinstance(x, Rearranged) and x.axes is not None and x.axes[-1] == 0 and shape == (x.grid[0],):
        channels = x.grid[0]
    elif isinstance(x, LinearMap) and not x.spatial and shape == (x.kernel.shape[0],) == \
            tuple(ctx.t.values[node.args[0]].shape[-1:]):
        channels = x.kernel.shape[0]  # after global pooling: the channels are all there is
    else:
        raise ValueError("layer norm over other than the channels of each position")
    centre = torch.eye(channels) - 1 / channels
    deviation = ctx.frozen_value(node, "layer norm deviation")
    matrix = (weight.detach() if weight is not None else torch.ones(channels))[:, None] * centre / deviation
    return lm.channels_last_mix(x, matrix) if isinstance(x, Rearranged) else lm.mixed(x, matrix)


def _group_norm(ctx, node, x):
    """Group norm with its statistics frozen at their mean over reference images: each channel
    scaled by its weight over its group's frozen deviation (the frozen mean is a constant shift,
    which adds no weight). Within a group, every channel is divided by the same deviation."""
    x = _spatial(x, "group norm")
    groups, weight, _ = norm_parameters(ctx.t, node)
    deviations = ctx.frozen_value(node, "group norm deviation")  # [groups]
    factors = deviations.repeat_interleave(ctx.t.values[node].shape[1] // groups).reciprocal()
    return lm.scale(x, factors * weight.detach() if weight is not None else factors)


def _pool(ctx, node, x):
    x = _spatial(x, "a pooling")
    module = ctx.t.module(node)
    if module is not None:
        return lm.pool(x, module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))
    args, kwargs = _values(ctx, node)
    params = _arguments(args[1:], kwargs, ("kernel_size", "stride", "padding", "dilation"), (None, None, 0, 1))
    if name_of(node) == "avg_pool2d":
        params["dilation"] = 1
    return lm.pool(x, params["kernel_size"], params["stride"], params["padding"], params["dilation"])


def apply(t, node: torch.fx.Node, data: torch.Tensor, linearised: bool = False) -> Any:
    """``node``'s operation on ``data`` in place of its first argument (other arguments as traced).
    ``linearised``: adaptive max-pooling as adaptive average pooling."""
    args = torch.fx.node.map_arg(node.args, lambda n: t.values[n])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: t.values[n])
    if node.op == "call_module":
        module = t.module(node)
        if linearised and isinstance(module, nn.AdaptiveMaxPool2d):
            return F.adaptive_avg_pool2d(data, module.output_size)
        return module(data, *args[1:], **kwargs)  # a converter's reshape also takes the shape
    if node.op == "call_method":
        return getattr(data, node.target)(*args[1:], **kwargs)
    target = node.target
    if linearised and name_of(node) == "adaptive_max_pool2d":
        target = F.adaptive_avg_pool2d
    return target(data, *args[1:], **kwargs)


def _resample(ctx, node, x):
    """Adaptive pooling and interpolation: a pool or global pool where they are one, else a
    per-channel resampling of positions measured on unit images."""
    t = ctx.t
    before, after = t.values[node.args[0]], t.values[node]
    if isinstance(x, LinearMap) and not x.spatial:
        if after.shape[2:] == (1, 1):
            return x
        raise ValueError("a resampling after global pooling")
    x = _spatial(x, "a resampling")
    (h, w), (oh, ow) = before.shape[2:], after.shape[2:]
    adaptive = isinstance(t.module(node), (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or \
        name_of(node).startswith("adaptive")
    if (oh, ow) == (1, 1) and adaptive:
        return lm.pooled_globally(x)
    if (oh, ow) == (h, w):
        return x
    if adaptive and h % oh == 0 and w % ow == 0:
        return lm.pool(x, (h // oh, w // ow), (h // oh, w // ow), 0)
    impulses = torch.eye(h * w).reshape(h * w, 1, h, w)
    with torch.no_grad():
        linear = apply(t, node, impulses, linearised=True)
    positions = linear.reshape(h * w, oh * ow).T.contiguous()
    return lm.resampled(x, tuple(before.shape[1:]), positions, (oh, ow))


def _reduced(ctx, node, x):
    """A mean or sum over both spatial axes: global pooling (times the positions, for a sum)."""
    args, kwargs = _values(ctx, node)
    value = ctx.t.values[node.args[0]]
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    dims = {d % value.dim() for d in ((dims,) if isinstance(dims, int) else dims)}
    if dims != {2, 3}:
        raise ValueError(f"a {name_of(node)} over other than the two spatial axes")
    positions = math.prod(value.shape[2:])
    return _scaled(lm.pooled_globally(_spatial(x, "a reduction")), positions if name_of(node) == "sum" else 1.0)


def _pad(ctx, node, x):
    args, kwargs = _values(ctx, node)
    pad = args[1] if len(args) > 1 else kwargs["pad"]
    if len(pad) != 4:
        raise ValueError("padding of other than the two spatial axes")
    x = _spatial(x, "a padding")
    return replace(x, offset=(x.offset[0] - pad[2] * x.stride[0], x.offset[1] - pad[0] * x.stride[1]))


def _rearranged(ctx, node, x):
    """A reshape, permute or flatten: the same rearrangement of the map's elements."""
    value = ctx.t.values[node.args[0]]
    if isinstance(x, Rearranged):
        grid, current = x.grid, x.elements
    else:
        grid = tuple(value.shape[1:]) if x.spatial else (value[0].numel(), 1, 1)
        current = lm.canonical(grid).reshape(value.shape[1:])
    moved = apply(ctx.t, node, current[None])
    if not isinstance(moved, torch.Tensor) or moved.shape[0] != 1:
        raise ValueError("a rearrangement across images")
    return lm.rearranged(x, grid, moved[0])


def _item(ctx, node, x):
    args, _ = _values(ctx, node)
    return x[args[1]] if isinstance(x, tuple) else _rearranged(ctx, node, x)


def _split(ctx, node, x):
    args, kwargs = _values(ctx, node)
    x = _spatial(x, f"`{name_of(node)}`")
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
    if dim % ctx.t.values[node.args[0]].dim() != 1:
        raise ValueError("a split along other than channels")
    edges = np.cumsum([0] + [v.shape[1] for v in ctx.t.values[node]]).tolist()
    return tuple(replace(x, kernel=x.kernel[a:b]) for a, b in zip(edges, edges[1:]))


def _concatenated(ctx, node, x):
    parts = node.args[0]
    return lm.combined([ctx.operand(p) for p in parts], [ctx.t.values[p].shape[1] for p in parts], stack=True)


def _added(ctx, node, x):
    if "alpha" in node.kwargs:
        raise ValueError("a sum with alpha")
    first, second = ctx.operand(node.args[0]), ctx.operand(node.args[1])
    if operation_of(ctx.t, node).role == DIFFERENCE and second is not None:
        second = _scaled(second, -1.0)
    if first is None or second is None:  # plus a constant, which adds no weight
        return first if second is None else second
    return lm.combined([first, second], [ctx.t.values[node].shape[1]] * 2, stack=False)


def _negated(ctx, node, x):
    return _scaled(x, -1.0)


def is_gate(t, node: torch.fx.Node) -> bool:
    """A squashed factor with one value per channel: the gate of a squeeze-and-excitation."""
    op = operation_of(t, node)
    value = t.values[node]
    return op is not None and op.slope is not None and value.dim() == 4 and value.shape[2:] == (1, 1)


def _self_gate(t, node: torch.fx.Node, largest: int = 8) -> tuple[int, float] | None:
    """A product ``x * g(x)`` with ``g`` a chain of element-wise operations of ``x`` alone (a hard
    swish or SiLU written out, such as ``x * relu6(x + 3)``): ``(the index of x, g fully open)``,
    so that its twin is the identity up to what follows, as for the activation modules; else None.
    ``g`` fully open is its value where ``x`` is large."""
    for i in (0, 1):
        x, gate = node.args[1 - i], node.args[i]
        chain, n = [], gate
        while isinstance(n, torch.fx.Node) and n is not x and len(chain) < largest:
            op = operation_of(t, n)
            if op is None or op.role not in (ACTIVATION, SUM, DIFFERENCE, PRODUCT) or len(t.inputs(n)) != 1 or \
                    not isinstance(t.values.get(n), torch.Tensor) or t.values[n].shape != t.values[x].shape:
                break
            chain.append(n)
            n = t.inputs(n)[0]
        if n is not x or not chain:
            continue
        values = dict(t.values)
        values[x] = torch.full_like(t.values[x], 1e4)
        attributes = t.attributes()
        with torch.no_grad():
            for step in reversed(chain):
                values[step] = t.run(step, values, attributes)
        opened = values[gate]
        if torch.isfinite(opened).all() and float(opened.max() - opened.min()) <= 1e-6 * float(opened.abs().max()):
            return 1 - i, float(opened.flatten()[0])
    return None


def _product(ctx, node, x):
    """A product or quotient: by a constant, or (a gate) by a tensor frozen at its mean.
    A gate is frozen whether or not it depends on the source layer (it may be held as
    another layer's value)."""
    args, _ = _values(ctx, node)
    quotient = operation_of(ctx.t, node).name == "quotient"
    dependent = [i for i, a in enumerate(node.args[:2]) if ctx.operand(a) is not None]
    gates = [i for i in (0, 1) if isinstance(node.args[i], torch.fx.Node) and is_gate(ctx.t, node.args[i])]
    if not quotient and len(gates) == 1 and 1 - gates[0] in dependent:
        return lm.scale(ctx.operand(node.args[1 - gates[0]]), ctx.frozen_value(node.args[gates[0]], "gate"))
    if len(dependent) == 2:
        opened = _self_gate(ctx.t, node)
        if opened is None:
            raise ValueError("a product of two tensors that depend on the first layer")
        return _scaled(ctx.operand(node.args[opened[0]]), opened[1])
    if len(dependent) != 1 or (quotient and dependent == [1]):
        raise ValueError("a quotient by a tensor that depends on the first layer")
    x, constant = ctx.operand(node.args[dependent[0]]), args[1 - dependent[0]]
    if isinstance(constant, torch.Tensor) and constant.numel() != 1:
        channels = ctx.t.values[node].shape[1]
        if isinstance(x, Rearranged) or constant.numel() != channels or \
                constant.shape[-2:] != (1, 1) and constant.dim() >= 2:
            raise ValueError("a product with a tensor that is not one factor per channel")
        factors = constant.reshape(-1).detach()
        return lm.scale(x, 1 / factors if quotient else factors)
    constant = float(constant)
    return _scaled(x, 1 / constant if quotient else constant)


# -- the registry --------------------------------------------------------------------------------
DIFFERENCE_NAMES = ("sub", "sub_", "isub")
QUOTIENT_NAMES = ("truediv", "itruediv", "div", "div_")
SLOPES = {"sigmoid": (nn.Sigmoid, 0.25), "tanh": (nn.Tanh, 1.0), "hardsigmoid": (nn.Hardsigmoid, 1 / 6),
          "softplus": (nn.Softplus, 0.5), "hardtanh": (nn.Hardtanh, 1.0), "softsign": (nn.Softsign, 1.0)}


def _onnx(*classes: str) -> Callable[[nn.Module], bool]:
    """onnx2torch's modules of these class names (matched by name: onnx2torch is optional)."""
    def match(module: nn.Module) -> bool:
        return type(module).__name__ in classes and type(module).__module__.startswith("onnx2torch.")
    return match


def _onnx_arithmetic(function: str) -> Callable[[nn.Module], bool]:
    """onnx2torch's module for ONNX's Add, Sub, Mul and Div: one class, its function an attribute
    (matched by name, so that onnx2torch is needed only by models converted with it)."""
    def match(module: nn.Module) -> bool:
        return type(module).__name__ == "OnnxBinaryMathOperation" and \
            type(module).__module__.startswith("onnx2torch.") and \
            getattr(getattr(module, "math_op_function", None), "__name__", None) == function
    return match

OPERATIONS: tuple[Operation, ...] = (
    Operation("convolution", WEIGHTED, _convolution, (nn.Conv2d,), ("conv2d",), kind="conv"),
    Operation("linear layer", WEIGHTED, _linear, (nn.Linear,), ("linear",), kind="linear"),
    Operation("transposed convolution", OTHER, _transposed_convolution, (nn.ConvTranspose2d,)),
    Operation("ReLU", ACTIVATION, _same, (nn.ReLU,), ("relu", "relu_"), reference="identity", featurevis="redirect"),
    Operation("ReLU-like activation", ACTIVATION, _same,
              (nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.Hardswish, nn.Mish),
              ("relu6", "leaky_relu", "leaky_relu_", "gelu", "silu", "silu_", "elu", "celu", "selu", "hardswish",
               "hardswish_", "mish", "prelu"), reference="identity"),
    Operation("dropout", ACTIVATION, _same, (nn.Dropout, nn.Dropout2d, nn.AlphaDropout),
              ("dropout", "dropout2d", "alpha_dropout"), reference="identity"),
    # no linear twin of its own: left out (the identity), as the article does
    Operation("local response norm", ACTIVATION, _same, (nn.LocalResponseNorm,), ("local_response_norm",),
              reference="identity", featurevis="fuse"),
    Operation("no-op", ACTIVATION, _same, (nn.Identity,), ("contiguous", "clone", "stochastic_depth")),
    *(Operation(f"{name} (squashing)", ACTIVATION, _sloped, (module,), (name,), slope=slope, reference="slope")
      for name, (module, slope) in SLOPES.items()),
    # clamp(x, low, high) around zero is a hard tanh: how exported hard sigmoids and ReLU6 arrive
    Operation("clamp (squashing)", ACTIVATION, _sloped, functions=("clamp", "clip", "clamp_", "clip_"), slope=1.0,
              reference="slope"),
    # the error function: how an exporter writes GELU, x * 0.5 * (1 + erf(x / sqrt(2)))
    Operation("erf (squashing)", ACTIVATION, _sloped, functions=("erf",), slope=2 / math.sqrt(math.pi),
              reference="slope"),
    Operation("batch-norm", NORM, _batch_norm, (nn.modules.batchnorm._BatchNorm,), ("batch_norm",)),
    Operation("group norm", NORM, _group_norm, (nn.GroupNorm,), ("group_norm",), reference="frozen",
              statistic=_group_deviations, frozen=_frozen_group_norm),
    Operation("layer norm", MIXING, _layer_norm, (nn.LayerNorm,), ("layer_norm",), reference="frozen",
              statistic=_deviation, frozen=_frozen_layer_norm),
    Operation("max pooling", POOL, _pool, (nn.MaxPool2d,), ("max_pool2d",), reference="average pool"),
    Operation("average pooling", POOL, _pool, (nn.AvgPool2d,), ("avg_pool2d",)),
    Operation("adaptive max pooling", POOL, _resample, (nn.AdaptiveMaxPool2d,), ("adaptive_max_pool2d",),
              reference="adaptive average pool"),
    Operation("resampling", POOL, _resample, (nn.AdaptiveAvgPool2d, nn.Upsample),
              ("adaptive_avg_pool2d", "interpolate", "upsample")),
    Operation("spatial reduction", POOL, _reduced, functions=("mean", "sum")),
    Operation("padding", OTHER, _pad, functions=("pad",), reference="zero pad"),
    Operation("rearrangement", SHAPE, _rearranged, (nn.Flatten, nn.Unflatten),
              ("view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "movedim", "t",
               "unflatten")),
    # onnx2torch's shape operations whose shape is an input (so that tracing cannot look inside)
    Operation("rearrangement (ONNX)", SHAPE, _rearranged,
              match=_onnx("OnnxReshape", "OnnxTranspose", "OnnxSqueezeStaticAxes", "OnnxSqueezeDynamicAxes",
                          "OnnxUnsqueezeStaticAxes", "OnnxUnsqueezeDynamicAxes", "OnnxFlatten", "OnnxSlice")),
    Operation("item", OTHER, _item, functions=("getitem",)),
    Operation("split", OTHER, _split, functions=("chunk", "split", "tensor_split")),
    Operation("concatenation", CONCAT, _concatenated, functions=("cat", "concat")),
    Operation("sum", SUM, _added, functions=("add", "add_", "iadd"), match=_onnx_arithmetic("add")),
    Operation("difference", DIFFERENCE, _added, functions=DIFFERENCE_NAMES, match=_onnx_arithmetic("sub")),
    Operation("product", PRODUCT, _product, functions=("mul", "mul_", "imul"), match=_onnx_arithmetic("mul")),
    Operation("quotient", PRODUCT, _product, functions=QUOTIENT_NAMES, match=_onnx_arithmetic("_onnx_div")),
    Operation("negation", OTHER, _negated, functions=("neg",)),
    Operation("matrix product", OTHER, _matrix_product, functions=("matmul",)),
)
_BY_NAME = {name: op for op in OPERATIONS for name in op.functions}


def operation(module: nn.Module | None, name: str) -> Operation | None:
    """The entry of an operation: a module by its class, else a function or method by name."""
    if module is not None:
        return next((op for op in OPERATIONS if (op.modules and isinstance(module, op.modules))
                     or (op.match is not None and op.match(module))), None)
    return _BY_NAME.get(name)


def operation_of(t, node: torch.fx.Node) -> Operation | None:
    """The entry of a traced node's operation (``t``: the :class:`~generator.network.TracedNetwork`)."""
    if node.op not in ("call_module", "call_function", "call_method"):
        return None
    return operation(t.module(node), name_of(node))


def part_of_layer(op: Operation | None) -> bool:
    """Part of the value of the layer before it: an element-wise activation or a per-channel
    norm. A direct connection through these keeps the stored kernel as it is (up to a scale)."""
    return op is not None and op.role in (ACTIVATION, NORM)


def keeps_kernel(op: Operation | None) -> bool:
    """Leaves kernels as they are (up to a scale): part of a layer's value, or a rearrangement;
    not a pooling or padding."""
    return part_of_layer(op) or (op is not None and op.role == SHAPE)


def by_reference(kind: str) -> list[Operation]:
    """The entries the gradient reference replaces in the way ``kind`` names."""
    return [op for op in OPERATIONS if op.reference == kind]


# Squashing modules of converters that tracing looks into (their arithmetic composes on its own):
# onnx2torch writes ONNX's HardSigmoid as clip(alpha * x + beta, 0, 1) in a module of its own.
CONVERTED_SQUASHING = _onnx("OnnxHardSigmoid")


def squashing_module(module: nn.Module) -> bool:
    """A squashing activation as a module (a sigmoid, a converter's hard sigmoid, ...): where the
    gradient reference finds the gates it freezes, one value per channel."""
    squashing = tuple(cls for op in OPERATIONS if op.slope is not None for cls in op.modules)
    return isinstance(module, squashing) or CONVERTED_SQUASHING(module)


def by_featurevis(kind: str) -> list[Operation]:
    """The entries feature visualisation treats in the way ``kind`` names."""
    return [op for op in OPERATIONS if op.featurevis == kind]


def leaf(module: nn.Module) -> bool:
    """Whether tracing keeps ``module`` as one node: an operation of the registry, whose forward
    is the registry class's own. Any other module (a subclass with a forward of its own, such as
    a channels-first layer norm that permutes around it, included) is traced into, so that
    arithmetic wrapped in modules reaches the registry."""
    forward = type(module).forward
    return any(isinstance(module, cls) and forward is cls.forward for op in OPERATIONS for cls in op.modules) or \
        any(op.match is not None and op.match(module) for op in OPERATIONS)
