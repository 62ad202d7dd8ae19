"""The paths an expanded weight is made of.

Between two layers, a unit's expanded weight adds up every route through the linearised
network: each branch of a mixed block through its bottleneck, and its pool branch; a
residual block's convolutions and its shortcut. A *path* is one such route, from the source
layer to the target layer, choosing one operand at each sum, difference or concatenation
on the way (a gated product follows the gated value). Its kernel is the expanded weight with
every other route held fixed, so the paths' kernels add up to the expanded weight; the
longest route, the costliest to compose, is found as what the others leave of the whole
(what rounding leaves where it does not reach is zero).

A path's *share* of a connection is the part of the expanded weight along it: its kernel's
projection on the whole, ``<path, whole> / <whole, whole>``. Shares add up to 1; a share
above 1 beside a negative one shows paths that cancel.

Only connections with more than one path are split (a mixed block's unit reads the layer
before through its own branch alone), and only those the pages list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.fx

from . import operations as ops
from .expanded import Frozen, LayerWeights, Skipped, _composed, _Linearised, _resolve, _source
from .graph import LayerGraph
from .network import TracedNetwork
from .ranking import Links, UnitWeights

MAX_PATHS = 32  # a pair of layers with more routes than this is not split (each costs one composition)
RESIDUE = 1e-5  # a route's kernel, found as what the others leave, is rounding below this share of their largest peak
SHARES_BLOCK = 2**20  # path kernels' weights whose shares and peaks are found at a time (8 MB in float64)


class PathKernel(NamedTuple):
    """One path of a connection: its name, its share of the expanded weight, its kernel's largest
    absolute weight, and the kernel."""

    name: str
    share: float
    peak: float
    kernel: np.ndarray


@dataclass
class PairPaths:
    """The paths of one pair of layers: their names, and the kernels of the listed connections
    that have more than one (``kernels[(row, column)]``: ``[paths, kh, kw]``); every split
    connection's place among them, its paths' shares and their kernels' peaks (``shares`` and
    ``peaks``: ``[connections, paths]``), found for all of them at once, a block at a time."""

    names: list[str]
    kernels: dict[tuple[int, int], np.ndarray]
    places: dict[tuple[int, int], int] = field(init=False)
    shares: np.ndarray = field(init=False)
    peaks: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        kernels = list(self.kernels.values())
        self.places = {key: place for place, key in enumerate(self.kernels)}
        self.shares = np.zeros((len(kernels), len(self.names)))
        self.peaks = np.zeros((len(kernels), len(self.names)), dtype=np.float32)
        block = max(1, SHARES_BLOCK // max(1, kernels[0].size)) if kernels else 1
        for start in range(0, len(kernels), block):
            stacked = np.stack(kernels[start : start + block])  # [connections, paths, kh, kw]
            self.peaks[start : start + block] = np.abs(stacked).max(axis=(2, 3))
            stacked = stacked.astype(np.float64)
            whole = stacked.sum(axis=1)
            norm = np.einsum("nij,nij->n", whole, whole)
            projected = np.einsum("npij,nij->np", stacked, whole)
            self.shares[start : start + block] = projected / np.where(norm > 0, norm, 1)[:, None] * (norm > 0)[:, None]

    def of(self, row: int, column: int) -> list[PathKernel] | None:
        """The connection's paths that carry weight; None: it has one path."""
        place = self.places.get((row, column))
        if place is None:
            return None
        return [PathKernel(*path) for path in zip(self.names, self.shares[place].tolist(), self.peaks[place].tolist(),
                                                 self.kernels[(row, column)]) if path[2] > 0]


def routes(t: TracedNetwork, source: torch.fx.Node, target: torch.fx.Node,
           stops: frozenset) -> list[list[torch.fx.Node]] | None:
    """Every route from ``source`` to ``target`` that passes no node of ``stops``, as its
    nodes in order; None when there are more than :data:`MAX_PATHS`."""
    reached = {source}
    for node in t.graph.nodes:
        if node not in stops and node is not source and any(p in reached for p in t.inputs(node)):
            reached.add(node)
    found: dict[torch.fx.Node, list[list[torch.fx.Node]] | None] = {source: [[source]]}

    def into(node: torch.fx.Node) -> list[list[torch.fx.Node]] | None:
        if node not in found:
            op = ops.operation_of(t, node)
            if op is not None and op.role in ops.COMBINING:
                operands = [p for p in t.inputs(node) if p in reached and not (op.role == ops.PRODUCT and ops.is_gate(t, p))]
            else:
                operands = [node.args[0]] if node.args and node.args[0] in reached else []
            made: list[list[torch.fx.Node]] | None = []
            for p in operands:
                before = into(p)
                if before is None or len(made) + len(before) > MAX_PATHS:
                    made = None
                    break
                made += [route + [node] for route in before]
            found[node] = made
        return found[node]

    return into(target) if target in reached else []


