"""Write the atlas's navigation pages (index, how to read, one per layer) as Markdown for mkdocs.

Names from the model are data: Jinja2 escapes them everywhere, and file names come from
:func:`slug`, which keeps only ``[A-Za-z0-9_-]`` so no name can leave the output folder.
Every link is relative, so the site works from ``file://``, a sub-path or any server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .config import AtlasConfig
from . import files
from .graph import Layer, LayerGraph
from .ranking import UnitWeights
from .dataset_examples import Examples
from .featurevis import Pictures
from .unit_pages import UnitPages

SAMPLER = 8  # units of each layer shown on the index
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def slug(name: str) -> str:
    """A file-name-safe version of a model name (never empty, never a path)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")
    return cleaned or "layer"


def layer_slugs(graph: LayerGraph) -> dict[str, str]:
    """One distinct file name per layer."""
    result, used = {}, set()
    for layer in graph.layers:
        base, candidate, i = slug(layer.name), slug(layer.name), 2
        while candidate.lower() in used:
            candidate, i = f"{base}-{i}", i + 1
        used.add(candidate.lower())
        result[layer.name] = candidate
    return result


def plain_title(text: str) -> str:
    """A title mkdocs may put into HTML unescaped: markup characters removed."""
    return re.sub(r"[<>&\"'`]", "", text).strip() or "untitled"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    parameters: int
    units: int
    input_shape: tuple[int, ...]
    weights: str  # SHA-256 of the model's parameters and buffers


class PageWriter:
    """Renders every page of one atlas.

    The few pages people navigate by (index, how to read, layers) are Markdown for mkdocs;
    unit pages, thousands of them, are written by :class:`generator.unit_pages.UnitPages`.
    """

    def __init__(self, graph: LayerGraph, units: dict[tuple[str, int], UnitWeights],
                 config: AtlasConfig, summary: ModelSummary, pictures: Pictures | None = None,
                 examples: Examples | None = None, skipped: list[str] | None = None):
        self.graph, self.units, self.config, self.summary = graph, units, config, summary
        self.skipped = skipped or []  # pairs of layers shown without weights, and why
        self.slugs = layer_slugs(graph)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
            lstrip_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        )
        self.unit_pages = UnitPages(graph, units, config, self.slugs, self.env, pictures, examples)
        self.pictures, self.examples = pictures, examples

    # -- mkdocs pages ----------------------------------------------------------------------
    def write_docs(self, docs: Path) -> list[dict]:
        """Write the Markdown pages into ``docs``; return the mkdocs nav (no unit pages)."""
        self._render_to(docs, "index.md.j2", "index.md", title=self.config.title, root="",
                        layers=self._layer_rows(), summary=self.summary, skipped=self.skipped,
                        config_yaml=yaml.safe_dump(self.config.as_dict(), sort_keys=False),
                        config_path=self.config.path, samplers=self._samplers(),
                        pictures=self._pictures_summary())
        self._render_to(docs, "how-to-read.md.j2", "how-to-read.md", title="How to read this atlas",
                        root="", top_k=self.config.ranking.top_k, featurevis=self.pictures is not None,
                        examples=self.examples is not None)
        for layer in self.graph.layers:
            groups = [(b.name, b.start, b.stop) for b in layer.branches] or [(None, 0, layer.channels)]
            peaks = self.examples.peaks(layer.name) if self.examples else [None] * layer.channels
            sections = [{"branch": name, "start": start, "stop": stop,
                         "cells": [self._cell(layer.name, u, peaks[u]) for u in range(start, stop)]}
                        for name, start, stop in groups]
            self._render_to(docs, "layer.md.j2", f"layers/{self.slugs[layer.name]}.md", title=layer.name,
                            root="../", layer=layer, sections=sections, direct=self._sources(layer),
                            sources=[s for s, d in self.graph.adjacent if d == layer.name],
                            targets=[d for s, d in self.graph.adjacent if s == layer.name], slugs=self.slugs)
        return [{"Atlas": "index.md"}, {"How to read this atlas": "how-to-read.md"},
                {"Layers": [{plain_title(layer.name): f"layers/{self.slugs[layer.name]}.md"}
                            for layer in self.graph.layers]}]

    def _render_to(self, docs: Path, template: str, path: str, title: str, **context: Any) -> None:
        # mkdocs puts front-matter titles into its pages unescaped; the page's own heading
        # shows the exact, escaped name. Front matter is YAML, and JSON is valid YAML.
        text = self.env.get_template(template).render(title=title, title_yaml=json.dumps(plain_title(title)), **context)
        files.write(docs / path, text.encode("utf-8"))


    # -- view models -----------------------------------------------------------------------
    def _href(self, layer: str, unit: int, root: str, suffix: str = ".html") -> str:
        return f"{root}units/{self.slugs[layer]}/{unit}{suffix}"

    def _cell(self, layer: str, unit: int, peak: float | None) -> dict[str, Any]:
        return {"unit": unit, "href": self._href(layer, unit, "../"), "dead": peak is not None and peak <= 0,
                "picture": self.unit_pages.picture_tag(layer, unit, "../", 48)}

    def _samplers(self) -> list[dict[str, Any]]:
        """For the index: a few units of every layer, evenly spread over its channels."""
        rows = []
        for layer in self.graph.layers:
            count = min(SAMPLER, layer.channels)
            units = sorted({round(i * (layer.channels - 1) / max(count - 1, 1)) for i in range(count)})
            rows.append({"layer": layer.name, "href": f"layers/{self.slugs[layer.name]}.html",
                         "cells": [{"unit": u, "href": self._href(layer.name, u, ""),
                                    "picture": self.unit_pages.picture_tag(layer.name, u, "", 48)} for u in units]})
        return rows if any(cell["picture"] for row in rows for cell in row["cells"]) else []

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
