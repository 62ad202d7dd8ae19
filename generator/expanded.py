"""Expanded weights: the linear map between two layers of the linearised network.

Every operation between the two layers is replaced by its nearest linear twin (METHOD.md;
the twins are listed in :mod:`generator.operations`): ReLU-like activations, dropout and
local response norm become the identity, squashing activations their slope at zero,
max-pooling average pooling of the same window, eval-mode batch-norm keeps only its scale,
and biases and other constants drop out. Reshapes, permutes, flattens and channel shuffles
move weights without changing them. Two operations mix channels non-linearly and are
linearised with a statistic frozen at its mean over reference images (the dataset when the
atlas has one, otherwise noise): a squeeze-and-excitation gate (``x * sigmoid(f(x))``)
becomes a per-channel scale, and layer norm over channels divides by a fixed deviation.
The maps are composed directly (:mod:`generator.linear_maps`): no backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import linear_maps as lm
from . import operations as ops
from .config import RankingConfig
from .errors import AtlasError
from .graph import LayerGraph, trace_layers
from .network import TracedNetwork
from .linear_maps import LinearMap, Rearranged

REFERENCE_IMAGES = 16  # images the frozen gates and norms are averaged over
MEMORY_MB = RankingConfig.memory_mb  # default budget for one composed map


class Skipped(AtlasError):
    """A pair of layers the atlas shows without weights, with the reason."""


class NoLinearTwin(Skipped):
    """An operation between two layers that has no sound linear twin: the pair is skipped."""


@dataclass
class Frozen:
    """Per gate its mean value, per layer norm its mean deviation, over reference images."""

    description: str  # such as "16 noise images"
    values: dict[torch.fx.Node, torch.Tensor]


def _gates(t: TracedNetwork) -> list[torch.fx.Node]:
    """Squashed, spatially constant factors of a product of two tensors (SE gates)."""
    return [a for node in t.graph.nodes if ops.name_of(node) in ops.PRODUCTS and len(t.inputs(node)) == 2
            for a in t.inputs(node) if _is_gate(t, a)]


def _layer_norms(t: TracedNetwork) -> list[torch.fx.Node]:
    return [n for n in t.graph.nodes if isinstance(t.module(n), nn.LayerNorm) or
            (n.op == "call_function" and ops.name_of(n) == "layer_norm")]


def _norm_parameters(t: TracedNetwork, node: torch.fx.Node) -> tuple[tuple[int, ...], Any, float]:
    """normalized_shape, weight and eps of a layer norm node."""
    module = t.module(node)
    if module is not None:
        return tuple(module.normalized_shape), module.weight, module.eps
    args = torch.fx.node.map_arg(node.args, lambda n: t.values[n])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: t.values[n])
    shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
    return tuple(shape), weight, eps


def needs_reference(t: TracedNetwork) -> bool:
    """Whether ``t`` has gates or layer norms, whose statistics are frozen on reference images."""
    return bool(_gates(t) or _layer_norms(t))


def freeze(t: TracedNetwork, images: torch.Tensor, description: str) -> Frozen:
    """Measure every gate and layer norm of ``t`` on ``images`` (as the model reads them)."""
    gates, norms = _gates(t), _layer_norms(t)
    inputs = {n: t.inputs(n)[0] for n in norms}
    values = t.evaluate(images, keep=set(gates) | set(inputs.values()))
    frozen = {g: values[g].mean(dim=0).reshape(-1) for g in gates}
    for n in norms:
        shape, _, eps = _norm_parameters(t, n)
        x = values[inputs[n]]
        dims = tuple(range(x.dim() - len(shape), x.dim()))
        frozen[n] = torch.sqrt(x.var(dim=dims, unbiased=False) + eps).mean()
    return Frozen(description, frozen)


def noise_images(shape: tuple[int, ...], count: int = REFERENCE_IMAGES) -> torch.Tensor:
    """Fixed reference images when there is no dataset: normal noise, as a normalised input."""
    return torch.randn(count, *shape, generator=torch.Generator().manual_seed(0))


class _Linearised:
    """Propagates linear maps from one node of a traced model to the nodes after it."""

    def __init__(self, traced: TracedNetwork, where: str, frozen: Frozen | None = None,
                 source: tuple[int, ...] = ()):
        self.t, self.where, self.frozen, self.source = traced, where, frozen, source
        self.used: set[str] = set()  # descriptions of the statistics frozen on the way
        self.largest = 0  # elements of the largest map made

    def unsupported(self, node: torch.fx.Node, why: str = "") -> NoLinearTwin:
        module = f" (module `{node.target}`, {type(self.t.module(node)).__name__})" if node.op == "call_module" else ""
        return NoLinearTwin(
            f"Expanded weights {self.where} pass through `{ops.name_of(node)}`{module}, node `{node.name}`, "
            f"which has no linear twin{': ' + why if why else ''}. Linear operations, activations, pooling, "
            f"batch-norm, reshapes, gates and layer norm can be linearised; choose layers with no such "
            f"operation between them."
        )

    def propagate(self, src: torch.fx.Node | None, dst: torch.fx.Node, columns: slice | None = None,
                  stops: frozenset = frozenset()) -> LinearMap | None:
        """The map from ``src`` (None: the image) to ``dst`` for the source channels
        ``columns`` (all when None); None when ``dst`` does not read ``src``. Paths through
        ``stops`` (the values of other layers) do not count: those values are held fixed."""
        t = self.t
        start = src if src is not None else _placeholder(t)
        needed = {dst} | _ancestors(dst, t)
        waiting = {n: sum(u in needed for u in n.users) for n in needed}  # users still to compute
        maps: dict[torch.fx.Node, Any] = {start: lm.identity(t.values[start].shape[1], columns)}
        for node in t.graph.nodes:
            if dst in maps:
                break
            if node in maps or node not in needed or not t.is_data(node):
                continue
            if node in stops or all(maps.get(p) is None for p in t.inputs(node)):
                maps[node] = None  # a constant as far as the source layer is concerned
            else:
                try:
                    maps[node] = self.twin(node, lambda a: maps.get(a) if isinstance(a, torch.fx.Node) else None)
                except (ValueError, StopIteration, TypeError, KeyError, IndexError, RuntimeError) as error:
                    raise self.unsupported(node, str(error).splitlines()[0] if str(error) else "") from None
                kernel = getattr(maps[node], "kernel", None)
                if kernel is not None:
                    self.largest = max(self.largest, kernel.numel())
            for p in set(node.all_input_nodes):
                waiting[p] = waiting.get(p, 1) - 1
                if waiting[p] <= 0 and p is not start and maps.get(p) is not None:
                    maps[p] = None  # read by nothing else still to come
        m = maps.get(dst)
        if isinstance(m, Rearranged):
            raise self.unsupported(dst, "its value is rearranged positions, not channels")
        return lm.with_boxes(m) if m is not None else None

    def frozen_value(self, node: torch.fx.Node, what: str) -> torch.Tensor:
        if self.frozen is None:
            self.frozen = freeze(self.t, noise_images(self.t.values[_placeholder(self.t)].shape[1:]),
                                 f"{REFERENCE_IMAGES} noise images")
        scope = list(node.meta.get("nn_module_stack", {}))  # a function: name the module that calls it
        name = node.target if node.op == "call_module" else ".".join(scope[-1:] + [ops.name_of(node)])
        self.used.add(f"{what} `{name}` frozen at its mean over {self.frozen.description}")
        return self.frozen.values[node]

    def twin(self, node: torch.fx.Node, operand) -> Any:
        """The map at ``node`` from the maps of its operands (``operand(arg)``; None: a constant)."""
        t = self.t
        if node.op == "call_module":
            return self._module(node, t.module(node), operand(node.args[0]))
        name = ops.name_of(node)
        args = torch.fx.node.map_arg(node.args, lambda n: t.values[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: t.values[n])
        if t.concat(node):
            parts = node.args[0]
            return lm.combined([operand(p) for p in parts], [t.values[p].shape[1] for p in parts], stack=True)
        if node.target in ops.SUMS or node.target in ops.DIFFERENCES:
            if "alpha" in node.kwargs:
                raise ValueError("a sum with alpha")
            first, second = operand(node.args[0]), operand(node.args[1])
            if node.target in ops.DIFFERENCES and second is not None:
                second = lm.scale(second, -1.0)
            return lm.combined([first, second], [t.values[node].shape[1]] * 2, stack=False)
        if name in ops.PRODUCTS | ops.QUOTIENTS:
            return self._product(node, name, args, operand)
        x = operand(node.args[0])
        if x is None or any(operand(a) is not None for a in node.all_input_nodes if a is not node.args[0]):
            raise ValueError("it combines several tensors that depend on the first layer")
        if name in ops.SHAPE_FUNCTIONS:
            return self._rearrange(node, x)
        if ops.identity_twin(None, name):
            return x
        if ops.slope(None, name) is not None:
            return _scaled(x, ops.slope(None, name))
        if name == "neg":
            return _scaled(x, -1.0)
        if name == "layer_norm":
            return self._layer_norm(node, x)
        if name == "linear":
            return self._linear(x, args[1])
        if name == "getitem":
            return x[args[1]] if isinstance(x, tuple) else self._rearrange(node, x)
        if isinstance(x, Rearranged):
            raise ValueError(f"`{name}` on rearranged positions")
        if name in ("chunk", "split", "tensor_split"):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
            if dim % t.values[node.args[0]].dim() != 1:
                raise ValueError("a split along other than channels")
            edges = np.cumsum([0] + [v.shape[1] for v in t.values[node]]).tolist()
            return tuple(replace(x, kernel=x.kernel[a:b]) for a, b in zip(edges, edges[1:]))
        if name in ("max_pool2d", "avg_pool2d"):
            params = _arguments(args[1:], kwargs, ("kernel_size", "stride", "padding", "dilation"), (None, None, 0, 1))
            if name == "avg_pool2d":
                params["dilation"] = 1
            return lm.pool(x, params["kernel_size"], params["stride"], params["padding"], params["dilation"])
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "interpolate", "upsample"):
            return self._resample(node, x)
        if name in ("mean", "sum"):
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            dims = {d % t.values[node.args[0]].dim() for d in ((dims,) if isinstance(dims, int) else dims)}
            if dims != {2, 3}:
                raise ValueError(f"a {name} over other than the two spatial axes")
            positions = math.prod(t.values[node.args[0]].shape[2:])
            return _scaled(lm.pooled_globally(x), positions if name == "sum" else 1.0)
        if name == "pad":
            pad = args[1] if len(args) > 1 else kwargs["pad"]
            if len(pad) != 4:
                raise ValueError("padding of other than the two spatial axes")
            return replace(x, offset=(x.offset[0] - pad[2] * x.stride[0], x.offset[1] - pad[0] * x.stride[1]))
        if name == "batch_norm":
            var, weight = args[2], (args[3] if len(args) > 3 else kwargs.get("weight"))
            eps = kwargs.get("eps", args[7] if len(args) > 7 else 1e-5)
            return lm.scale(x, (weight if weight is not None else 1.0) / torch.sqrt(var + eps))
        if name == "conv2d":
            params = _arguments(args[2:], kwargs, ("bias", "stride", "padding", "dilation", "groups"), (None, 1, 0, 1, 1))
            return lm.conv(x, args[1], params["stride"], _padding(params["padding"], args[1], params["dilation"]),
                           params["dilation"], params["groups"])
        raise self.unsupported(node)

    def _module(self, node: torch.fx.Node, module: nn.Module, x) -> Any:
        if isinstance(module, ops.SHAPE_MODULES):
            return self._rearrange(node, x)
        if isinstance(module, nn.Linear):
            return self._linear(x, module.weight.detach())
        if isinstance(module, nn.LayerNorm):
            return self._layer_norm(node, x)
        if ops.identity_twin(module, ""):
            return x
        if ops.slope(module, "") is not None:
            return _scaled(x, ops.slope(module, ""))
        if isinstance(x, Rearranged):
            raise ValueError(f"{type(module).__name__} on rearranged positions")
        if isinstance(module, nn.Conv2d):
            return lm.conv(x, module.weight.detach(), module.stride,
                           _padding(module.padding, module.weight, module.dilation), module.dilation, module.groups)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training or module.running_var is None:
                raise ValueError("batch-norm in training mode has no fixed scale; call model.eval()")
            weight = module.weight.detach() if module.weight is not None else 1.0
            return lm.scale(x, weight / torch.sqrt(module.running_var + module.eps))
        if isinstance(module, ops.POOL_MODULES):
            return lm.pool(x, module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))
        if isinstance(module, ops.ADAPTIVE_MODULES + (nn.Upsample,)):
            return self._resample(node, x)
        if isinstance(module, nn.ConvTranspose2d):
            if max(lm.pair(module.stride)) > 1 or module.groups != 1 or max(lm.pair(module.dilation)) > 1:
                raise ValueError("a strided transposed convolution gives units at even and odd positions "
                                 "different kernels, so no one kernel per pair of units")
            # with stride 1 it is a convolution by the flipped kernel, padded on the other side
            weight = module.weight.detach().transpose(0, 1).flip((2, 3))
            padding = tuple(k - 1 - p for k, p in zip(weight.shape[2:], lm.pair(module.padding)))
            return lm.conv(x, weight, 1, padding, 1, 1)
        raise self.unsupported(node)

    def _product(self, node: torch.fx.Node, name: str, args, operand) -> Any:
        """A product or quotient: by a constant, or (a gate) by a tensor frozen at its mean.
        A gate is frozen whether or not it depends on the source layer (it may be held as
        another layer's value)."""
        dependent = [i for i, a in enumerate(node.args[:2]) if operand(a) is not None]
        gates = [i for i in (0, 1) if isinstance(node.args[i], torch.fx.Node) and _is_gate(self.t, node.args[i])]
        if name in ops.PRODUCTS and len(gates) == 1 and 1 - gates[0] in dependent:
            return lm.scale(operand(node.args[1 - gates[0]]), self.frozen_value(node.args[gates[0]], "gate"))
        if len(dependent) == 2:
            raise ValueError("a product of two tensors that depend on the first layer")
        if len(dependent) != 1 or (name in ops.QUOTIENTS and dependent == [1]):
            raise ValueError("a quotient by a tensor that depends on the first layer")
        x, constant = operand(node.args[dependent[0]]), args[1 - dependent[0]]
        if isinstance(constant, torch.Tensor) and constant.numel() != 1:
            channels = self.t.values[node].shape[1]
            if isinstance(x, Rearranged) or constant.numel() != channels or \
                    constant.shape[-2:] != (1, 1) and constant.dim() >= 2:
                raise ValueError("a product with a tensor that is not one factor per channel")
            factors = constant.reshape(-1).detach()
            return lm.scale(x, 1 / factors if name in ops.QUOTIENTS else factors)
        constant = float(constant)
        return _scaled(x, 1 / constant if name in ops.QUOTIENTS else constant)

    def _rearrange(self, node: torch.fx.Node, x) -> Any:
        """A reshape, permute or flatten: the same rearrangement of the map's elements."""
        t = self.t
        value = t.values[node.args[0]]
        if isinstance(x, Rearranged):
            grid, current = x.grid, x.elements
        else:
            grid = tuple(value.shape[1:]) if x.spatial else (value[0].numel(), 1, 1)
            current = lm.canonical(grid).reshape(value.shape[1:])
        moved = _apply(t, node, current[None])
        if not isinstance(moved, torch.Tensor) or moved.shape[0] != 1:
            raise ValueError("a rearrangement across images")
        return lm.rearranged(x, grid, moved[0])

    def _linear(self, x, weight: torch.Tensor) -> LinearMap | Rearranged:
        weight = weight.detach()
        if isinstance(x, Rearranged):
            if x.elements.dim() == 1:
                return lm.placed(x, weight, self.source)
            if x.axes is not None and x.axes[-1] == 0:
                return lm.channels_last_mix(x, weight)
            raise ValueError("a linear layer over other than channels or flattened positions")
        if x.spatial and x.kernel.shape[2:] != (1, 1):
            raise ValueError("a linear layer reading positions that were not flattened")
        if weight.shape[1] != x.kernel.shape[0]:
            raise ValueError("a linear layer whose inputs are not the channels")
        return lm.mixed(LinearMap(x.kernel, spatial=False, placed=x.placed), weight)

    def _layer_norm(self, node: torch.fx.Node, x) -> Any:
        """Layer norm over channels, its deviation frozen: ``weight * (x - mean over channels) / deviation``."""
        shape, weight, _ = _norm_parameters(self.t, node)
        if isinstance(x, Rearranged) and x.axes is not None and x.axes[-1] == 0 and shape == (x.grid[0],):
            channels = x.grid[0]
        elif isinstance(x, LinearMap) and not x.spatial and shape == (x.kernel.shape[0],) == \
                tuple(self.t.values[node.args[0]].shape[-1:]):
            channels = x.kernel.shape[0]  # after global pooling: the channels are all there is
        else:
            raise ValueError("layer norm over other than the channels of each position")
        centre = torch.eye(channels) - 1 / channels
        deviation = self.frozen_value(node, "layer norm deviation")
        matrix = (weight.detach() if weight is not None else torch.ones(channels))[:, None] * centre / deviation
        return lm.channels_last_mix(x, matrix) if isinstance(x, Rearranged) else lm.mixed(x, matrix)

    def _resample(self, node: torch.fx.Node, x) -> Any:
        """Adaptive pooling and interpolation: a pool or global pool where they are one, else a
        per-channel resampling of positions measured on unit images."""
        t = self.t
        before, after = t.values[node.args[0]], t.values[node]
        if isinstance(x, LinearMap) and not x.spatial:
            if after.shape[2:] == (1, 1):
                return x
            raise ValueError("a resampling after global pooling")
        (h, w), (oh, ow) = before.shape[2:], after.shape[2:]
        name = ops.name_of(node) if node.op != "call_module" else type(t.module(node)).__name__
        if (oh, ow) == (1, 1) and "adaptive" in name.lower():
            return lm.pooled_globally(x)
        if (oh, ow) == (h, w):
            return x
        if "adaptive" in name.lower() and h % oh == 0 and w % ow == 0:
            return lm.pool(x, (h // oh, w // ow), (h // oh, w // ow), 0)
        impulses = torch.eye(h * w).reshape(h * w, 1, h, w)
        with torch.no_grad():
            linear = _apply(t, node, impulses, linearised=True)
        positions = linear.reshape(h * w, oh * ow).T.contiguous()
        if isinstance(x, Rearranged):
            raise ValueError("a resampling of rearranged positions")
        return lm.resampled(x, tuple(before.shape[1:]), positions, (oh, ow))


def _is_gate(t: TracedNetwork, node: torch.fx.Node) -> bool:
    """A squashed factor with one value per channel: the gate of a squeeze-and-excitation."""
    value = t.values[node]
    return ops.slope(t.module(node), ops.name_of(node)) is not None and value.dim() == 4 and value.shape[2:] == (1, 1)


def _scaled(x, factor: float):
    if isinstance(x, Rearranged):
        return replace(x, base=lm.scale(x.base, factor))
    return lm.scale(x, factor)


def _apply(t: TracedNetwork, node: torch.fx.Node, data: torch.Tensor, linearised: bool = False) -> Any:
    """``node``'s operation on ``data`` in place of its first argument (other arguments as traced).
    ``linearised``: max-pooling as average pooling."""
    args = torch.fx.node.map_arg(node.args, lambda n: t.values[n])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: t.values[n])
    if node.op == "call_module":
        module = t.module(node)
        if linearised and isinstance(module, nn.AdaptiveMaxPool2d):
            return F.adaptive_avg_pool2d(data, module.output_size)
        return module(data)
    if node.op == "call_method":
        return getattr(data, node.target)(*args[1:], **kwargs)
    target = node.target
    if linearised and ops.name_of(node) == "adaptive_max_pool2d":
        target = F.adaptive_avg_pool2d
    return target(data, *args[1:], **kwargs)


def _placeholder(t: TracedNetwork) -> torch.fx.Node:
    return next(n for n in t.graph.nodes if n.op == "placeholder")


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
        d = lm.pair(dilation)
        return tuple(d[i] * (weight.shape[2 + i] - 1) // 2 for i in range(2))
    return lm.pair(padding)


def _ancestors(node: torch.fx.Node, t: TracedNetwork) -> set:
    seen, stack = set(), [node]
    while stack:
        for p in t.inputs(stack.pop()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _resolve(network: TracedNetwork, graph: LayerGraph, name: str | None) -> torch.fx.Node | None:
    """The node whose value a layer (or module) name means; None is the input image."""
    if name is None:
        return None
    if name in graph.values:
        return network.node(graph.values[name])
    calls = [n for n in network.graph.nodes if n.op == "call_module" and n.target == name]
    if len(calls) == 1:
        return calls[0]
    if len(calls) > 1:
        raise AtlasError(f"Module `{name}` is called {len(calls)} times in the forward pass; name a browsed layer instead.")
    graph.layer(name)  # raises the error that lists the browsed layers
    raise AssertionError("unreachable")


def _source(network: TracedNetwork, src: torch.fx.Node | None) -> torch.Tensor:
    """The (blank) value of the source layer, or of the image."""
    return network.values[src if src is not None else _placeholder(network)]


def linear_map(network: TracedNetwork, graph: LayerGraph, src: str | None, dst: str,
               frozen: Frozen | None = None, held: tuple[str, ...] = ()) -> LinearMap:
    """The expanded map from ``src`` (a layer or module name; None: the image) to ``dst``;
    paths through the layers ``held`` do not count (their values are held fixed)."""
    where = f"from `{src or 'the input image'}` to `{dst}`"
    source, target = _resolve(network, graph, src), _resolve(network, graph, dst)
    stops = frozenset(_resolve(network, graph, name) for name in held)
    result = _Linearised(network, where, frozen, tuple(_source(network, source).shape[2:])).propagate(
        source, target, stops=stops)
    if result is None:
        raise AtlasError(f"Expanded weights {where}: the second layer does not read the first one.")
    return result


def expanded_weights(model: nn.Module, src: str, dst: str, input_shape: tuple[int, int, int],
                     reference: torch.Tensor | None = None) -> torch.Tensor:
    """The expanded weights from layer ``src`` to layer ``dst`` of ``model``.

    ``src`` and ``dst`` are browsed layer names (see :func:`generator.trace_layers`) or
    module names from ``model.named_modules()``; ``input_shape`` is the model input's
    ``(channels, height, width)``. Gates and layer norms on the way are frozen at their
    mean over ``reference`` images (as the model reads them; default: 16 normal-noise images).

    Returns ``[C_dst, C_src, kh, kw]``; ``[C_dst, C_src]`` when ``dst`` is not spatial
    (after global pooling, such as a classifier); ``[C_dst, C_src, H_src, W_src]`` when
    ``dst`` reads ``src``'s positions through a flatten (a dense layer). Centring
    convention for spatial ``dst``: for a unit at ``(y, x)`` far from the image border,
    ``kernel[:, :, i, j]`` weighs the ``src`` position ``(y * sy + oy + i, x * sx + ox + j)``,
    where ``(sy, sx)`` is the total stride between the layers and ``(oy, ox)`` the offset
    their paddings add up to. The window is exactly the set of ``src`` positions that can
    reach the unit; zeros fill it where one branch reaches less far than another. Use
    :func:`linear_map` for the stride and offset.
    """
    model.eval()
    network, graph = trace_layers(model, input_shape)
    frozen = freeze(network, reference, f"{len(reference)} images") if reference is not None else None
    result = linear_map(network, graph, src, dst, frozen)
    return result.kernel[:, :, 0, 0] if not result.spatial and not result.placed else result.kernel


@dataclass(frozen=True)
class LayerWeights:
    """The weights from every unit of ``src`` to every unit of ``dst``, ``hops`` layers apart.

    ``kernel[o, i]`` joins unit ``o`` of ``dst`` to unit ``i`` of ``src`` (None: the
    image's channels). ``direct[o]`` says that unit ``o`` reads ``src`` through one
    weight layer and per-channel operations only, so its kernel is the stored kernel
    itself, not an expansion through pooling, bottlenecks or branches. ``placed``: the
    kernels are maps over ``src``'s positions (a dense layer reading a flattened map).
    ``frozen`` names the gates and norms frozen on the way, and over what.
    """

    src: str | None
    dst: str
    hops: int
    kernel: np.ndarray  # float32 [dst units, src units, kh, kw]
    direct: np.ndarray  # bool [dst units]
    placed: bool = False
    frozen: tuple[str, ...] = ()


@dataclass
class ComposedWeights:
    """What :func:`layer_weights` composed, and the pairs it skipped with the reason."""

    weights: list[LayerWeights] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def layer_weights(network: TracedNetwork, graph: LayerGraph, hops: int = 1, frozen: Frozen | None = None,
                  memory_mb: int = MEMORY_MB) -> ComposedWeights:
    """Weights between adjacent layers, and between layers up to ``hops`` apart.

    A pair with an operation that has no linear twin, or whose map would need more than
    ``memory_mb``, is skipped with its reason. Each map is composed for as many source
    channels at a time as fit in ``memory_mb``; its size is known from one channel first.
    """
    result = ComposedWeights()
    if frozen is None and needs_reference(network):
        frozen = freeze(network, noise_images(graph.input_shape), f"{REFERENCE_IMAGES} noise images")
    pairs: dict[str | None, list[tuple[str, int]]] = {}
    for distance in range(1, hops + 1):
        found = graph.adjacent if distance == 1 else [
            (src, layer.name) for layer in graph.layers for src in graph.upstream(layer.name, distance)]
        for src, dst in found:
            pairs.setdefault(src, []).append((dst, distance))
    # Between adjacent layers only the paths that pass no other layer count (a dense block's
    # layers also reach a transition through each other); further hops go through them.
    others = frozenset(network.node(node) for node in graph.values.values())
    with torch.no_grad():
        for src, targets in pairs.items():
            source = _resolve(network, graph, src)
            linearised = _Linearised(network, "", frozen, tuple(_source(network, source).shape[2:]))
            for dst, distance in targets:
                linearised.where, linearised.used = f"from `{src or 'the input image'}` to `{dst}`", set()
                target = _resolve(network, graph, dst)
                try:
                    composed = _composed(linearised, source, target,
                                         others - {source, target} if distance == 1 else frozenset(), memory_mb)
                except Skipped as error:
                    result.skipped.append(f"{src} -> {dst}: {error}")
                    continue
                if composed is None:
                    continue
                kernel, placed = composed
                if not np.isfinite(kernel).all():
                    raise AtlasError(
                        f"The weights between `{src or 'the input image'}` and `{dst}` are not finite (NaN or "
                        f"infinity): the checkpoint comes from a diverged or damaged run. Use another checkpoint.")
                direct = np.zeros(len(kernel), dtype=bool)
                if distance == 1:
                    for c in graph.connections:
                        if c.src == src and c.dst == dst and all(_keeps_kernel(network, op) for op in c.before):
                            direct[c.start : c.stop] = True
                result.weights.append(LayerWeights(src, dst, distance, kernel, direct, placed,
                                                   tuple(sorted(linearised.used))))
    return result


def _composed(linearised: _Linearised, source: torch.fx.Node | None, target: torch.fx.Node, stops: frozenset,
              memory_mb: int) -> tuple[np.ndarray, bool] | None:
    """``(kernel, placed)`` of one pair, composed a slice of source channels at a time; None
    when ``target`` does not read ``source``. A map larger than ``memory_mb`` is skipped."""
    budget = memory_mb * 2**20
    channels = _source(linearised.t, source).shape[1]
    linearised.largest = 0
    one = linearised.propagate(source, target, slice(0, 1), stops)  # its size tells the whole map's
    if one is None:
        return None
    size = 4 * channels * one.kernel[:, 0].numel()
    if size > budget:
        raise Skipped(f"the expanded weights would take {size / 2**20:,.0f} MB, more than `ranking.memory_mb` "
                      f"({memory_mb:,} MB); raise it, or leave one of the layers out")
    step = max(1, budget // (16 * max(linearised.largest, 1)))
    if step >= channels:  # all at once, and no copy
        whole = one if channels == 1 else linearised.propagate(source, target, None, stops)
        return whole.kernel.float().contiguous().numpy(), one.placed
    kernel = np.empty((one.kernel.shape[0], channels, *one.kernel.shape[2:]), dtype=np.float32)
    for start in range(0, channels, step):
        kernel[:, start : start + step] = linearised.propagate(source, target, slice(start, start + step),
                                                               stops).kernel.float().numpy()
    return kernel, one.placed


def _keeps_kernel(network: TracedNetwork, op: str) -> bool:
    """An operation that leaves kernels as they are: not a pooling or padding."""
    module = network.modules.get(op)
    if module is not None:
        return ops.per_channel(module, op) or isinstance(module, ops.SHAPE_MODULES)
    return ops.per_channel(None, op) or op in ops.SHAPE_FUNCTIONS
