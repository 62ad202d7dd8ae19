"""Expanded weights: the linear map between two layers of the linearised network.

Every operation between the two layers is replaced by its nearest linear twin (as in the
Distill article "Visualizing Weights"; each operation's twin is its entry in
:mod:`generator.operations`): ReLU-like activations, dropout and local response norm become the
identity, squashing activations their slope at zero, max-pooling average pooling of the same
window, eval-mode batch-norm keeps only its scale, and biases and other constants drop out.
Reshapes, permutes, flattens and channel shuffles move weights without changing them. Two
operations mix channels non-linearly and are linearised with a statistic frozen at its mean
over reference images (the dataset when the atlas has one, otherwise noise): a
squeeze-and-excitation gate (``x * sigmoid(f(x))``) becomes a per-channel scale, layer norm
over channels divides by a fixed deviation, and group norm by a fixed deviation per group.
The maps are composed directly (:mod:`generator.linear_maps`): no backward pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.fx
from torch import nn

from . import linear_maps as lm
from . import operations as ops
from .config import RankingConfig
from .errors import AtlasError
from .graph import LayerGraph, trace_layers
from .images import REFERENCE_IMAGES, reference_images
from .network import TracedNetwork, ancestors
from .linear_maps import LinearMap, Rearranged

MEMORY_MB = RankingConfig.memory_mb  # default budget for one composed map
SLICE_MB = 128  # a map is composed a slice of source channels at a time, its steps' maps within about this
WHOLE_CHANNELS = 32  # a source this narrow is composed whole, with no one-channel probe of its map's size first


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
    return [a for node in t.graph.nodes if (op := ops.operation_of(t, node)) is not None and op.role == ops.PRODUCT
            and len(t.inputs(node)) == 2 for a in t.inputs(node) if ops.is_gate(t, a)]


def _norms(t: TracedNetwork) -> list[torch.fx.Node]:
    """The normalisations whose statistics are frozen over reference images (layer and group norm)."""
    return [n for n in t.graph.nodes if (op := ops.operation_of(t, n)) is not None and op.statistic is not None]


def needs_reference(t: TracedNetwork) -> bool:
    """Whether ``t`` has gates or norms, whose statistics are frozen on reference images."""
    return bool(_gates(t) or _norms(t))


def freeze(t: TracedNetwork, images: torch.Tensor, description: str) -> Frozen:
    """Measure every gate and norm of ``t`` on ``images`` (as the model reads them): a gate's mean,
    a norm's statistic (its entry's, such as a layer norm's mean deviation)."""
    gates, norms = _gates(t), _norms(t)
    inputs = {n: t.inputs(n)[0] for n in norms}
    values = t.evaluate(images, keep=set(gates) | set(inputs.values()))
    frozen = {g: values[g].mean(dim=0).reshape(-1) for g in gates}
    for n in norms:
        second, _, eps = ops.norm_parameters(t, n)
        frozen[n] = ops.operation_of(t, n).statistic(values[inputs[n]], second, eps)
    return Frozen(description, frozen)


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
            f"batch-norm, reshapes, gates, layer and group norm can be linearised; choose layers with no such "
            f"operation between them."
        )

    def propagate(self, src: torch.fx.Node | None, dst: torch.fx.Node, columns: slice | None = None,
                  stops: frozenset = frozenset(), compact: bool = False
                  ) -> LinearMap | lm.Stacked | lm.Placed | None:
        """The map from ``src`` (None: the image) to ``dst`` for the source channels
        ``columns`` (all when None); None when ``dst`` does not read ``src``. Paths through
        ``stops`` (the values of other layers) do not count: those values are held fixed.
        ``compact``: the map as the layer pass holds it: a ``dst`` that concatenates branches
        keeps its parts (:class:`.linear_maps.Stacked`), a dense layer reading positions its
        weight unspread (:class:`.linear_maps.Placed`)."""
        t = self.t
        start = src if src is not None else _placeholder(t)
        needed = {dst} | ancestors(dst, t.inputs)
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
                if isinstance(maps[node], lm.Stacked) and node is not dst:
                    maps[node] = maps[node].dense()  # read by the operations after it
                self.largest = max(self.largest, _elements(maps[node]))
            for p in set(node.all_input_nodes):
                waiting[p] = waiting.get(p, 1) - 1
                if waiting[p] <= 0 and p is not start and maps.get(p) is not None:
                    maps[p] = None  # read by nothing else still to come
        m = maps.get(dst)
        if isinstance(m, Rearranged):
            raise self.unsupported(dst, "its value is rearranged positions, not channels")
        if isinstance(m, (lm.Stacked, lm.Placed)):
            return m if compact else m.dense()
        return lm.settled(m) if m is not None else None

    def frozen_value(self, node: torch.fx.Node, what: str) -> torch.Tensor:
        if self.frozen is None:
            self.frozen = freeze(self.t, reference_images(self.t.values[_placeholder(self.t)].shape[1:]),
                                 f"{REFERENCE_IMAGES} uniform-noise images")
        scope = list(node.meta.get("nn_module_stack", {}))  # a function: name the module that calls it
        name = node.target if node.op == "call_module" else ".".join(scope[-1:] + [ops.name_of(node)])
        self.used.add(f"{what} `{name}` frozen at its mean over {self.frozen.description}")
        return self.frozen.values[node]

    def twin(self, node: torch.fx.Node, operand) -> Any:
        """The map at ``node`` from the maps of its operands (``operand(arg)``; None: a constant),
        by the linear twin of its entry in :mod:`generator.operations`."""
        op = ops.operation_of(self.t, node)
        if op is None or op.twin is None:
            raise self.unsupported(node)
        if op.twin not in ops.ROW_TWINS:  # a dense layer's map over positions is spread for it
            operand = _spread(operand)
        self.operand = operand
        x = None
        if op.role not in ops.COMBINING:
            x = operand(node.args[0])
            if node.op != "call_module" and (x is None or any(
                    operand(a) is not None for a in node.all_input_nodes if a is not node.args[0])):
                raise ValueError("it combines several tensors that depend on the first layer")
        return op.twin(self, node, x)


