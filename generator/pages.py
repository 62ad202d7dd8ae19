"""Write the atlas's pages: Markdown for mkdocs, and per unit an HTML page, a tile sprite and JSON.

Names from the model are data: Jinja2 escapes them everywhere, and file names come from
:func:`slug`, which keeps only ``[A-Za-z0-9_-]`` so no name can leave the output folder.
Every link is relative, so the site works from ``file://``, a sub-path or any server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import yaml
from tqdm import tqdm

from .config import AtlasConfig
from .graph import Layer, LayerGraph
from .ranking import Link, UnitWeights
from .render import rgb_kernel, tile_sprite

if TYPE_CHECKING:
    from .site import PageShell

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
    """Renders every page of one atlas.

    The few pages people navigate by (index, how to read, layers) are Markdown for mkdocs;
    unit pages, thousands of them, are rendered straight into the built site inside the
    theme's page shell (see :class:`generator.site.PageShell`).
    """

    def __init__(self, graph: LayerGraph, units: dict[tuple[str, int], UnitWeights],
                 config: AtlasConfig, summary: ModelSummary):
        self.graph, self.units, self.config, self.summary = graph, units, config, summary
        self.slugs = layer_slugs(graph)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
            lstrip_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        )
        self.thumbnails = {  # first-layer units: their colour kernel, path from the site root
            key: f"units/{self.slugs[key[0]]}/{key[1]}.png"
            for key, weights in units.items()
            if weights.rgb_kernel is not None and len(weights.rgb_kernel) in (1, 3)
        }

    # -- mkdocs pages ----------------------------------------------------------------------
    def write_docs(self, docs: Path) -> list[dict]:
        """Write the Markdown pages into ``docs``; return the mkdocs nav (no unit pages)."""
        self._render_to(docs, "index.md.j2", "index.md", title=self.config.title, root="",
                        layers=self._layer_rows(), summary=self.summary, skipped=self.graph.skipped,
                        config_yaml=yaml.safe_dump(self.config.as_dict(), sort_keys=False),
                        config_path=self.config.path)
        self._render_to(docs, "how-to-read.md.j2", "how-to-read.md", title="How to read this atlas",
                        root="", top_k=self.config.ranking.top_k)
        for layer in self.graph.layers:
            groups = [(b.name, b.start, b.stop) for b in layer.branches] or [(None, 0, layer.channels)]
            sections = [{"branch": name, "start": start, "stop": stop,
                         "cells": [self._cell(layer.name, u) for u in range(start, stop)]}
                        for name, start, stop in groups]
            self._render_to(docs, "layer.md.j2", f"layers/{self.slugs[layer.name]}.md", title=layer.name,
                            root="../", layer=layer, sections=sections, inputs=self._sources(layer))
        return [{"Atlas": "index.md"}, {"How to read this atlas": "how-to-read.md"},
                {"Layers": [{plain_title(layer.name): f"layers/{self.slugs[layer.name]}.md"}
                            for layer in self.graph.layers]}]

    def _render_to(self, docs: Path, template: str, path: str, title: str, **context: Any) -> None:
        # mkdocs puts front-matter titles into its pages unescaped; the page's own heading
        # shows the exact, escaped name. Front matter is YAML, and JSON is valid YAML.
        text = self.env.get_template(template).render(title=title, title_yaml=json.dumps(plain_title(title)), **context)
        _write(docs / path, text.encode("utf-8"))

    # -- unit pages ------------------------------------------------------------------------
    def write_units(self, site: Path, shell: PageShell) -> list[dict[str, str]]:
        """Write every unit's page, tiles and data into the built ``site``; return search entries."""
        for (layer, unit), path in self.thumbnails.items():
            kernel = self.units[(layer, unit)].rgb_kernel
            _write(site / path, rgb_kernel(np.repeat(kernel, 3 // len(kernel), axis=0)))
        template = self.env.get_template("unit.html.j2")
        entries = []
        with tqdm(total=len(self.units), desc="unit pages", unit="page", leave=False, disable=None) as progress:
            for layer in self.graph.layers:
                for unit in range(layer.channels):
                    entries.append(self._write_unit(site, shell, template, layer, unit))
                    progress.update()
        return entries

    def _write_unit(self, site: Path, shell: PageShell, template: jinja2.Template, layer: Layer, unit: int) -> dict:
        weights = self.units[(layer.name, unit)]
        folder = site / "units" / self.slugs[layer.name]
        branch = layer.branch_of(unit)
        title = f"{layer.name} {unit}"

        # One sprite holds all of this unit's tiles: colour channels, inputs, outputs, further inputs.
        channels = list(weights.rgb_kernel) if weights.rgb_kernel is not None else []
        links = weights.inputs + weights.outputs + [k for f in weights.further for k in f.links]
        kernels = channels + [k.kernel for k in links]
        scales = [weights.scale] * len(channels) + [k.scale for k in links]
        tiles = []
        if kernels:
            sprite, places = tile_sprite(kernels, scales)
            _write(folder / f"{unit}.tiles.png", sprite)
            sprite_size = (sum(w + 1 for _, w, _ in places) - 1, max(h for _, _, h in places))
            tiles = [self._tile(f"{unit}.tiles.png", place, sprite_size) for place in places]
        tiles.reverse()  # consumed from the end, in the order they were drawn
        first = None
        if channels:
            names = ("red", "green", "blue") if len(channels) == 3 else [f"channel {i}" for i in range(len(channels))]
            first = {"image": f"{unit}.png" if (layer.name, unit) in self.thumbnails else None,
                     "channels": [dict(tiles.pop(), name=name) for name in names]}
        inputs = [self._card(k, tiles.pop(), "in") for k in weights.inputs]
        outputs = [self._card(k, tiles.pop(), "out") for k in weights.outputs]
        further = [{"layer": f.layer, "hops": f.hops, "scale": f.scale,
                    "cards": [self._card(k, tiles.pop(), "in") for k in f.links]} for f in weights.further]
        body = template.render(
            root="../../", layer=layer, unit=unit, branch=branch, weights=weights, first=first,
            inputs=inputs, outputs=outputs, further=further, sources=self._sources(layer, branch),
            source_layers=sorted({k.layer for k in weights.inputs}), data_file=f"{unit}.json",
            previous=f"{unit - 1}.html" if unit > 0 else None,
            next=f"{unit + 1}.html" if unit + 1 < layer.channels else None,
            layer_href=f"../../layers/{self.slugs[layer.name]}.html",
        )
        _write(folder / f"{unit}.html", shell.page(title, body).encode("utf-8"))
        data = self._unit_data(layer, unit, weights)
        _write(folder / f"{unit}.json", (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
        words = f"unit {unit} of layer {layer.name}" + (f", branch {branch.name}" if branch else "")
        return {"location": f"units/{self.slugs[layer.name]}/{unit}.html", "title": title, "text": words}

    # -- view models -----------------------------------------------------------------------
    def _tile(self, sprite: str, place: tuple[int, int, int], sprite_size: tuple[int, int]) -> dict[str, Any]:
        x, w, h = place
        factor = max(1, round(self.config.site.tile_size / max(w, h)))
        return {"sprite": sprite, "width": w * factor, "height": h * factor, "x": x * factor,
                "sprite_width": sprite_size[0] * factor, "sprite_height": sprite_size[1] * factor,
                "label": f"{h}x{w} kernel"}

    def _href(self, layer: str, unit: int, root: str, suffix: str = ".html") -> str:
        return f"{root}units/{self.slugs[layer]}/{unit}{suffix}"

    def _cell(self, layer: str, unit: int) -> dict[str, Any]:
        thumb = self.thumbnails.get((layer, unit))
        return {"unit": unit, "href": self._href(layer, unit, "../"), "thumb": f"../{thumb}" if thumb else None}

    def _card(self, link: Link, tile: dict[str, Any], direction: str) -> dict[str, Any]:
        thumb = self.thumbnails.get((link.layer, link.unit))
        branch = self.graph.layer(link.layer).branch_of(link.unit)
        return {
            "href": self._href(link.layer, link.unit, "../../"), "layer": link.layer, "unit": link.unit,
            "branch": branch.name if branch else None, "tile": tile, "l2": link.l2, "peak": link.peak,
            "sign": link.sign, "direct": link.direct, "thumb": f"../../{thumb}" if thumb else None,
            "direction": direction,
        }

    def _sources(self, layer: Layer, branch=None) -> list[dict[str, Any]]:
        """The direct connections into ``layer`` (or into one branch of it), described."""
        return [
            {"src": c.src, "module": c.module, "start": c.start, "stop": c.stop,
             "before": list(c.before), "after": list(c.after)}
            for c in self.graph.connections
            if c.dst == layer.name and (branch is None or c.start <= branch.start < c.stop)
        ]

    def _unit_data(self, layer: Layer, unit: int, weights: UnitWeights) -> dict[str, Any]:
        def link(k: Link) -> dict[str, Any]:
            return {"layer": k.layer, "unit": k.unit, "l2": _rounded(k.l2), "sign": k.sign,
                    "peak": _rounded(k.peak), "scale": _rounded(k.scale),
                    "weights": "direct" if k.direct else "expanded",
                    "kernel": [[_rounded(v) for v in row] for row in k.kernel.tolist()]}

        branch = layer.branch_of(unit)
        return {
            "layer": layer.name, "unit": unit, "branch": branch.name if branch else None,
            "inputs": [link(k) for k in weights.inputs], "outputs": [link(k) for k in weights.outputs],
            "further_inputs": [{"layer": f.layer, "hops": f.hops, "scale": _rounded(f.scale),
                                "inputs": [link(k) for k in f.links]} for f in weights.further],
            "input_count": weights.input_count, "output_count": weights.output_count,
            "excitatory_inputs": weights.excitatory, "inhibitory_inputs": weights.inhibitory,
            "input_l2": _rounded(weights.input_l2), "scale": _rounded(weights.scale),
            "rgb_kernel": None if weights.rgb_kernel is None else
            [[[_rounded(v) for v in row] for row in channel] for channel in weights.rgb_kernel.tolist()],
            "ranking": {"by": "L2 norm of the kernel", "sign": "sign of the kernel's sum",
                        "top_k": self.config.ranking.top_k,
                        "weights": "direct: the stored kernel; expanded: the linear map between the two "
                                   "layers with ReLU as identity and max-pooling as average pooling"},
            "settings": self.config.as_dict(),
        }

    def _layer_rows(self) -> list[dict[str, Any]]:
        return [{"layer": layer, "href": f"layers/{self.slugs[layer.name]}.html",
                 "sources": sorted({c.src or "input image" for c in self.graph.connections if c.dst == layer.name})}
                for layer in self.graph.layers]


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
