"""Sections: the unit's strongest inputs, its strongest outputs, and its inputs from layers further up.

Each connection is a card (:class:`Card`, drawn by ``templates/_cards.html.j2``): its rank,
the other unit's picture beside the kernel (its tile on its own scale), the kernel's peak,
the other unit with its label and branch, and the score after the net sign; a connection whose
measured effect in the real network disagrees with its expanded weight (cosine below
:data:`generator.linearity.MARK`) is marked. When a unit's
weight factors explain enough of its weights, its input cards are grouped by the factor each
input contributes most to: in rank order within a group, groups in the order of their
strongest card, and a factor that carries weight but is no listed input's strongest gets
cards of its own strongest inputs.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, NamedTuple

import numpy as np
from markupsafe import Markup

from ..factors import SHOWN_INPUTS
from ..linearity import HOLDS, MARK, Linearity
from ..paths import PairPaths
from ..ranking import Link, input_link
from ..tiles import Tile
from . import Section, rounded
from .factors import FACTOR_NAMES, SIGNS

# A factor with at least this share of a unit's weights always gets cards: its SHOWN_INPUTS
# strongest inputs, when none of the listed inputs is its own.
EXTRA_SHARE = 0.05


class Card(NamedTuple):
    """One connection as a card shows it; every text is escaped by the template. A tuple, so
    that the template unpacks its fields in its loop: a hundred cards a page on thousands of
    pages, and a lookup per field was a fifth of the unit pages' time."""

    style: str  # wa-exc, wa-inh or ""
    id: str  # DIRECTION-LAYER-UNIT: the card's anchor
    href: str
    rank: int
    picture: str | None  # the other unit's small picture, from the page
    crisp: bool  # a colour kernel (drawn pixelated), not a feature visualisation
    tile: Tile
    peak: str
    source: Markup  # the other unit: layer, number, label and branch (UnitPages.card_source)
    expanded: bool  # marked as expanded weights among direct ones
    frozen: str  # what was frozen to linearise it, or ""
    nonlinear: bool  # its measured effect disagrees with it (the connection view gives the figures)
    score: str  # the share (outputs), then the L2 norm after the net sign


def cards(page, links: list[Link], direction: str, ranks: bool = False, root: str = "../") -> list[Card]:
    """The cards of ``links`` (each kernel a tile of ``page.tiles``, on its own scale). Cards are
    numbered by rank (``ranks``: by the rank each link carries, for inputs found beyond the
    listed ones). ``root`` leads from the page to the site's ``units/`` folder."""
    site = page.site
    marked = len({k.direct for k in links}) > 1  # mark expanded cards only among direct ones
    linearity = site.structure.linearity
    made = []
    for number, link in enumerate(links, start=1):
        effects = linearity.of(link.weights) if linearity is not None else None
        nonlinear = effects is not None and effects.cosine[link.row, link.column] < MARK
        style, sign = SIGNS[link.sign]
        slug = site.slugs[link.layer]
        picture = site.picture(link.layer, link.unit)
        share = f"{100 * link.share:.2g}% · " if direction == "out" else ""
        made.append(Card(style, f"{direction}-{slug}-{link.unit}", f"{root}{slug}/{link.unit}.html",
                         link.rank + 1 if ranks else number, picture and root + picture.removeprefix("units/"),
                         site.pictures is None, page.tiles.tile(link.kernel, link.peak), f"{link.peak:.2g}",
                         site.card_source(link.layer, link.unit), marked and not link.direct,
                         "; ".join(link.weights.frozen), nonlinear, f"{share}{sign}{link.l2:.3g}"))
    return made


def measured(site, links: list[Link]) -> dict[str, Any] | None:
    """How many of ``links`` hold in the real network (cosine at least :data:`HOLDS`) and how
    many are marked, over what; None where nothing was measured."""
    linearity = site.structure.linearity
    found = [(e.cosine[k.row, k.column]) for k in links
             if linearity is not None and (e := linearity.of(k.weights)) is not None]
    if not found:
        return None
    return {"holds": sum(c >= HOLDS for c in found), "marked": sum(c < MARK for c in found), "count": len(found)}


def frozen(links: list[Link]) -> list[str]:
    """What was frozen to linearise these connections (gates, norms), each said once."""
    return sorted({f for k in links for f in k.weights.frozen})