def _spread(operand):
    """``operand`` with a dense layer's map over positions (:class:`.linear_maps.Placed`) made
    whole, once for all the twin's reads of it."""
    made: dict = {}

    def read(arg):
        m = operand(arg)
        if not isinstance(m, lm.Placed):
            return m
        if arg not in made:
            made[arg] = m.dense()
        return made[arg]
    return read


def _elements(m) -> int:
    """The number of weights a map holds."""
    if isinstance(m, lm.Stacked):
        return sum(p.kernel.numel() for p in m.parts)
    if isinstance(m, lm.Placed):
        return m.image.numel() + m.base.kernel.numel()
    kernel = getattr(m, "kernel", None)
    return kernel.numel() if kernel is not None else 0


def _placeholder(t: TracedNetwork) -> torch.fx.Node:
    return next(n for n in t.graph.nodes if n.op == "placeholder")


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
               frozen: Frozen | None = None, held: tuple[str, ...] = (), compact: bool = False
               ) -> LinearMap | lm.Stacked | lm.Placed:
    """The expanded map from ``src`` (a layer or module name; None: the image) to ``dst``;
    paths through the layers ``held`` do not count (their values are held fixed). ``compact``:
    the map as the layer pass holds it (a concatenation's parts, a dense layer's weight unspread)."""
    where = f"from `{src or 'the input image'}` to `{dst}`"
    source, target = _resolve(network, graph, src), _resolve(network, graph, dst)
    stops = frozenset(_resolve(network, graph, name) for name in held)
    result = _Linearised(network, where, frozen, tuple(_source(network, source).shape[2:])).propagate(
        source, target, stops=stops, compact=compact)
    if result is None:
        raise AtlasError(f"Expanded weights {where}: the second layer does not read the first one.")
    return result


