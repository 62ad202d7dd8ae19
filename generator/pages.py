"""Write the atlas's navigation pages (index, how to read, one per layer) as Markdown for mkdocs.

Names from the model are data: Jinja2 escapes them everywhere, and file names come from
:func:`slug`, which keeps only ``[A-Za-z0-9_-]`` so no name can leave the output folder.
Every link is relative, so the site works from ``file://``, a sub-path or any server.
"""

from __future__ import annotations

import html
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import jinja2
import markupsafe
import numpy as np
import safetensors.torch
import yaml

from .config import AtlasConfig
from . import files
from .factors import COMPONENTS, GroupFactors
from .families import DEAD, OTHER
from .graph import Layer, LayerGraph
from .linearity import HOLDS, MARK, by_layer
from .plots import LayerPlot, layer_plots
from .ranking import UnitWeights
from .sections.circuit import draw, svg
from .sections.connections import cards
from .tiles import TileSheet
from .dataset_examples import Examples
from .featurevis import Pictures
from .structure import Structure
from .sections.pictures import THUMBNAIL
from .unit_pages import UnitPages
from .workers import forked_map

if TYPE_CHECKING:
    from .expanded import SkippedPair

SAMPLER = 8  # units of each layer shown on the index
UNITS_MARK = "@@atlas-layer-units@@"
COLLAPSED = 48  # families with more units than this start collapsed on their layer page
PREVIEW = 8  # units of a collapsed family shown beside its name
GROUP_INPUTS = 8  # input units listed per factor of a group
FAMILY_CIRCUIT = 8  # units in each column of a family's circuit, the strongest into the column before
EXAMPLE_INPUTS = 3  # inputs shown for a worked example the labels file names
CELL_FACTOR = 40  # about this many screen pixels for a unit's factor picture in its layer's grid
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


SLUG_LENGTH = 60  # file names stay far below every file system's limit (255 bytes)


def slug(name: str, empty: str = "layer") -> str:
    """A file-name-safe version of a model name: ``[A-Za-z0-9_-]`` only, at most
    :data:`SLUG_LENGTH` characters, never empty, never a path."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # é -> e
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_name).strip("-_")[:SLUG_LENGTH].strip("-_")
    return cleaned or empty


def distinct_slugs(names: list[str], empty: str) -> list[str]:
    """One distinct file name per name, in order, also where names differ only in case or in
    the characters :func:`slug` drops (``a/b`` and ``a-b``): later ones get ``-2``, ``-3``..."""
    result, used = [], set()
    for name in names:
        base = candidate = slug(name, empty)
        i = 2
        while candidate.lower() in used:
            candidate, i = f"{base}-{i}", i + 1
        used.add(candidate.lower())
        result.append(candidate)
    return result


def layer_slugs(graph: LayerGraph) -> dict[str, str]:
    """One distinct file name per layer."""
    names = [layer.name for layer in graph.layers]
    return dict(zip(names, distinct_slugs(names, "layer")))


def html_title(text: str) -> str:
    """A title for mkdocs, which puts page and navigation titles into HTML as they are: escaped here."""
    return html.escape(text.strip()) or "untitled"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    parameters: int
    units: int
    input_shape: tuple[int, ...]
    weights: str  # SHA-256 of the model's parameters and buffers


class PageEnvironment(jinja2.Environment):
    """Jinja for the atlas's pages: ``d.name`` on a dict (the sections' data) reads its item first.
    Jinja tries the attribute first, and the exception it catches on every miss took a twentieth
    of the unit pages' time."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


