"""Rank every unit's connections: its strongest inputs and outputs.

Inputs are ranked by the L2 norm of their kernels. Outputs are ranked by their *share* of
the unit they feed: the kernel's L2 norm over the L2 norm of all that unit's inputs. Raw
L2 would favour whole branches (a 5x5 kernel has more weights than a 1x1 one, a branch
behind a bottleneck smaller ones than a direct one); the share lets every branch and
kernel size compete on equal terms.

A kernel's *sign* is the sign of its sum (net excitation or inhibition). Every kernel
keeps the *scale* of its output unit: the largest absolute weight over all of that unit's
inputs from the same layer, so tiles of one unit compare with each other and only the
strongest saturates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .errors import AtlasError
from .expanded import HeldKernels, KeptKernels, LayerWeights, per_kernel, per_kernel_many
from .graph import LayerGraph


@dataclass(slots=True)
class Link:
    """One weighted connection seen from one of its ends; ``layer``/``unit`` is the other end."""

    layer: str
    unit: int
    l2: float
    sign: int  # +1 excitatory, -1 inhibitory, 0 balanced
    peak: float  # largest absolute weight of this kernel
    scale: float  # largest absolute weight over all inputs of the output unit from this layer
    direct: bool  # the stored kernel itself, not an expansion
    weights: LayerWeights  # where the kernel is: weights.kernel[row, column]
    row: int
    column: int
    share: float = 0.0  # for an output: l2 over the L2 norm of all inputs of the unit it feeds
    rank: int = 0  # for an input found beyond the listed ones: how many of the unit's inputs are stronger
    kept: int = -1  # where the kernel lies among the pair's kept kernels (-1: all are kept)

    @property
    def kernel(self) -> np.ndarray:
        """The ``[kh, kw]`` kernel."""
        if self.kept >= 0:
            return self.weights.kernel.kernels[self.kept]
        return self.weights.kernel[self.row, self.column]


# One row per link of :class:`Links`: which of its pairs, the kernel's place in it, the unit at the
# other end, where the kernel lies among the pair's kept ones, and the scale and share it is shown with.
LINK_ROW = np.dtype([("part", np.int16), ("row", np.int32), ("column", np.int32), ("unit", np.int32),
                     ("kept", np.int32), ("scale", np.float64), ("share", np.float64)])


class Links(Sequence):
    """One unit's ranked links, strongest first, held as a table of numbers (:data:`LINK_ROW`) and
    made into :class:`Link` objects when read: a build ranks hundreds of thousands of links
    (InceptionV1: 380,000), which as objects would take about 100 MB."""

    __slots__ = ("parts", "layers", "table")

    def __init__(self, parts: tuple[KernelStatistics, ...], layers: tuple[str | None, ...], table: np.ndarray):
        self.parts, self.layers, self.table = parts, layers, table  # layers: the other end's, per part

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._made(self.table[index])
        return self._made(self.table[[index]])[0]

    def __iter__(self):
        return iter(self._made(self.table))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __add__(self, other) -> list[Link]:
        return list(self) + list(other)

    def __radd__(self, other) -> list[Link]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"Links({list(self)!r})"

    def places(self) -> Iterator[tuple[LayerWeights, np.ndarray, np.ndarray]]:
        """Per pair of layers, the rows and columns of its kernels among these links, with no
        :class:`Link` made."""
        for j, stats in enumerate(self.parts):
            here = self.table["part"] == j
            yield stats.weights, self.table["row"][here], self.table["column"][here]

    def _made(self, table: np.ndarray) -> list[Link]:
        made: list = [None] * len(table)
        for j, stats in enumerate(self.parts):  # each part's links at once, into their places
            here = np.flatnonzero(table["part"] == j)
            rows, columns, w = table["row"][here], table["column"][here], stats.weights
            for place, o, i, unit, l2, sign, peak, scale, direct, share, slot in zip(
                    here.tolist(), rows.tolist(), columns.tolist(), table["unit"][here].tolist(),
                    stats.l2[rows, columns].tolist(), stats.sign[rows, columns].tolist(),
                    stats.peak[rows, columns].tolist(), table["scale"][here].tolist(), w.direct[rows].tolist(),
                    table["share"][here].tolist(), table["kept"][here].tolist()):
                made[place] = Link(self.layers[j], unit, l2, sign, peak, scale, direct, w, o, i, share, kept=slot)
        return made


def _links(parts: list[KernelStatistics], l2: np.ndarray, top: np.ndarray, axis: int, scale: np.ndarray,
           share: np.ndarray | None = None) -> list[Links]:
    """Per unit, its links to the positions ``top[u]`` (in order) along the concatenation of
    ``parts`` on ``axis`` (1: unit ``u`` is row ``u`` and reads the columns; 0: it is column
    ``u``, read by the rows), whose norms are ``l2``, less those whose kernel is all zeros (no
    connection), each shown with ``scale[u, j]`` and ``share[u, j]``. All units' tables are
    made at once, as one table that each unit's is a slice of."""
    if not len(top):
        return []
    connected = np.take_along_axis(l2 if axis == 1 else l2.T, top, axis=1) > 0
    counts = connected.sum(axis=1)
    chosen, fixed = top[connected], np.repeat(np.arange(len(top)), counts)
    edges = np.cumsum([0] + [p.l2.shape[axis] for p in parts])
    table = np.zeros(len(chosen), dtype=LINK_ROW)
    table["part"] = np.searchsorted(edges, chosen, side="right") - 1
    table["unit"] = chosen - edges[table["part"]]
    table["row" if axis == 1 else "column"] = fixed
    table["column" if axis == 1 else "row"] = table["unit"]
    table["scale"], table["kept"] = scale[connected], -1
    table["share"] = 0.0 if share is None else share[connected]
    for j, p in enumerate(parts):
        here = np.flatnonzero(table["part"] == j)
        if len(here) and isinstance(p.weights.kernel, KeptKernels):
            table["kept"][here] = p.weights.kernel.find(table["row"][here], table["column"][here])
    other = tuple(p.weights.src if axis == 1 else p.weights.dst for p in parts)
    return [Links(tuple(parts), other, rows) for rows in np.split(table, np.cumsum(counts)[:-1])]