def expanded_weights(model: nn.Module, src: str, dst: str, input_shape: tuple[int, int, int],
                     reference: torch.Tensor | None = None) -> torch.Tensor:
    """The expanded weights from layer ``src`` to layer ``dst`` of ``model``.

    ``src`` and ``dst`` are browsed layer names (see :func:`generator.trace_layers`) or
    module names from ``model.named_modules()``; ``input_shape`` is the model input's
    ``(channels, height, width)``. Gates and layer norms on the way are frozen at their
    mean over ``reference`` images (as the model reads them; default: :func:`generator.images.reference_images`).

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
    kernel: np.ndarray | KeptKernels  # float32 [dst units, src units, kh, kw], or those kept of it
    direct: np.ndarray  # bool [dst units]
    placed: bool = False
    frozen: tuple[str, ...] = ()
    # Where a kernel lies on ``src`` (spatial kernels): for a unit of ``dst`` at ``(y, x)``,
    # ``kernel[o, i, a, b]`` weighs ``src`` position ``(y * stride[0] + offset[0] + a, x * stride[1] + offset[1] + b)``.
    stride: tuple[int, int] = (1, 1)
    offset: tuple[int, int] = (0, 0)
    spatial: bool = True  # False: after global pooling (or a dense layer), one kernel per pair of units


class KeptKernels:
    """Some of the kernels of one pair's ``[dst units, src units, kh, kw]`` weights: those at
    ``(rows[j], columns[j])``, the rest let go. Indexed like the whole array by a row and a
    column (or arrays of them); a kernel that was not kept is a ``KeyError``."""

    def __init__(self, kernel: np.ndarray, rows: np.ndarray, columns: np.ndarray):
        self.shape, self.dtype = kernel.shape, kernel.dtype
        keys = np.unique(np.asarray(rows, dtype=np.int64) * kernel.shape[1] + np.asarray(columns, dtype=np.int64))
        self.rows, self.columns = keys // kernel.shape[1], keys % kernel.shape[1]
        self._keys, self.kernels = keys, kernel[self.rows, self.columns]  # [kept, kh, kw], a copy

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.kernels.nbytes

    def __getitem__(self, index: tuple) -> np.ndarray:
        return self.kernels[self.find(*index)]

    def find(self, rows, columns) -> np.ndarray:
        """Where the kernels at ``(rows, columns)`` lie in :attr:`kernels` (a ``KeyError`` for one
        not kept)."""
        keys = np.asarray(rows, dtype=np.int64) * self.shape[1] + np.asarray(columns, dtype=np.int64)
        found = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        if not len(self._keys) or np.any(self._keys[found] != keys):
            raise KeyError(f"kernel {rows, columns} was not kept")
        return found


class HeldKernels(ABC):
    """A pair's ``[dst units, src units, kh, kw]`` weights held in less memory than the whole
    array, and read like it: by rows (an int, a slice, an array of them) or by a row and a
    column (ints or arrays of them). :meth:`reduced` maps every kernel to numbers without
    making the whole array."""

    ndim = 4
    dtype = np.dtype(np.float32)
    shape: tuple[int, int, int, int]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    @abstractmethod
    def __getitem__(self, index) -> np.ndarray: ...

    @abstractmethod
    def reduced(self, reduces: list[tuple[Callable, Any]]) -> list[np.ndarray]:
        """Per ``(reduce, dtype)``: ``reduce`` of every kernel (``[rows, src units, kh, kw] -> [rows,
        src units]``, zero for zero kernels and not changed by zeros around a kernel), ``[dst
        units, src units]``; all of them in one reading of the kernels."""


class StackedKernels(HeldKernels):
    """A pair's ``[dst units, src units, kh, kw]`` weights held as the parts its target's branches
    make (:class:`.linear_maps.Stacked`): each part's rows over only the window its branch
    reaches, zero elsewhere. InceptionV1's mixed5a reads mixed4e through 11x11 windows in one
    branch and 3x3 in another: the parts take 126 MB where the whole array takes 320 MB.

    Rows read come padded to the window; :meth:`reduced` reads part by part."""

    def __init__(self, shape: tuple[int, int, int, int], parts: list[tuple[int, int, int, np.ndarray]]):
        self.shape, self.parts = shape, parts  # (first row, y, x, kernel [rows, src units, h, w])
        self._part = np.full(shape[0], -1, dtype=np.int64)  # which part holds each row (-1: none, all zero)
        for j, (row, _, _, kernel) in enumerate(parts):
            self._part[row : row + len(kernel)] = j

    @property
    def nbytes(self) -> int:
        return sum(kernel.nbytes for *_, kernel in self.parts)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, tuple):
            return self._kernels(*_pairs(index, self.shape))
        rows = np.arange(self.shape[0])[index]
        return self._rows(rows) if rows.ndim else self._rows(rows[None])[0]

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        found = np.zeros((len(rows), *self.shape[1:]), dtype=self.dtype)
        for j, (row, y, x, kernel) in enumerate(self.parts):
            here = np.nonzero(self._part[rows] == j)[0]
            if not len(here):
                continue
            taken, (h, w) = rows[here] - row, kernel.shape[2:]
            if here[-1] - here[0] == taken[-1] - taken[0] == len(here) - 1:  # a run of rows: no gather
                found[here[0] : here[-1] + 1, :, y : y + h, x : x + w] = kernel[taken[0] : taken[-1] + 1]
            else:
                found[here, :, y : y + h, x : x + w] = kernel[taken]
        return found

    def _kernels(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        rows, columns = np.broadcast_arrays(rows, columns)
        flat_rows, flat_columns = rows.reshape(-1), columns.reshape(-1)
        found = np.zeros((len(flat_rows), *self.shape[2:]), dtype=self.dtype)
        part = self._part[flat_rows]
        for j, (row, y, x, kernel) in enumerate(self.parts):
            here = np.nonzero(part == j)[0]
            h, w = kernel.shape[2:]
            found[here, y : y + h, x : x + w] = kernel[flat_rows[here] - row, flat_columns[here]]
        return found.reshape(*rows.shape, *self.shape[2:])

    def reduced(self, reduces: list[tuple[Callable, Any]]) -> list[np.ndarray]:
        found = [np.zeros(self.shape[:2], dtype=dtype) for _, dtype in reduces]
        for row, _, _, kernel in self.parts:
            for into, (reduce, _) in zip(found, reduces):
                into[row : row + len(kernel)] = reduce(kernel)
        return found


class PlacedKernels(HeldKernels):
    """A dense layer's ``[dst units, src units, H, W]`` weights over the source's positions, held
    as its weight (:class:`.linear_maps.Placed`) and spread back to positions a block of rows at
    a time when read. VGG-16's fc6 reads conv5_3 through 1.6 GB of them; held, they are fc6's
    own 411 MB weight. Every reading spreads them again, so read them as few times as you can."""

    BLOCK = 2**24  # spread weights per block (64 MB)

    def __init__(self, placed: lm.Placed):
        self.placed, self.shape = placed, placed.shape
        self.block = max(1, self.BLOCK // int(np.prod(self.shape[1:])))  # rows

    @property
    def nbytes(self) -> int:
        image, base = self.placed.image, self.placed.base.kernel
        return image.numel() * image.element_size() + base.numel() * base.element_size()

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, tuple):
            rows, columns = _pairs(index, self.shape)
            found = np.empty((*rows.shape, *self.shape[2:]), dtype=self.dtype)
            for first, spread in self._blocks(np.unique(rows)):
                here = (rows >= first) & (rows < first + len(spread))
                found[here] = spread[rows[here] - first, columns[here]]
            return found
        rows = np.arange(self.shape[0])[index]
        if not rows.ndim:
            return self._spread(int(rows), int(rows) + 1)[0]
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):  # a run: one spread
            return self._spread(int(rows[0]), int(rows[0]) + len(rows))
        found = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for first, spread in self._blocks(np.unique(rows)):
            here = (rows >= first) & (rows < first + len(spread))
            found[here] = spread[rows[here] - first]
        return found

    def reduced(self, reduces: list[tuple[Callable, Any]]) -> list[np.ndarray]:
        found = [np.empty(self.shape[:2], dtype=dtype) for _, dtype in reduces]
        for first, spread in self._blocks(np.arange(self.shape[0])):
            for into, (reduce, _) in zip(found, reduces):
                into[first : first + len(spread)] = reduce(spread)
        return found

    def _spread(self, first: int, stop: int) -> np.ndarray:
        return self.placed.rows(first, stop).float().numpy()

    def _blocks(self, rows: np.ndarray):
        """The blocks of rows that hold any of ``rows`` (sorted): ``(first row, spread kernels)``."""
        for start in np.unique(rows // self.block) * self.block:
            yield int(start), self._spread(int(start), min(int(start) + self.block, self.shape[0]))


def _pairs(index: tuple, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The kernels a ``(rows, columns)`` index names, as broadcast arrays of rows and of columns:
    ints or arrays of them, negative ones counted from the end; one out of range is an IndexError."""
    if len(index) != 2 or any(isinstance(i, slice) for i in index):
        raise IndexError(f"kernels are read by a row and a column (ints or arrays of them), not {index!r}")
    rows, columns = np.arange(shape[0])[np.asarray(index[0])], np.arange(shape[1])[np.asarray(index[1])]
    return tuple(np.broadcast_arrays(rows, columns))


