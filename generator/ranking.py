"""Rank every unit's connections: its strongest inputs and outputs by kernel L2 norm.

A kernel's *sign* is the sign of its sum (net excitation or inhibition). Every kernel
keeps the *scale* of its output unit: the largest absolute weight over all of that unit's
inputs, so tiles of one unit compare with each other and only the strongest saturates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .graph import LayerGraph
from .weights import DirectWeights


@dataclass(frozen=True)
class Link:
    """One weighted connection seen from one of its ends; ``layer``/``unit`` is the other end."""

    layer: str
    unit: int
    module: str
    l2: float
    sign: int  # +1 excitatory, -1 inhibitory, 0 balanced
    peak: float  # largest absolute weight of this kernel
    scale: float  # largest absolute weight over all inputs of the output unit
    kernel: np.ndarray  # [kh, kw]


@dataclass
class UnitWeights:
    """What the atlas shows of one unit's weights."""

    layer: str
    unit: int
    inputs: list[Link] = field(default_factory=list)
    outputs: list[Link] = field(default_factory=list)
    input_count: int = 0
    output_count: int = 0
    excitatory: int = 0  # inputs whose kernels sum to more than zero
    inhibitory: int = 0
    input_l2: float = 0.0  # L2 norm of all incoming weights together
    scale: float = 0.0  # largest absolute incoming weight
    rgb_kernel: np.ndarray | None = None  # [3, kh, kw] when the unit reads the image


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, strongest first, ties by index."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


def rank(graph: LayerGraph, weights: list[DirectWeights], top_k: int) -> dict[tuple[str, int], UnitWeights]:
    """Every browsed unit's ranked connections, keyed by ``(layer, unit)``."""
    units = {(layer.name, u): UnitWeights(layer.name, u) for layer in graph.layers for u in range(layer.channels)}
    outgoing: dict[str, list] = {}
    for w in weights:
        c, kernel = w.connection, w.kernel
        l2 = np.sqrt((kernel.astype(np.float64) ** 2).sum(axis=(2, 3)))  # [O, I]
        sign = np.sign(kernel.sum(axis=(2, 3), dtype=np.float64)).astype(int)
        peak = np.abs(kernel).max(axis=(2, 3))
        scale = np.abs(kernel).reshape(len(kernel), -1).max(axis=1)
        for o in range(len(kernel)):
            unit = units[(c.dst, c.start + o)]
            unit.scale = float(scale[o])
            unit.input_l2 = float(np.sqrt((l2[o] ** 2).sum()))
            if c.src is None:
                unit.rgb_kernel = kernel[o]
                continue
            unit.input_count = len(l2[o])
            unit.excitatory = int((sign[o] > 0).sum())
            unit.inhibitory = int((sign[o] < 0).sum())
            unit.inputs = [
                Link(c.src, int(i), c.module, float(l2[o, i]), int(sign[o, i]), float(peak[o, i]), float(scale[o]), kernel[o, i])
                for i in _top(l2[o], top_k)
            ]
        if c.src is not None:
            outgoing.setdefault(c.src, []).append((c, kernel, l2, sign, peak, scale))
    for src, parts in outgoing.items():
        l2_all = np.concatenate([p[2] for p in parts], axis=0)  # [all dst units, src units]
        owners = [(j, o) for j, part in enumerate(parts) for o in range(len(part[1]))]
        for i in range(l2_all.shape[1]):
            unit = units[(src, i)]
            unit.output_count = l2_all.shape[0]
            links = []
            for row in _top(l2_all[:, i], top_k):
                j, o = owners[row]
                c, kernel, l2, sign, peak, scale = parts[j]
                links.append(Link(c.dst, c.start + o, c.module, float(l2[o, i]), int(sign[o, i]), float(peak[o, i]), float(scale[o]), kernel[o, i]))
            unit.outputs = links
    return units