@dataclass(frozen=True)
class FurtherInputs:
    """A unit's strongest inputs from a layer more than one step above it (expanded weights)."""

    layer: str
    hops: int
    scale: float
    links: Sequence[Link]


@dataclass
class UnitWeights:
    """What the atlas shows of one unit's weights."""

    layer: str
    unit: int
    inputs: Sequence[Link] = field(default_factory=list)  # a :class:`Links` once ranked
    outputs: Sequence[Link] = field(default_factory=list)
    further: list[FurtherInputs] = field(default_factory=list)
    input_count: int = 0
    output_count: int = 0
    excitatory: int = 0  # inputs whose kernels sum to more than zero
    inhibitory: int = 0
    input_l2: float = 0.0  # L2 norm of all incoming weights together
    scale: float = 0.0  # largest absolute incoming weight
    rgb_kernel: np.ndarray | None = None  # [channels, kh, kw] when the unit reads the image

    def made(self) -> UnitWeights:
        """A copy whose links are made once, as objects: for a page, which reads them many times."""
        return replace(self, inputs=list(self.inputs), outputs=list(self.outputs),
                       further=[replace(f, links=list(f.links)) for f in self.further])


def strongest(scores: np.ndarray, k: int, block: int = 2**22) -> np.ndarray:
    """Per row of ``scores`` (2-D), the indices of the ``k`` largest, strongest first, ties by
    index; rows are taken ``block`` scores at a time, which bounds the temporary arrays.

    torch's top-k finds each row's ``k + 1`` largest, and the ``k`` are put in order by score,
    then index. Where the ``k``-th ties with the next (which of the tied torch keeps is its
    own choice: zeros of a sparse row), the row is found exactly (:func:`_strongest_exactly`)."""
    n = scores.shape[-1]
    if k >= n:
        return np.argsort(-scores, axis=-1, kind="stable")
    rows = max(1, block // n)
    if len(scores) > rows:
        return np.concatenate([strongest(scores[i:i + rows], k, block) for i in range(0, len(scores), rows)])
    if not _torch_reads(scores):
        return _strongest_exactly(scores, k)
    values, columns = (t.numpy() for t in torch.topk(torch.from_numpy(scores), k + 1, dim=-1))
    top = columns[:, :k]
    result = np.take_along_axis(top, np.lexsort((top, -values[:, :k]), axis=-1), axis=-1)
    tied = np.flatnonzero(values[:, k - 1] == values[:, k])
    if len(tied):
        result[tied] = _strongest_exactly(scores[tied], k)
    return result


def _strongest_exactly(scores: np.ndarray, k: int) -> np.ndarray:
    """:func:`strongest` for ``k`` below the row length, ties at the ``k``-th score settled by
    index: every score above the ``k``-th, then as many tied ones as fit, lowest index first."""
    kth = _kth_largest(scores, k)
    chosen = scores > kth
    tied = scores == kth
    wanted = k - chosen.sum(axis=-1, keepdims=True)  # how many of the tied each row takes, lowest index first
    crowded = np.flatnonzero(tied.sum(axis=-1) > wanted[:, 0])  # rows with more ties than places
    chosen[crowded] |= tied[crowded] & (np.cumsum(tied[crowded], axis=-1, dtype=np.int32) <= wanted[crowded])
    tied[crowded] = False
    chosen |= tied
    columns = np.nonzero(chosen)[1].reshape(len(scores), k)  # ascending within each row
    order = np.argsort(-np.take_along_axis(scores, columns, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(columns, order, axis=-1)


def _torch_reads(scores: np.ndarray) -> bool:
    """Whether torch can read the array as it is: floats of this machine's byte order, no negative strides."""
    return scores.dtype.kind == "f" and scores.dtype.isnative and all(step >= 0 for step in scores.strides)


def _kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k``-th largest score, ``[rows, 1]``: by torch's top-k where torch reads the
    array (half the time of numpy's partition for small ``k``)."""
    if _torch_reads(scores):
        return torch.topk(torch.from_numpy(scores), k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True).numpy()
    n = scores.shape[-1]
    return np.partition(scores, n - k, axis=-1)[:, n - k, None]


@dataclass(frozen=True)
class KernelStatistics:
    """Per-kernel numbers of one layer-to-layer weight tensor, read while all its kernels are
    there; ``weights`` may keep only some of them afterwards (:class:`generator.expanded.KeptKernels`)."""

    weights: LayerWeights
    l2: np.ndarray  # [O, I]
    sign: np.ndarray  # [O, I]
    peak: np.ndarray  # [O, I]
    scale: np.ndarray  # [O]

    @classmethod
    def of(cls, w: LayerWeights) -> KernelStatistics:
        """The statistics of ``w``'s kernels, read once for all of them (a dense layer's, spread
        back over positions, are spread again at every reading). Kernels with NaN or infinity are
        refused: their sums are not finite (float32 summed in float64 cannot overflow)."""
        with np.errstate(invalid="ignore"):  # infinities of both signs sum to NaN: not finite either way
            squares, peak, total = per_kernel_many(w.kernel, [(_squares, np.float64), (kernel_peak, np.float32),
                                                              (_sums, np.float64)])
        if not np.isfinite(total).all():
            raise AtlasError(
                f"The weights between `{w.src or 'the input image'}` and `{w.dst}` are not finite (NaN or "
                f"infinity): the checkpoint comes from a diverged or damaged run. Use another checkpoint.")
        return cls(w, np.sqrt(squares), np.sign(total).astype(np.int8), peak, peak.max(axis=1))


def input_link(weights: LayerWeights, unit: int, source_unit: int, scale: float) -> Link:
    """The link from ``source_unit`` of ``weights.src`` into ``unit`` of ``weights.dst``, whatever
    its rank; ``scale`` is the unit's (the largest absolute weight over its inputs)."""
    kernel = weights.kernel[unit, source_unit]
    return Link(weights.src, source_unit, float(np.sqrt(np.square(kernel, dtype=np.float64).sum())),
                int(np.sign(kernel.sum(dtype=np.float64))), float(np.abs(kernel).max()), scale,
                bool(weights.direct[unit]), weights, unit, source_unit)


def kernel_norms(weights: list[LayerWeights]) -> list[np.ndarray]:
    """Per weight tensor, the L2 norm of every kernel: ``[dst units, src units]``."""
    return [kernel_norm(w.kernel) for w in weights]


def kernel_norm(kernel: np.ndarray | HeldKernels) -> np.ndarray:
    """The L2 norm of every kernel of ``[dst units, src units, kh, kw]``."""
    return np.sqrt(per_kernel(kernel, _squares))


def _squares(kernel: np.ndarray) -> np.ndarray:
    return np.einsum("oihw,oihw->oi", kernel, kernel, dtype=np.float64)


def _sums(kernel: np.ndarray) -> np.ndarray:
    return kernel.sum(axis=(2, 3), dtype=np.float64)


PEAK_BLOCK = 2**20  # weights whose absolute values are taken at a time (4 MB)


def kernel_peak(kernel: np.ndarray) -> np.ndarray:
    """The largest absolute weight of every kernel of ``[dst units, src units, kh, kw]``: ``[dst units,
    src units]``, in the kernel's dtype, a block of rows at a time. numpy's maximum over two short axes takes 4
    to 20 times as long as torch's over one (ResNet-50: 3.5 s of its weights stage)."""
    flat = torch.from_numpy(np.ascontiguousarray(kernel)).flatten(2)
    found = torch.empty(flat.shape[:2], dtype=flat.dtype)
    rows = max(1, PEAK_BLOCK // max(1, flat.shape[1] * flat.shape[2]))
    for start in range(0, len(flat), rows):
        torch.amax(flat[start : start + rows].abs(), dim=2, out=found[start : start + rows])
    return found.numpy()


def kernel_statistics(weights: list[LayerWeights]) -> list[KernelStatistics]:
    """:class:`KernelStatistics` of each of ``weights``."""
    return [KernelStatistics.of(w) for w in weights]


def listed_kernels(target: list[KernelStatistics], top_k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For the pairs into one target layer (all of them), the kernels of each that :func:`rank`
    may list: ``(rows, columns)``. A unit's inputs are ranked over all its layer's sources, as
    here. An input unit's outputs are ranked over every layer it feeds; its strongest lie among
    its strongest into each one, which are these. A first layer's (on the image) are all listed."""
    rows: list[list[np.ndarray]] = [[] for _ in target]
    columns: list[list[np.ndarray]] = [[] for _ in target]

    def add(j: int, l2: np.ndarray, r: np.ndarray, c: np.ndarray) -> None:
        connected = l2[r, c] > 0  # as rank: a kernel of zeros is no connection
        rows[j].append(r[connected])
        columns[j].append(c[connected])

    direct = [j for j, s in enumerate(target) if s.weights.src is not None and s.weights.hops == 1]
    if direct:
        l2_all = np.concatenate([target[j].l2 for j in direct], axis=1)
        fed = np.sqrt((l2_all**2).sum(axis=1))  # each unit's input L2, as rank has it
        top = strongest(l2_all, top_k)
        top_rows, top_columns = np.repeat(np.arange(len(top)), top.shape[1]), top.reshape(-1)
        edges = np.cumsum([0] + [target[j].l2.shape[1] for j in direct])
        for j, start, stop in zip(direct, edges, edges[1:]):
            l2 = target[j].l2
            inside = (top_columns >= start) & (top_columns < stop)
            add(j, l2, top_rows[inside], top_columns[inside] - start)  # the units' strongest inputs
            out = strongest((l2 / np.where(fed > 0, fed, 1.0)[:, None]).T, top_k)  # [src units, k] by share
            add(j, l2, out.reshape(-1), np.repeat(np.arange(len(out)), out.shape[1]))
    for j, s in enumerate(target):
        if s.weights.src is None:
            every = np.indices(s.l2.shape).reshape(2, -1)
            rows[j], columns[j] = [every[0]], [every[1]]
        elif s.weights.hops > 1:  # further inputs: ranked within the pair
            top = strongest(s.l2, top_k)
            add(j, s.l2, np.repeat(np.arange(len(top)), top.shape[1]), top.reshape(-1))
    empty = np.zeros(0, dtype=np.int64)
    return [(np.concatenate(r or [empty]).astype(np.int64), np.concatenate(c or [empty]).astype(np.int64))
            for r, c in zip(rows, columns)]


def rank(graph: LayerGraph, statistics: list[KernelStatistics], top_k: int) -> dict[tuple[str, int], UnitWeights]:
    """Every browsed unit's ranked connections, keyed by ``(layer, unit)``, from the statistics of
    every pair's kernels (:func:`kernel_statistics`): only the listed kernels are read.

    A unit reading several layers (or read by several) gets one list, ranked across them.
    """
    units = {(layer.name, u): UnitWeights(layer.name, u) for layer in graph.layers for u in range(layer.channels)}
    incoming: dict[str, list[KernelStatistics]] = {}
    outgoing: dict[str, list[KernelStatistics]] = {}
    for stats in statistics:
        w = stats.weights
        if w.src is None:  # the first layer: its kernel on the image
            for o in range(len(w.kernel)):
                unit = units[(w.dst, o)]
                unit.rgb_kernel, unit.scale = w.kernel[o], float(stats.scale[o])
                unit.input_l2 = float(np.sqrt((stats.l2[o] ** 2).sum()))
        elif w.hops > 1:
            top = strongest(stats.l2, top_k)
            scale = np.broadcast_to(stats.scale[:, None], top.shape)
            for o, links in enumerate(_links([stats], stats.l2, top, 1, scale)):
                units[(w.dst, o)].further.append(FurtherInputs(w.src, w.hops, float(stats.scale[o]), links))
        else:
            incoming.setdefault(w.dst, []).append(stats)
            outgoing.setdefault(w.src, []).append(stats)
    for dst, parts in incoming.items():
        l2_all = np.concatenate([p.l2 for p in parts], axis=1)  # [dst units, units of every source]
        sign_all = np.concatenate([p.sign for p in parts], axis=1)
        scale = np.max([p.scale for p in parts], axis=0)
        input_count, input_l2 = (l2_all > 0).sum(axis=1).tolist(), np.sqrt((l2_all**2).sum(axis=1)).tolist()
        excitatory, inhibitory = (sign_all > 0).sum(axis=1).tolist(), (sign_all < 0).sum(axis=1).tolist()
        top = strongest(l2_all, top_k)
        # one scale over all of a unit's inputs
        for o, links in enumerate(_links(parts, l2_all, top, 1, np.broadcast_to(scale[:, None], top.shape))):
            unit = units[(dst, o)]
            unit.scale, unit.inputs = float(scale[o]), links
            unit.input_count, unit.input_l2 = input_count[o], input_l2[o]
            unit.excitatory, unit.inhibitory = excitatory[o], inhibitory[o]
    for src, parts in outgoing.items():
        l2_all = np.concatenate([p.l2 for p in parts], axis=0)  # [units of every reading layer, src units]
        fed = np.concatenate([[units[(p.weights.dst, o)].input_l2 for o in range(len(p.l2))] for p in parts])
        share_all = l2_all / np.where(fed > 0, fed, 1.0)[:, None]
        output_count = (l2_all > 0).sum(axis=0).tolist()
        fed_scale = np.array([units[(p.weights.dst, o)].scale for p in parts for o in range(len(p.l2))])
        top = strongest(share_all.T, top_k)
        # each shown with the scale of the unit it feeds, over all that unit's inputs
        for i, links in enumerate(_links(parts, l2_all, top, 0, fed_scale[top],
                                         np.take_along_axis(share_all.T, top, axis=1))):
            unit = units[(src, i)]
            unit.output_count, unit.outputs = output_count[i], links
    return units