def per_kernel(kernel: np.ndarray | HeldKernels, reduce, dtype=np.float64) -> np.ndarray:
    """``reduce`` (``[rows, src units, kh, kw] -> [rows, src units]``, zero for zero kernels and not
    changed by zeros around a kernel) of every kernel of a pair, whole or held
    (:class:`HeldKernels`)."""
    return per_kernel_many(kernel, [(reduce, dtype)])[0]


def per_kernel_many(kernel: np.ndarray | HeldKernels, reduces: list[tuple[Callable, Any]]) -> list[np.ndarray]:
    """:func:`per_kernel` of each ``(reduce, dtype)``, the kernels read once for all of them."""
    if isinstance(kernel, HeldKernels):
        return kernel.reduced(reduces)
    return [reduce(kernel) for reduce, _ in reduces]


@dataclass(frozen=True)
class SkippedPair:
    """A pair of layers whose weights are not shown, and why."""

    source: str | None  # None: the input image
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}: {self.reason}"


@dataclass
class ComposedWeights:
    """What :func:`layer_weights` composed, and the pairs it skipped with the reason."""

    weights: list[LayerWeights] = field(default_factory=list)
    skipped: list[SkippedPair] = field(default_factory=list)


def layer_weights(network: TracedNetwork, graph: LayerGraph, hops: int = 1, frozen: Frozen | None = None,
                  memory_mb: int = MEMORY_MB) -> ComposedWeights:
    """Weights between adjacent layers, and between layers up to ``hops`` apart, all held at
    once (see :func:`composed_by_target` for one target layer at a time)."""
    result = ComposedWeights()
    for _, weights, skipped in composed_by_target(network, graph, hops, frozen, memory_mb):
        result.weights += [replace(w, kernel=np.asarray(w.kernel)) for w in weights]
        result.skipped += skipped
    return result