class PageWriter:
    """Renders every page of one atlas.

    The few pages people navigate by (index, how to read, layers) are Markdown for mkdocs;
    unit pages, thousands of them, are written by :class:`generator.unit_pages.UnitPages`.
    """

    def __init__(self, graph: LayerGraph, units: dict[tuple[str, int], UnitWeights],
                 config: AtlasConfig, summary: ModelSummary, structure: Structure, pictures: Pictures | None = None,
                 examples: Examples | None = None, skipped: list[SkippedPair] | None = None,
                 parameters: dict[str, dict[str, Any]] | None = None):
        self.graph, self.units, self.config, self.summary = graph, units, config, summary
        self.structure = structure
        self.layer_units: dict[str, str] = {}  # per layer page, the HTML of its units (see fill_layers)
        self.plot_seconds = 0.0  # spent drawing layer plots
        self.skipped = skipped or []  # pairs of layers shown without weights, and why
        self.parameters = parameters or {}  # per layer, its modules' tensors (a download on its page)
        self.slugs = layer_slugs(graph)
        self.env = PageEnvironment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
            lstrip_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
            auto_reload=False,  # templates do not change during a build: no file check per include
        )
        cards = self.env.get_template("_cards.html.j2")
        # A list of connection cards as one piece of markup: rendered on its own, its many small
        # pieces are joined once instead of passing up through every enclosing template.
        self.env.globals["card_list"] = lambda made: markupsafe.Markup(cards.render(cards=made))
        self.env.globals["circuit_svg"] = svg  # a circuit diagram, drawn in Python
        group_names = distinct_slugs([f"{self.slugs[g.layer]}-{slug(g.family, 'family')}" for g in structure.groups],
                                     "family")
        self.group_files = {(g.layer, g.family): f"families/{name}" for g, name in zip(structure.groups, group_names)}
        self.unit_pages = UnitPages(graph, units, config, self.slugs, self.env, structure, self.group_files,
                                    pictures, examples, self.skipped)
        self.pictures, self.examples = pictures, examples

    # -- mkdocs pages ----------------------------------------------------------------------
    @property
    def pages(self) -> list[str]:
        """The pages mkdocs builds, as paths in the built site."""
        return (["index.html", "how-to-read.html"] + [f"layers/{self.slugs[layer.name]}.html" for layer in self.graph.layers]
                + [f"{self.group_files[(g.layer, g.family)]}.html" for g in self.structure.groups])

    def write_docs(self, docs: Path) -> list[dict]:
        """Write the Markdown pages into ``docs``; return the mkdocs nav (no unit pages)."""
        self._render_to(docs, "index.md.j2", "index.md", title=self.config.title, root="",
                        layers=self._layer_rows(), summary=self.summary, skipped=self.skipped,
                        pair_count=len(set(self.graph.adjacent) | {(s.source, s.target) for s in self.skipped}),
                        config_yaml=yaml.safe_dump(self.config.as_dict(), sort_keys=False),
                        config_path=Path(self.config.path).name, samplers=self._samplers(),
                        pictures=self._pictures_summary())
        self._render_to(docs, "how-to-read.md.j2", "how-to-read.md", title="How to read this atlas",
                        root="", top_k=self.config.ranking.top_k, featurevis=self.pictures is not None,
                        grouped=self.config.factors.grouped, example=self._example(docs),
                        examples=self.examples is not None, linearity=self._linearity())
        start = time.perf_counter()
        plots = dict(zip((layer.name for layer in self.graph.layers),
                         forked_map(lambda layer: self._plots(docs, layer), self.graph.layers)))
        self.plot_seconds = time.perf_counter() - start
        for layer in self.graph.layers:
            self._write_layer(docs, layer, plots[layer.name])
        for group in self.structure.groups:
            self._write_group(docs, group)
        families = [{html_title(f"{g.layer}: {g.family}"): f"{self.group_files[(g.layer, g.family)]}.md"}
                    for g in self.structure.groups]
        return [{"Atlas": "index.md"}, {"How to read this atlas": "how-to-read.md"},
                {"Layers": [{html_title(layer.name): f"layers/{self.slugs[layer.name]}.md"}
                            for layer in self.graph.layers]}] + ([{"Families": families}] if families else [])

    def _linearity(self) -> dict[str, Any] | None:
        """For How to read: how far the listed inputs' expanded weights hold, per layer."""
        measured = self.structure.linearity
        if measured is None:
            return None
        return {"images": measured.images, "mark": MARK, "holds": HOLDS,
                "rows": by_layer(self.units, [layer.name for layer in self.graph.layers], measured)}

    def _plots(self, docs: Path, layer: Layer) -> list[LayerPlot]:
        """Draw a layer's plots into its folder beside its page."""
        sources = {src: (l2, [(b.name, b.start, b.stop) for b in self.graph.layer(src).branches])
                   for (src, dst), l2 in self.structure.norms.items() if dst == layer.name}
        units = [self.units[(layer.name, u)] for u in range(layer.channels)]
        return layer_plots(docs / "layers" / self.slugs[layer.name], [(b.name, b.start, b.stop) for b in layer.branches],
                           np.array([w.input_l2 for w in units]), np.array([w.excitatory for w in units]),
                           np.array([w.inhibitory for w in units]), sources)

    def _write_layer(self, docs: Path, layer: Layer, plots: list[LayerPlot]) -> None:
        """A layer's page: its units by family, with their factor pictures, statistics and plots,
        and its weights as a download."""
        name = self.slugs[layer.name]
        tensors = self.parameters.get(layer.name)
        download = None
        if tensors:
            about = {"layer": layer.name, "model": self.summary.name, "weights_sha256": self.summary.weights}
            # one metadata key: safetensors writes several in no fixed order, and the site is reproducible
            # written from the tensors themselves: bytes in memory would take twice a layer's weights
            # (VGG-16's fc6: 411 MB of weights, 785 MB more at the peak)
            path = docs / "layers" / name / "weights.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            safetensors.torch.save_file(tensors, str(path), metadata={"weight_atlas": json.dumps(about, sort_keys=True)})
            download = {"href": f"{name}/weights.safetensors", "size": path.stat().st_size,
                        "tensors": [(key, list(t.shape)) for key, t in tensors.items()]}
        cells = self._cells(layer)
        sections = []
        for number, family in enumerate(self.structure.families[layer.name], start=1):
            members = [cells[u] for u in family.units]
            group = self.group_files.get((layer.name, family.name))
            sections.append({"family": family, "anchor": f"family-{number}", "count": len(members),
                             "share": len(members) / layer.channels,
                             "cells": members, "collapsed": len(members) > COLLAPSED, "preview": members[:PREVIEW],
                             "group": f"../{group}.html" if group else None})
        factors = self.structure.factors.get(layer.name)
        self.layer_units[name] = self.env.get_template("layer_units.html.j2").render(
            layer=layer, sections=sections, cells=cells, activity=self.examples is not None)
        self._render_to(docs, "layer.md.j2", f"layers/{name}.md", title=layer.name, units_mark=UNITS_MARK,
                        root="../", layer=layer, cells=cells, direct=self._sources(layer),
                        sources=[s for s, d in self.graph.adjacent if d == layer.name],
                        targets=[d for s, d in self.graph.adjacent if s == layer.name], slugs=self.slugs,
                        plots=[{"src": f"{name}/{p.file}", "title": p.title, "caption": p.caption} for p in plots],
                        factor_css=self.unit_pages.factor_css(layer.name, "../", CELL_FACTOR), download=download,
                        skipped=[s for s in self.skipped if layer.name in (s.source, s.target)],
                        explained=float(np.median(factors.explained)) if factors else None,
                        grouped=self.config.factors.grouped,
                        automatic=all(f.automatic for f in self.structure.families[layer.name]),
                        clustered_on="how they respond to the dataset images" if self.examples else
                                     "how their pictures look" if self.pictures else "what they read",
                        labels_file=self.structure.annotations.source and Path(self.structure.annotations.source).name)

    def fill_layers(self, site: Path) -> None:
        """Put each layer's units into its built page. Written after mkdocs, they cost no
        Markdown parsing and stay out of the search index (unit pages are in it)."""
        for name, units in self.layer_units.items():
            page = site / "layers" / f"{name}.html"
            built = page.read_text(encoding="utf-8")
            if built.count(UNITS_MARK) != 1:
                raise RuntimeError(f"the built page {page} lost its units mark; check templates/layer.md.j2")
            page.write_text(built.replace(UNITS_MARK, units), encoding="utf-8")

    def _cells(self, layer: Layer) -> list[dict[str, Any]]:
        """Every unit of ``layer`` as a grid cell and a row of statistics."""
        peaks = self.examples.peaks(layer.name) if self.examples else None
        active = self.examples.activity(layer.name) if self.examples else None
        family_of = {u: f for f in self.structure.families[layer.name] for u in f.units}
        cells = []
        for u in range(layer.channels):
            w, note = self.units[(layer.name, u)], self.structure.annotations.of(layer.name, u)
            branch = layer.branch_of(u)
            signed = w.excitatory + w.inhibitory
            cells.append({
                "unit": u, "href": self._href(layer.name, u, "../"), "label": note.label or "",
                "family": family_of[u].name, "branch": branch.name if branch else "",
                "l2": w.input_l2, "excitatory": w.excitatory / signed if signed else None,
                "active": active[u] if active else None, "dead": peaks is not None and peaks[u] <= 0,
                "picture": self.unit_pages.picture_tag(layer.name, u, "../", THUMBNAIL),
                "factor": self.unit_pages.factor_tag(layer.name, u, CELL_FACTOR),
            })
        return cells

    def _write_group(self, docs: Path, group: GroupFactors) -> None:
        """A family's factors: each factor's strongest input units, and each member's map per factor."""
        path = self.group_files[(group.layer, group.family)]
        # Each member's maps on one scale of their own, its peak printed: the factors compare
        # within a row, and a member with weak weights is not left blank beside a strong one.
        peaks = [float(np.abs(group.maps[m]).max()) or 1.0 for m in range(len(group.members))]
        sheet = TileSheet(self.config.site.tile_size)
        tiles = [[sheet.tile(group.maps[m, c], peaks[m]) for c in range(len(group.directions))]
                 for m in range(len(group.members))]
        css = sheet.finish()
        factors = [{"inputs": [{"layer": layer, "unit": unit, "coefficient": c,
                                "label": self.structure.annotations.label(layer, unit) or "",
                                "href": self._href(layer, unit, "../"),
                                "picture": self.unit_pages.picture_tag(layer, unit, "../", 40)}
                               for layer, unit, c in group.top_inputs(f, GROUP_INPUTS)]}
                   for f in range(len(group.directions))]
        members = [{"unit": u, "href": self._href(group.layer, u, "../"),
                    "label": self.structure.annotations.label(group.layer, u) or "",
                    "picture": self.unit_pages.picture_tag(group.layer, u, "../", 40),
                    "tiles": member_tiles, "peak": peak} for u, member_tiles, peak in zip(group.members, tiles, peaks)]
        circuit = draw(self.unit_pages, [(group.layer, u) for u in group.members], "../units/", FAMILY_CIRCUIT)
        self._render_to(docs, "group.md.j2", f"{path}.md", title=f"{group.layer}: {group.family}", root="../",
                        group=group, factors=factors, members=members, tile_css=css, circuit=circuit,
                        layer_href=f"../layers/{self.slugs[group.layer]}.html",
                        sources=sorted({s.layer for s in group.sources}))

    def _render_to(self, docs: Path, template: str, path: str, title: str, **context: Any) -> None:
        # mkdocs puts front-matter titles into its pages as they are, so they are escaped here.
        # Front matter is YAML, and JSON is valid YAML.
        text = self.env.get_template(template).render(title=title, title_yaml=json.dumps(html_title(title)), **context)
        files.write(docs / path, text.encode("utf-8"))


    # -- view models -----------------------------------------------------------------------
    def _href(self, layer: str, unit: int, root: str, suffix: str = ".html") -> str:
        return f"{root}units/{self.slugs[layer]}/{unit}{suffix}"

    def _example(self, docs: Path) -> dict[str, Any] | None:
        """The worked example of How to read: the unit the labels file names as ``example``, or
        else the unit with this atlas's strongest connection from another layer (labelled units
        preferred, and units that fire); its strongest inputs' cards as its page draws them
        (tiles in their own small picture), the first of them explained."""
        def strength(key: tuple[str, int]) -> tuple:
            links = self.units[key].inputs
            label = self.structure.annotations.label(*key)
            fires = not self.examples or self.examples.peaks(key[0])[key[1]] > 0
            return (fires, label is not None, links[0].l2 if links else -1.0)

        named = self.structure.annotations.example
        if named not in self.units or not self.units[named].inputs:  # a unit with no inputs shows nothing
            named = None
        candidates = [key for key, w in self.units.items() if w.inputs and key[0] != self.graph.layers[-1].name]
        if named is None and not candidates:
            return None
        layer, unit = named or max(candidates, key=strength)
        links = self.units[(layer, unit)].inputs[: EXAMPLE_INPUTS if named else 1]
        link = links[0]
        page = SimpleNamespace(site=self.unit_pages, tiles=TileSheet(self.config.site.tile_size))
        made = cards(page, links, "in", root="units/")
        css = page.tiles.finish()
        label = self.structure.annotations.label
        family = self.structure.annotations.of(layer, unit).family
        return {"card": self.env.globals["card_list"](made), "css": css, "named": named is not None,
                "family": family, "family_href": (f"{self.group_files[(layer, family)]}.html"
                                                  if (layer, family) in self.group_files else None),
                "layer": layer, "unit": unit, "label": label(layer, unit),
                "href": self._href(layer, unit, ""), "anchor": f"in-{self.slugs[link.layer]}-{link.unit}",
                "picture": self.unit_pages.picture_tag(layer, unit, "", THUMBNAIL), "link": link,
                "inputs": [{"layer": i.layer, "unit": i.unit, "label": label(i.layer, i.unit), "sign": i.sign,
                            "href": self._href(i.layer, i.unit, "")} for i in links],
                "label_in": label(link.layer, link.unit),
                "branch_in": (b.name if (b := self.graph.layer(link.layer).branch_of(link.unit)) else None)}

    def _samplers(self) -> list[dict[str, Any]]:
        """For the index: a few units of every layer, one from each family first (largest families
        first, units that never fire last), each named by its label or family. A unit is shown
        by its picture, or without pictures by its weight-factor picture."""
        rows = []
        for number, layer in enumerate(self.graph.layers):
            peaks = self.examples.peaks(layer.name) if self.examples else [1.0] * layer.channels
            spread = self._spread(layer.name)
            families = [f for f in self.structure.families[layer.name] if f.name != DEAD]
            ranked = [sorted(f.units, key=lambda u: (not self.structure.annotations.label(layer.name, u),
                                                     not spread[u], -peaks[u], u)) for f in families]
            chosen: list[tuple[int, str]] = []
            for depth in range(max((len(r) for r in ranked), default=0)):
                chosen += [(r[depth], f.name) for r, f in zip(ranked, families) if depth < len(r)]
            cells = []
            for u, family in chosen[:SAMPLER]:
                label = self.structure.annotations.label(layer.name, u)
                named = label or (family if family not in (OTHER, "") and not family.startswith("family ") else "")
                cells.append({"unit": u, "href": self._href(layer.name, u, ""), "label": named,
                              "picture": self.unit_pages.picture_tag(layer.name, u, "", THUMBNAIL)
                              or self.unit_pages.factor_tag(layer.name, u, CELL_FACTOR)})
            if not any(cell["picture"] for cell in cells):
                continue  # a layer with neither pictures nor spatial weights (a classifier, weights only)
            rows.append({"layer": layer.name, "href": f"layers/{self.slugs[layer.name]}.html", "cells": cells,
                         "css": self.unit_pages.factor_css(layer.name, "", CELL_FACTOR).replace(
                             ".wa-nmf{", f".wa-sampler-{number} .wa-nmf{{"), "number": number})
        return rows

    def _spread(self, layer: str) -> list[bool]:
        """Per unit, whether its picture says something: always with feature visualisations; without
        them, whether its weight factors spread over more than one kernel position (a unit reading
        one position, a 1x1 branch in a wider window, is a single dot)."""
        factors = self.structure.factors.get(layer)
        channels = self.graph.layer(layer).channels
        if self.pictures is not None or factors is None:
            return [True] * channels
        weight = factors.spatial.reshape(channels, COMPONENTS, -1).sum(axis=1)
        return ((weight > 0.05 * weight.max(axis=1, keepdims=True)).sum(axis=1) > 1).tolist()

    def _pictures_summary(self) -> dict[str, Any]:
        """How the pictures were made, for the index (the same on every rebuild)."""
        fv = self.config.featurevis
        return {"featurevis": fv if self.pictures is not None else None, "height": self.config.picture_shape[0], "width": self.config.picture_shape[1],
                "examples": self.examples.description if self.examples else None, "top": self.config.dataset.top}

    def _sources(self, layer: Layer) -> list[dict[str, Any]]:
        """The single-convolution connections into ``layer``, described."""
        return [
            {"src": c.src, "module": c.module, "start": c.start, "stop": c.stop,
             "before": list(c.before), "after": list(c.after)}
            for c in self.graph.connections
            if c.dst == layer.name
        ]

    def _layer_rows(self) -> list[dict[str, Any]]:
        return [{"layer": layer, "href": f"layers/{self.slugs[layer.name]}.html",
                 "sources": [s or "input image" for s, d in self.graph.adjacent if d == layer.name]}
                for layer in self.graph.layers]