class Inputs(Section):
    name = "inputs"

    def context(self, page) -> dict[str, Any] | None:
        weights = page.weights
        grouping = self._by_factor(page) if weights.inputs else None
        extra = [link for group in grouping or [] for link in group["extra"]]
        made = dict(zip(((k.layer, k.unit) for k in weights.inputs), cards(page, weights.inputs, "in")))
        made |= dict(zip(((k.layer, k.unit) for k in extra), cards(page, extra, "in", ranks=True)))
        factors = page.site.structure.factors.get(page.layer.name)
        return {"cards": [made[(k.layer, k.unit)] for k in weights.inputs],
                "groups": [dict(g, cards=[made[(k.layer, k.unit)] for k in g["links"] + g["extra"]]) for g in grouping]
                if grouping else None,
                "explained": float(factors.explained[page.unit]) if factors is not None else None,
                "grouped": page.site.config.factors.grouped, "count": len(weights.inputs),
                "expanded": any(not k.direct for k in weights.inputs), "frozen": frozen(weights.inputs),
                "placed": any(k.weights.placed for k in weights.inputs),
                "sources": sorted({k.layer for k in weights.inputs}), "first": weights.rgb_kernel is not None,
                "columns": columns(weights.inputs, "from", "in", page.site.slugs, page.site.structure.linearity,
                                   page.site.structure.paths),
                "measured": measured(page.site, weights.inputs),
                "skipped": [s for s in page.site.skipped if s.target == page.layer.name]}

    def _by_factor(self, page) -> list[dict[str, Any]] | None:
        """The unit's inputs grouped by the weight factor each contributes most to (see the module's
        description), when the factors explain enough and make more than one group."""
        layer, unit, weights = page.layer.name, page.unit, page.weights
        factors = page.site.structure.factors.get(layer)
        if factors is None or factors.explained[unit] < page.site.config.factors.grouped:
            return None
        dominant = factors.dominant(unit)
        start = {s.layer: s.start for s in factors.sources}
        groups: dict[int, list[Link]] = {}
        for link in weights.inputs:
            groups.setdefault(int(dominant[start[link.layer] + link.unit]), []).append(link)
        listed = {(k.layer, k.unit) for k in weights.inputs}
        extra: dict[int, list[Link]] = {}
        for c in range(len(factors.shares[unit])):
            if c not in groups and factors.shares[unit, c] >= EXTRA_SHARE:
                extra[c] = sorted((self._link(page, source, other) for source, other, _, _ in
                                   factors.top_inputs(unit, c, SHOWN_INPUTS) if (source, other) not in listed),
                                  key=lambda link: link.rank)
        rank = {(k.layer, k.unit): i for i, k in enumerate(weights.inputs)}
        first = {c: min(rank[(k.layer, k.unit)] for k in links) for c, links in groups.items()}
        first |= {c: min(k.rank for k in links) for c, links in extra.items() if links and c not in groups}
        order = sorted(first, key=first.get)
        if len(order) < 2:
            return None  # one group is the list itself
        return [{"factor": c, "colour": FACTOR_NAMES[c], "share": float(factors.shares[unit, c]),
                 "links": groups.get(c, []), "extra": extra.get(c, [])} for c in order]

    @staticmethod
    def _link(page, source: str, other: int) -> Link:
        """The connection from ``source``'s unit ``other`` into the page's unit, as a ranked link would be."""
        structure, layer = page.site.structure, page.layer.name
        row = np.concatenate([structure.norms[(s, d)][page.unit] for s, d in structure.norms if d == layer])
        link = input_link(structure.kernels[(source, layer)], page.unit, other, page.weights.scale)
        link.rank = int((row > link.l2).sum())
        return link

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        """The ranked inputs, as :func:`columns` with their kernels."""
        return {"inputs": context["columns"]}


class Outputs(Section):
    name = "outputs"

    def context(self, page) -> dict[str, Any] | None:
        links = page.weights.outputs
        return {"cards": cards(page, links, "out"), "count": len(links),
                "expanded": any(not k.direct for k in links), "frozen": frozen(links),
                "placed": any(k.weights.placed for k in links), "targets": sorted({k.layer for k in links}),
                "columns": columns(links, "to", "out", page.site.slugs, page.site.structure.linearity,
                                   page.site.structure.paths),
                "measured": measured(page.site, links),
                "skipped": [s for s in page.site.skipped if s.source == page.layer.name]}

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        return {"outputs": context["columns"]}


class FurtherInputs(Section):
    name = "further-inputs"

    def context(self, page) -> dict[str, Any] | None:
        further = [{"layer": f.layer, "hops": f.hops, "count": len(f.links), "cards": cards(page, f.links, f"in{f.hops}"),
                    "columns": dict(columns(f.links, "from", f"in{f.hops}", page.site.slugs,
                                             page.site.structure.linearity, page.site.structure.paths)[0],
                                     hops=f.hops)}
                   for f in page.weights.further if f.links]
        return {"further": further} if further else None

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        return {"further_inputs": [f["columns"] for f in context["further"]] if context else []}