def composed_by_target(network: TracedNetwork, graph: LayerGraph, hops: int = 1, frozen: Frozen | None = None,
                       memory_mb: int = MEMORY_MB) -> Iterator[tuple[str, list[LayerWeights], list[SkippedPair]]]:
    """Per target layer, in the graph's order: its name, the weights from every layer up to
    ``hops`` before it, and the pairs skipped. One target's weights are composed only when the
    caller asks for them, so it can let the previous target's go first.

    A pair with an operation that has no linear twin, or whose map would need more than
    ``memory_mb``, is skipped with its reason. Each map is composed for as many source
    channels at a time as fit in ``memory_mb``; its size is known from one channel first (a
    source of at most :data:`WHOLE_CHANNELS` channels is composed whole, then measured).
    Kernels are not checked for being finite here: the build's kernel statistics refuse
    those that are not (:class:`generator.ranking.KernelStatistics`).
    """
    if frozen is None and needs_reference(network):
        frozen = freeze(network, reference_images(graph.input_shape), f"{REFERENCE_IMAGES} uniform-noise images")
    pairs: dict[str | None, list[tuple[str, int]]] = {}
    for distance in range(1, hops + 1):
        found = graph.adjacent if distance == 1 else [
            (src, layer.name) for layer in graph.layers for src in graph.upstream(layer.name, distance)]
        for src, dst in found:
            pairs.setdefault(src, []).append((dst, distance))
    # A target's sources in the order the sources are first found (adjacent layers first).
    by_target: dict[str, list[tuple[str | None, int]]] = {layer.name: [] for layer in graph.layers}
    for src, targets in pairs.items():
        for dst, distance in targets:
            by_target[dst].append((src, distance))
    # Between adjacent layers only the paths that pass no other layer count (a dense block's
    # layers also reach a transition through each other); further hops go through them.
    others = frozenset(network.node(node) for node in graph.values.values())
    for dst, sources in by_target.items():
        weights, skipped = [], []  # the previous target's are let go here, before any of these is composed
        for src, distance in sources:
            try:
                weights.append(_pair_weights(network, graph, frozen, src, dst, distance,
                                             others if distance == 1 else None, memory_mb))
            except Skipped as error:
                skipped.append(SkippedPair(src, dst, str(error)))
        weights = [w for w in weights if w is not None]  # None: ``dst`` does not read that source
        if weights or skipped:
            yield dst, weights, skipped


