"""Rank every unit's connections: its strongest inputs and outputs by kernel L2 norm.

A kernel's *sign* is the sign of its sum (net excitation or inhibition). Every kernel
keeps the *scale* of its output unit: the largest absolute weight over all of that unit's
inputs from the same layer, so tiles of one unit compare with each other and only the
strongest saturates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .expanded import LayerWeights
from .graph import LayerGraph


@dataclass(frozen=True)
class Link:
    """One weighted connection seen from one of its ends; ``layer``/``unit`` is the other end."""

    layer: str
    unit: int
    l2: float
    sign: int  # +1 excitatory, -1 inhibitory, 0 balanced
    peak: float  # largest absolute weight of this kernel
    scale: float  # largest absolute weight over all inputs of the output unit from this layer
    direct: bool  # the stored kernel itself, not an expansion
    kernel: np.ndarray  # [kh, kw]


@dataclass(frozen=True)
class FurtherInputs:
    """A unit's strongest inputs from a layer more than one step above it (expanded weights)."""

    layer: str
    hops: int
    scale: float
    links: list[Link]


@dataclass
class UnitWeights:
    """What the atlas shows of one unit's weights."""

    layer: str
    unit: int
    inputs: list[Link] = field(default_factory=list)
    outputs: list[Link] = field(default_factory=list)
    further: list[FurtherInputs] = field(default_factory=list)
    input_count: int = 0
    output_count: int = 0
    excitatory: int = 0  # inputs whose kernels sum to more than zero
    inhibitory: int = 0
    input_l2: float = 0.0  # L2 norm of all incoming weights together
    scale: float = 0.0  # largest absolute incoming weight
    rgb_kernel: np.ndarray | None = None  # [channels, kh, kw] when the unit reads the image


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, strongest first, ties by index."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k]


@dataclass(frozen=True)
class _Statistics:
    """Per-kernel numbers of one layer-to-layer weight tensor."""

    weights: LayerWeights
    l2: np.ndarray  # [O, I]
    sign: np.ndarray  # [O, I]
    peak: np.ndarray  # [O, I]
    scale: np.ndarray  # [O]

    @classmethod
    def of(cls, w: LayerWeights) -> _Statistics:
        k = w.kernel
        absolute = np.abs(k)
        return cls(w, np.sqrt(np.einsum("oihw,oihw->oi", k, k, dtype=np.float64)),
                   np.sign(k.sum(axis=(2, 3), dtype=np.float64)).astype(int),
                   absolute.max(axis=(2, 3)), absolute.reshape(len(k), -1).max(axis=1))

    def link(self, o: int, i: int, other_end: tuple[str, int]) -> Link:
        return Link(other_end[0], other_end[1], float(self.l2[o, i]), int(self.sign[o, i]), float(self.peak[o, i]),
                    float(self.scale[o]), bool(self.weights.direct[o]), self.weights.kernel[o, i])


def rank(graph: LayerGraph, weights: list[LayerWeights], top_k: int) -> dict[tuple[str, int], UnitWeights]:
    """Every browsed unit's ranked connections, keyed by ``(layer, unit)``."""
    units = {(layer.name, u): UnitWeights(layer.name, u) for layer in graph.layers for u in range(layer.channels)}
    outgoing: dict[str, list[_Statistics]] = {}
    for w in weights:
        stats = _Statistics.of(w)
        for o in range(len(w.kernel)):
            unit = units[(w.dst, o)]
            links = [stats.link(o, int(i), (w.src, int(i))) for i in _top(stats.l2[o], top_k)] if w.src else []
            if w.hops > 1:
                unit.further.append(FurtherInputs(w.src, w.hops, float(stats.scale[o]), links))
                continue
            unit.scale = float(stats.scale[o])
            unit.input_l2 = float(np.sqrt((stats.l2[o] ** 2).sum()))
            if w.src is None:
                unit.rgb_kernel = w.kernel[o]
                continue
            unit.inputs = links
            unit.input_count = stats.l2.shape[1]
            unit.excitatory = int((stats.sign[o] > 0).sum())
            unit.inhibitory = int((stats.sign[o] < 0).sum())
        if w.src is not None and w.hops == 1:
            outgoing.setdefault(w.src, []).append(stats)
    for src, parts in outgoing.items():
        l2_all = np.concatenate([p.l2 for p in parts], axis=0)  # [units of every reading layer, src units]
        owners = [(p, o) for p in parts for o in range(len(p.l2))]
        for i in range(l2_all.shape[1]):
            unit = units[(src, i)]
            unit.output_count = l2_all.shape[0]
            unit.outputs = [owners[row][0].link(owners[row][1], i, (owners[row][0].weights.dst, owners[row][1]))
                            for row in _top(l2_all[:, i], top_k)]
    return units