def columns(links: list[Link], key: str, direction: str, slugs: dict[str, str], linearity: Linearity | None = None,
            paths: dict[tuple, PairPaths] | None = None) -> list[dict[str, Any]]:
    """``links`` as columns, one group per layer at the other end (``key``: "from" or "to"),
    with each connection's measured effect and its figures where ``linearity`` has them, and
    its paths where ``paths`` split it (per connection: null, or the paths' names, shares of
    the expanded weight, peaks and kernels)."""
    paths = paths or {}
    groups = []
    for name in dict.fromkeys(k.layer for k in links):
        chosen = [k for k in links if k.layer == name]
        kinds = sorted({"direct" if k.direct else "expanded" for k in chosen})
        groups.append({key: name, "units": [k.unit for k in chosen], "anchor": f"{direction}-{slugs[name]}",
                       "l2": [rounded(k.l2, 3) for k in chosen], "sign": [k.sign for k in chosen],
                       **({"share": [rounded(k.share, 3) for k in chosen]} if key == "to" else {}),
                       "peak": [rounded(k.peak, 4) for k in chosen],
                       "weights": kinds[0] if len(kinds) == 1 else ["direct" if k.direct else "expanded" for k in chosen],
                       "positions": any(k.weights.placed for k in chosen),
                       "frozen": sorted({f for k in chosen for f in k.weights.frozen}),
                       "kernels": kernel_block(_kernels(chosen))})
        split = [paths[pair].of(k.row, k.column) if (pair := (k.weights.src, k.weights.dst, k.weights.hops)) in paths
                 else None for k in chosen]
        if any(split):
            blocks = iter(kernel_blocks([[p.kernel for p in parts] for parts in split if parts is not None]))
            groups[-1]["paths"] = [None if parts is None else {
                "names": [p.name for p in parts], "shares": [rounded(p.share, 4) for p in parts],
                "peaks": [rounded(p.peak, 4) for p in parts], "kernels": next(blocks)}
                for parts in split]
        measured = [linearity.of(k.weights) if linearity is not None else None for k in chosen]
        if all(m is not None for m in measured):
            effects = [m.effect[k.row, k.column] for m, k in zip(measured, chosen)]
            groups[-1] |= {"cosine": [rounded(m.cosine[k.row, k.column], 2) for m, k in zip(measured, chosen)],
                           "ratio": [rounded(m.ratio[k.row, k.column], 2) for m, k in zip(measured, chosen)],
                           "effect_peak": [rounded(np.abs(e).max(), 3) for e in effects],
                           "effects": kernel_block(effects)}
    return groups


def _kernels(links: list[Link]) -> np.ndarray | list[np.ndarray]:
    """The links' kernels: one read of their pair's kept kernels where they all lie there."""
    weights = links[0].weights
    if all(k.weights is weights and k.kept >= 0 for k in links):
        return weights.kernel.kernels[[k.kept for k in links]]
    return [k.kernel for k in links]


def kernel_block(kernels: np.ndarray | list[np.ndarray]) -> dict[str, Any]:
    """Kernels of one shape for the data file, compact: ``[count, height, width]`` int8, each
    kernel relative to its largest absolute weight (its ``peak``) as 127, zlib-compressed (an
    expanded kernel's window is mostly zeros) and in base64."""
    return kernel_blocks([kernels])[0]


def kernel_blocks(lists: list[np.ndarray | list[np.ndarray]]) -> list[dict[str, Any]]:
    """:func:`kernel_block` of each list (or array) of kernels, all of one shape, made int8 in
    one pass (each kernel still on its own peak): a group's paths are a block per connection,
    two dozen on a ResNet page."""
    parts = [kernels if isinstance(kernels, np.ndarray) else np.stack(kernels) for kernels in lists]
    stacked = (np.concatenate(parts) if len(parts) > 1 else parts[0]).astype(np.float64)
    peaks = np.abs(stacked).reshape(len(stacked), -1).max(axis=1)
    scaled = stacked / np.where(peaks > 0, peaks, 1)[:, None, None] * 127
    levels = np.round(scaled).astype(np.int8)
    blocks, start = [], 0
    for kernels in lists:
        part = levels[start : start + len(kernels)]
        start += len(kernels)
        packed = zlib.compress(part.tobytes())  # level 6: level 9 is 1.5% smaller, 1.7 times slower
        blocks.append({"shape": list(part.shape), "dtype": "int8", "zlib": base64.b64encode(packed).decode()})
    return blocks


SECTIONS = [Inputs(), Outputs(), FurtherInputs()]
