"""One pass over the layers: each layer's incoming weights are composed, read, and let go.

The expanded weights of a whole model are the largest thing a build would hold
(InceptionV1: 666 MB in float32, half of it between mixed4e and mixed5a, whose windows pass
a stride-2 pool). So they are read one target layer at a time, while all of its kernels are
there:

- each kernel's statistics (:class:`generator.ranking.KernelStatistics`: L2 norm, sign,
  peak), from which :func:`generator.ranking.rank` lists every unit's connections;
- the weight factors of the layer's units (:func:`generator.factors.layer_factors`) and of
  its annotated families (:func:`generator.factors.group_factors`);

then only the kernels a page can show are kept (:class:`generator.expanded.KeptKernels`):
every unit's strongest inputs, the strongest outputs of every input unit into this layer
(:func:`generator.ranking.listed_kernels`), and the strongest inputs of every weight
factor; of the factors' directions, only their summary (:class:`generator.factors.LayerFactors`).
The build's memory is bounded by one layer's weights, not by the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .config import RankingConfig
from .expanded import Frozen, KeptKernels, LayerWeights, SkippedPair, composed_by_target
from .factors import GroupFactors, LayerFactors, group_factors, layer_factors
from .graph import LayerGraph
from .network import TracedNetwork
from .ranking import KernelStatistics, kernel_statistics, listed_kernels


@dataclass
class ReadWeights:
    """What the pass read: per pair of layers its statistics, whose weights keep only the
    kernels a page can show; the layers' weight factors; the annotated families' factors; the
    pairs skipped, and why."""

    statistics: list[KernelStatistics] = field(default_factory=list)
    factors: dict[str, LayerFactors] = field(default_factory=dict)
    groups: list[GroupFactors] = field(default_factory=list)
    skipped: list[SkippedPair] = field(default_factory=list)

    @property
    def weights(self) -> list[LayerWeights]:
        return [s.weights for s in self.statistics]

    @property
    def norms(self) -> list[np.ndarray]:
        return [s.l2 for s in self.statistics]


def read_weights(network: TracedNetwork, graph: LayerGraph, ranking: RankingConfig, frozen: Frozen | None,
                 groups: list[tuple[str, str, list[int]]]) -> ReadWeights:
    """Read every pair of layers (``ranking``: how far apart, how many connections a unit lists,
    the memory for one map) and the factors of ``groups`` (``(layer, family, members)``, of two
    members or more), one target layer at a time."""
    read = ReadWeights()
    for dst, weights, skipped in composed_by_target(network, graph, ranking.hops, frozen, ranking.memory_mb):
        _read_target(read, dst, weights, ranking.top_k, [g for g in groups if g[0] == dst])
        read.skipped += skipped
        del weights  # this layer's kernels go before the next layer's are composed
    order = {(layer, family): i for i, (layer, family, _) in enumerate(groups)}
    read.groups.sort(key=lambda g: order[(g.layer, g.family)])
    return read


def _read_target(read: ReadWeights, dst: str, weights: list[LayerWeights], top_k: int,
                 groups: list[tuple[str, str, list[int]]]) -> None:
    """Read the weights into ``dst`` (all of them) into ``read``."""
    statistics = kernel_statistics(weights)  # first: they refuse kernels that are not finite, and give units' scales
    direct = [s.scale for s in statistics if s.weights.hops == 1 and s.weights.src is not None]
    factors = layer_factors(weights, np.max(direct, axis=0) if direct else None)
    if factors is not None:
        read.factors[dst] = factors.without_channels()  # the pages read a summary of the directions
    if any(w.hops == 1 and w.src is not None for w in weights):
        read.groups += [group_factors(weights, dst, family, members) for _, family, members in groups]
    shown = factors.shown_inputs() if factors is not None else {}
    for stats, (rows, columns) in zip(statistics, listed_kernels(statistics, top_k)):
        w = stats.weights
        if w.src is not None:  # a first layer's colour kernels are kept whole (the image has three channels)
            if w.hops == 1 and w.src in shown:
                rows, columns = np.concatenate([rows, shown[w.src][0]]), np.concatenate([columns, shown[w.src][1]])
            w = replace(w, kernel=KeptKernels(w.kernel, rows, columns))
        read.statistics.append(replace(stats, weights=w))