def _pair_weights(network: TracedNetwork, graph: LayerGraph, frozen: Frozen | None, src: str | None, dst: str,
                  distance: int, others: frozenset | None, memory_mb: int) -> LayerWeights | None:
    """The weights from ``src`` to ``dst`` (None: ``dst`` does not read ``src``); paths through
    ``others`` (adjacent layers: the other layers' values) do not count."""
    source, target = _resolve(network, graph, src), _resolve(network, graph, dst)
    linearised = _Linearised(network, f"from `{src or 'the input image'}` to `{dst}`", frozen,
                             tuple(_source(network, source).shape[2:]))
    with torch.no_grad():
        composed = _composed(linearised, source, target,
                             others - {source, target} if others is not None else frozenset(), memory_mb)
    if composed is None:
        return None
    kernel, window = composed
    if src is None:
        kernel = np.asarray(kernel)  # a first layer's colour kernels are read whole
    direct = np.zeros(len(kernel), dtype=bool)
    if distance == 1:
        for c in graph.connections:
            if c.src == src and c.dst == dst and all(_keeps_kernel(network, op) for op in c.before):
                direct[c.start : c.stop] = True
    return LayerWeights(src, dst, distance, kernel, direct, window.placed, tuple(sorted(linearised.used)),
                        window.stride, window.offset, window.spatial)


def _composed(linearised: _Linearised, source: torch.fx.Node | None, target: torch.fx.Node, stops: frozenset,
              memory_mb: int) -> tuple[np.ndarray | StackedKernels | PlacedKernels, LinearMap | lm.Stacked | lm.Placed
                                       ] | None:
    """The kernel of one pair, composed a slice of source channels at a time (a target that
    concatenates branches keeps its parts: :class:`StackedKernels`; a dense layer reading
    positions is held as its weight: :class:`PlacedKernels`), and a map with its window
    (stride, offset, spatial, placed); None when ``target`` does not read ``source``. A map
    larger than ``memory_mb`` is skipped, unless it is placed: held as the dense layer's
    weight, it takes no more than that."""
    budget = memory_mb * 2**20
    channels = _source(linearised.t, source).shape[1]
    linearised.largest = 0
    # One channel's map tells the whole map's size. A narrow source is composed whole at once
    # and measured then (DenseNet's 32-channel layers: the probe cost about as much as the map):
    # it takes at most WHOLE_CHANNELS times one channel's map, before a map over budget is skipped.
    probed = 1 if channels > WHOLE_CHANNELS else channels
    one = linearised.propagate(source, target, slice(0, probed), stops, compact=True)
    if one is None:
        return None
    if isinstance(one, lm.Placed):  # held as the dense layer's weight, whatever the spread size
        whole = one if probed == channels else linearised.propagate(source, target, None, stops, compact=True)
        return PlacedKernels(whole), whole
    size = 4 * channels // probed * _elements(one)
    if size > budget:
        raise Skipped(f"the expanded weights would take {size / 2**20:,.0f} MB, more than `ranking.memory_mb` "
                      f"({memory_mb:,} MB); raise it, or leave one of the layers out")
    step = channels if probed == channels else \
        max(1, min(budget, SLICE_MB * 2**20) // (16 * max(linearised.largest, 1)))
    if step >= channels:  # all at once, and no copy
        whole = one if probed == channels else linearised.propagate(source, target, None, stops, compact=True)
        kernels = [k.float().contiguous().numpy() for k in _kernels(whole)]
    else:
        kernels = [np.empty((len(k), channels, *k.shape[2:]), dtype=np.float32) for k in _kernels(one)]
        for start in range(0, channels, step):
            part = linearised.propagate(source, target, slice(start, start + step), stops, compact=True)
            for kernel, composed in zip(kernels, _kernels(part)):
                kernel[:, start : start + step] = composed.float().numpy()
    if isinstance(one, lm.Stacked):
        shape = (one.shape[0], channels, *one.shape[2:])
        return StackedKernels(shape, [(p.row, p.y, p.x, k) for p, k in zip(one.parts, kernels)]), one
    return kernels[0], one


def _kernels(m: LinearMap | lm.Stacked) -> list[torch.Tensor]:
    return [p.kernel for p in m.parts] if isinstance(m, lm.Stacked) else [m.kernel]


def _keeps_kernel(network: TracedNetwork, op: str) -> bool:
    """An operation (named as a connection names it: a module or a function) that leaves kernels
    as they are: not a pooling or padding."""
    return ops.keeps_kernel(ops.operation(network.modules.get(op), op))
