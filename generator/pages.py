"""Write the atlas's pages: Markdown (with HTML) for mkdocs, one JSON data file per unit.

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
import numpy as np
import yaml
from tqdm import tqdm

from .config import AtlasConfig
from .graph import Layer, LayerGraph
from .ranking import Link, UnitWeights
from .render import data_uri, kernel_tile, rgb_kernel

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


def _rounded(x: float) -> float:
    return float(f"{x:.6g}")


def _display(shape: tuple[int, ...], target: int) -> tuple[int, int]:
    """Screen (width, height) of a tile about ``target`` pixels wide: whole pixels per weight."""
    factor = max(1, round(target / max(shape)))
    return shape[-1] * factor, shape[-2] * factor


class PageWriter:
    """Renders every page of one atlas into a docs folder."""

    def __init__(self, docs: Path, graph: LayerGraph, units: dict[tuple[str, int], UnitWeights],
                 config: AtlasConfig, summary: ModelSummary):
        self.docs, self.graph, self.units, self.config, self.summary = docs, graph, units, config, summary
        self.slugs = layer_slugs(graph)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
            lstrip_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        )
        self.thumbnails: dict[tuple[str, int], str] = {}  # unit -> path from the docs root

    # -- the pages -------------------------------------------------------------------------
    def write_all(self) -> list[dict[str, str]]:
        """Write every page; return the mkdocs nav (unit pages stay out of it)."""
        self._write_thumbnails()
        self._render("index.md.j2", "index.md", root="", layers=self._layer_rows(),
                     summary=self.summary, config_yaml=yaml.safe_dump(self.config.as_dict(), sort_keys=False),
                     config_path=self.config.path, skipped=self.graph.skipped)
        self._render("how-to-read.md.j2", "how-to-read.md", root="", top_k=self.config.ranking.top_k)
        with tqdm(total=len(self.units), desc="unit pages", unit="page", leave=False, disable=None) as progress:
            for layer in self.graph.layers:
                self._write_layer(layer)
                for unit in range(layer.channels):
                    self._write_unit(layer, unit)
                    progress.update()
        return [{"Atlas": "index.md"}, {"How to read this atlas": "how-to-read.md"},
                {"Layers": [{plain_title(layer.name): f"layers/{self.slugs[layer.name]}.md"} for layer in self.graph.layers]}]

    def _write_thumbnails(self) -> None:
        for (layer, unit), weights in self.units.items():
            if weights.rgb_kernel is not None and weights.rgb_kernel.shape[0] in (1, 3):
                path = f"units/{self.slugs[layer]}/{unit}.png"
                kernel = np.repeat(weights.rgb_kernel, 3 // len(weights.rgb_kernel), axis=0)
                self._write_bytes(path, rgb_kernel(kernel))
                self.thumbnails[(layer, unit)] = path

    def _write_layer(self, layer: Layer) -> None:
        groups = [(b.name, b.start, b.stop) for b in layer.branches] or [(None, 0, layer.channels)]
        sections = [
            {"branch": name, "start": start, "stop": stop,
             "cells": [self._cell(layer.name, u) for u in range(start, stop)]}
            for name, start, stop in groups
        ]
        self._render("layer.md.j2", f"layers/{self.slugs[layer.name]}.md", root="../", layer=layer,
                     title=layer.name, sections=sections, inputs=self._sources(layer))

    def _write_unit(self, layer: Layer, unit: int) -> None:
        weights = self.units[(layer.name, unit)]
        stem = f"units/{self.slugs[layer.name]}/{unit}"
        branch = layer.branch_of(unit)
        data = self._unit_data(layer, unit, weights)
        self._write_bytes(stem + ".json", (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
        first = None
        if weights.rgb_kernel is not None:
            first = {
                "image": self._href(layer.name, unit, "../../", ".png") if (layer.name, unit) in self.thumbnails else None,
                "channels": [
                    {"uri": data_uri(kernel_tile(k, weights.scale)), "size": _display(k.shape, self.config.site.tile_size), "name": name}
                    for k, name in zip(weights.rgb_kernel, ("red", "green", "blue") if len(weights.rgb_kernel) == 3 else
                                       [f"channel {i}" for i in range(len(weights.rgb_kernel))])
                ],
            }
        self._render(
            "unit.md.j2", stem + ".md", root="../../", layer=layer, unit=unit, branch=branch,
            title=f"{layer.name} {unit}", weights=weights, first=first,
            inputs=[self._card(link, "in") for link in weights.inputs],
            outputs=[self._card(link, "out") for link in weights.outputs],
            sources=self._sources(layer, branch), data_file=f"{unit}.json",
            previous=f"{unit - 1}.html" if unit > 0 else None,
            next=f"{unit + 1}.html" if unit + 1 < layer.channels else None,
            layer_href=f"../../layers/{self.slugs[layer.name]}.html",
        )

    # -- view models -----------------------------------------------------------------------
    def _href(self, layer: str, unit: int, root: str, suffix: str = ".html") -> str:
        return f"{root}units/{self.slugs[layer]}/{unit}{suffix}"

    def _branch_name(self, layer: str, unit: int) -> str | None:
        branch = self.graph.layer(layer).branch_of(unit)
        return branch.name if branch else None

    def _cell(self, layer: str, unit: int) -> dict[str, Any]:
        thumb = self.thumbnails.get((layer, unit))
        return {"unit": unit, "href": self._href(layer, unit, "../"), "thumb": f"../{thumb}" if thumb else None}

    def _card(self, link: Link, direction: str) -> dict[str, Any]:
        width, height = _display(link.kernel.shape, self.config.site.tile_size)
        thumb = self.thumbnails.get((link.layer, link.unit))
        return {
            "href": self._href(link.layer, link.unit, "../../"),
            "layer": link.layer, "unit": link.unit, "branch": self._branch_name(link.layer, link.unit),
            "tile": data_uri(kernel_tile(link.kernel, link.scale)),
            "width": width, "height": height,
            "l2": link.l2, "peak": link.peak, "sign": link.sign, "module": link.module,
            "thumb": f"../../{thumb}" if thumb else None, "direction": direction,
        }

    def _sources(self, layer: Layer, branch=None) -> list[dict[str, Any]]:
        """The direct connections into ``layer`` (or into one branch of it), described."""
        rows = []
        for c in self.graph.connections:
            if c.dst != layer.name or (branch is not None and not (c.start <= branch.start < c.stop)):
                continue
            rows.append({"src": c.src, "module": c.module, "start": c.start, "stop": c.stop,
                         "before": list(c.before), "after": list(c.after)})
        return rows

    def _unit_data(self, layer: Layer, unit: int, weights: UnitWeights) -> dict[str, Any]:
        def link(k: Link) -> dict[str, Any]:
            return {"layer": k.layer, "unit": k.unit, "module": k.module, "l2": _rounded(k.l2),
                    "sign": k.sign, "peak": _rounded(k.peak), "scale": _rounded(k.scale),
                    "kernel": [[_rounded(v) for v in row] for row in k.kernel.tolist()]}

        branch = layer.branch_of(unit)
        return {
            "layer": layer.name, "unit": unit, "branch": branch.name if branch else None,
            "inputs": [link(k) for k in weights.inputs], "outputs": [link(k) for k in weights.outputs],
            "input_count": weights.input_count, "output_count": weights.output_count,
            "excitatory_inputs": weights.excitatory, "inhibitory_inputs": weights.inhibitory,
            "input_l2": _rounded(weights.input_l2), "scale": _rounded(weights.scale),
            "rgb_kernel": None if weights.rgb_kernel is None else
            [[[_rounded(v) for v in row] for row in channel] for channel in weights.rgb_kernel.tolist()],
            "ranking": {"by": "L2 norm of the kernel", "sign": "sign of the kernel's sum",
                        "top_k": self.config.ranking.top_k, "weights": "direct"},
            "settings": self.config.as_dict(),
        }

    def _layer_rows(self) -> list[dict[str, Any]]:
        return [{"layer": layer, "href": f"layers/{self.slugs[layer.name]}.html",
                 "sources": sorted({c.src or "input image" for c in self.graph.connections if c.dst == layer.name})}
                for layer in self.graph.layers]

    # -- files -----------------------------------------------------------------------------
    def _render(self, template: str, path: str, **context: Any) -> None:
        title = context.get("title") or {"index.md": self.config.title, "how-to-read.md": "How to read this atlas"}[path]
        # mkdocs puts front-matter titles into its pages unescaped; the page's own heading
        # shows the exact, escaped name. Front matter is YAML, and JSON is valid YAML.
        text = self.env.get_template(template).render(title_yaml=json.dumps(plain_title(title)), **context)
        target = self.docs / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", newline="\n")

    def _write_bytes(self, path: str, data: bytes) -> None:
        target = self.docs / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