def route_name(t: TracedNetwork, route: list[torch.fx.Node]) -> str:
    """A path named by its weighted and pooling operations ("the shortcut" without any)."""
    steps = [ops.name_of(n) for n in route[1:]
             if (op := ops.operation_of(t, n)) is not None and op.role in (ops.WEIGHTED, ops.POOL)]
    return " \u2192 ".join(steps) if steps else "the shortcut"


def split_paths(network: TracedNetwork, graph: LayerGraph, weights: list[LayerWeights],
                units: dict[tuple[str, int], UnitWeights], frozen: Frozen | None) -> dict[tuple, PairPaths]:
    """For each pair with more than one route, by ``(src, dst, hops)``: its paths, with the
    kernels of the listed connections that more than one of them reaches."""
    listed: dict[tuple, set[tuple[int, int]]] = {}
    for weights_of in units.values():
        for links in (weights_of.inputs, weights_of.outputs, *(f.links for f in weights_of.further)):
            places = links.places() if isinstance(links, Links) else \
                [(k.weights, np.array([k.row]), np.array([k.column])) for k in links]
            for w, rows, columns in places:  # read from the tables: no link made
                listed.setdefault((w.src, w.dst, w.hops), set()).update(zip(rows.tolist(), columns.tolist()))
    others = frozenset(network.node(node) for node in graph.values.values())
    nodes = frozenset(network.graph.nodes)
    found = {}
    with torch.no_grad():
        for w in weights:
            chosen = listed.get((w.src, w.dst, w.hops))
            if w.src is None or not chosen:
                continue
            source, target = _resolve(network, graph, w.src), _resolve(network, graph, w.dst)
            stops = others - {source, target} if w.hops == 1 else frozenset()
            made = routes(network, source, target, stops)
            if made is None or len(made) < 2:
                continue
            linearised = _Linearised(network, f"from `{w.src}` to `{w.dst}`", frozen,
                                     tuple(_source(network, source).shape[2:]))
            rows, columns = np.array(sorted(chosen)).T
            helds = [stops | (nodes - frozenset(route)) for route in made]  # a route: every other node held
            try:
                if not _shared(linearised, source, target, helds):
                    continue
                # The longest route is what the others leave of the whole: composed, it would cost most.
                whole = w.kernel[rows, columns]
                longest = max(range(len(made)), key=lambda i: len(made[i]))
                kernels = []
                for held in helds[:longest] + helds[longest + 1:]:
                    composed = _composed(linearised, source, target, held, 1 << 30)
                    kernels.append(np.zeros_like(whole) if composed is None else
                                   _aligned(composed[0], composed[1], w)[rows, columns])
                rest = whole.astype(np.float64)
                largest = np.abs(whole).reshape(len(whole), -1).max(axis=1)
                for other in kernels:
                    rest -= other
                    largest = np.maximum(largest, np.abs(other).reshape(len(other), -1).max(axis=1))
                rest[np.abs(rest).reshape(len(rest), -1).max(axis=1) <= RESIDUE * largest] = 0  # rounding, no path
                kernels.insert(longest, rest.astype(whole.dtype))
            except Skipped:
                continue
            stacked = np.stack(kernels, axis=1)  # [connections, paths, kh, kw]
            reached = np.abs(stacked).reshape(*stacked.shape[:2], -1).max(axis=2) > 0
            split = {(row, column): parts for (row, column), parts, count
                     in zip(zip(rows.tolist(), columns.tolist()), stacked, reached.sum(axis=1)) if count > 1}
            if split:  # its figures found here once, not again by every page-writing process
                found[(w.src, w.dst, w.hops)] = PairPaths([route_name(network, route) for route in made], split)
    return found


def _shared(linearised: _Linearised, source, target, helds: list[frozenset], probe: int = 8) -> bool:
    """Whether two routes (each as the nodes it holds fixed) reach one unit of the target: tried
    on the first ``probe`` source channels, a cheap look before composing every route whole."""
    channels = slice(0, min(probe, _source(linearised.t, source).shape[1]))
    reached = np.zeros(0)
    for held in helds:
        m = linearised.propagate(source, target, channels, held)
        if m is not None:
            rows = (m.kernel.abs().reshape(len(m.kernel), -1).amax(dim=1) > 0).numpy().astype(int)
            reached = rows if not len(reached) else reached + rows
    return bool(len(reached) and reached.max() > 1)


def _aligned(kernel: np.ndarray, window, w: LayerWeights) -> np.ndarray:
    """A path's kernel placed on the window of the whole pair's (a path may reach less far)."""
    if kernel.shape == w.kernel.shape and window.offset == w.offset:
        return kernel
    placed = np.zeros(w.kernel.shape, dtype=kernel.dtype)
    y, x = window.offset[0] - w.offset[0], window.offset[1] - w.offset[1]
    placed[:, :, y : y + kernel.shape[2], x : x + kernel.shape[3]] = kernel
    return placed
