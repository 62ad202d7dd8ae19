"""Unit pages: per unit one HTML page (its kernel tiles inside it), its pictures and a JSON
data file.

A page is its header (``templates/unit.html.j2``) and its sections, in the order of
:data:`generator.sections.SECTIONS`: each section module turns what the build knows of the unit
(a :class:`UnitPage`) into the data of its partial, and what it adds to the unit's data file.
There are thousands of units, so this stage is built for speed and size: a unit's tiles are one
sprite in the page's CSS (:mod:`generator.tiles`), and the page is the theme's shell around the
rendered body, written straight into the built site by forked workers.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup
import numpy as np
from tqdm import tqdm

from . import files
from .config import AtlasConfig
from .dataset_examples import Examples
from .families import OTHER
from .featurevis import Pictures
from .featurevis.objectives import describe
from .graph import Layer, LayerGraph
from .linearity import HOLDS, MARK
from .ranking import UnitWeights
from .render import factor_grid, readable_shape, rgb_kernel
from .sections import SECTIONS, rounded, shortened
from .sections.pictures import PICTURE_FIELDS
from .structure import Structure
from .tiles import TileSheet
from .workers import forked_map

if TYPE_CHECKING:
    from .expanded import SkippedPair
    from .site import PageShell

CHUNK = 64  # units written by one task of a worker process
FACTOR_COLUMNS = 64  # units per row of a layer's factor-picture sprite
ABOUT = "../about.json"  # from a unit's data file: what its fields mean, and the atlas's settings


class UnitPage:
    """One unit's page in the making: the unit, what the site knows (``site``), the page's
    folder and its tiles. Sections read it and add tiles and files to it."""

    def __init__(self, site: UnitPages, folder: Path, layer: Layer, unit: int, root: str = "../"):
        self.site, self.folder, self.layer, self.unit, self.root = site, folder, layer, unit, root
        self.weights: UnitWeights = site.units[(layer.name, unit)].made()
        self.tiles = TileSheet(site.config.site.tile_size)

    def write(self, name: str, data: bytes) -> None:
        """A file of the page, beside it."""
        files.write(self.folder / name, data)


class UnitPages:
    def __init__(self, graph: LayerGraph, units: dict[tuple[str, int], UnitWeights], config: AtlasConfig,
                 slugs: dict[str, str], env: jinja2.Environment, structure: Structure, group_files: dict[tuple[str, str], str],
                 pictures: Pictures | None = None, examples: Examples | None = None,
                 skipped: list[SkippedPair] | None = None):
        self.graph, self.units, self.config, self.slugs = graph, units, config, slugs
        self.skipped = skipped or []  # pairs of layers whose weights are not shown, and why
        self.structure, self.group_files = structure, group_files
        self.pictures, self.examples = pictures, examples
        self.env = env
        self.family_of = {(layer, u): (f, number) for layer, families in structure.families.items()
                          for number, f in enumerate(families, start=1) for u in f.units}
        self.template = env.get_template("unit.html.j2")
        self.settings = config.as_dict()  # in units/about.json
        self.thumbnails = {key for key, w in units.items() if w.rgb_kernel is not None and len(w.rgb_kernel) in (1, 3)}
        self._branch_names: dict[str, list[str]] = {}
        self._card_source = env.get_template("_card_source.html.j2")
        self._card_sources: dict[tuple[str, int], Markup] = {}
        self._strongest: dict[tuple[tuple[str, int], int], list] = {}

    # -- how a unit is shown wherever it appears ----------------------------------------------
    def label(self, layer: str, unit: int) -> str:
        return self.structure.annotations.label(layer, unit) or ""

    def branch(self, layer: str, unit: int) -> str:
        names = self._branch_names.get(layer)
        if names is None:  # asked for about 100 times a page: one list per layer
            found = self.graph.layer(layer)
            names = self._branch_names[layer] = [b.name if (b := found.branch_of(u)) else "" for u in range(found.channels)]
        return names[unit]

    def card_source(self, layer: str, unit: int) -> Markup:
        """What a connection card says of ``layer``'s ``unit`` (``templates/_card_source.html.j2``):
        rendered once, for the many cards that name the unit."""
        made = self._card_sources.get((layer, unit))
        if made is None:
            label = self.label(layer, unit)
            made = self._card_sources[(layer, unit)] = Markup(self._card_source.render(
                layer=layer, unit=unit, label=label, short=shortened(label), branch=self.branch(layer, unit)))
        return made

    def strongest_inputs(self, key: tuple[str, int], count: int) -> list:
        """The unit's ``count`` strongest input links, made once per unit and worker: circuits
        read those of the same units again and again (the inputs of a layer's units overlap)."""
        made = self._strongest.get((key, count))
        if made is None:
            made = self._strongest[(key, count)] = self.units[key].inputs[:count]
        return made

    def thumbnail(self, layer: str, unit: int) -> str | None:
        """Path from the site root of a first-layer unit's colour kernel."""
        return f"units/{self.slugs[layer]}/{unit}.png" if (layer, unit) in self.thumbnails else None

    def picture(self, layer: str, unit: int) -> str | None:
        """Path from the site root of the small picture that stands for a unit wherever it appears:
        its feature visualisation, or (without them) a first-layer unit's colour kernel."""
        if self.pictures is not None:
            return f"units/{self.slugs[layer]}/{unit}.thumb.webp"
        return self.thumbnail(layer, unit)

    @property
    def picture_class(self) -> str:
        """The CSS class of :meth:`picture`: a feature visualisation, or a colour kernel drawn crisp."""
        return "wa-fv" if self.pictures is not None else "wa-thumb"

    def picture_tag(self, layer: str, unit: int, root: str, size: int) -> str:
        """An ``<img>`` of :meth:`picture` (lazily loaded, its size fixed), or '' without one."""
        path = self.picture(layer, unit)
        if path is None:
            return ""
        return (f'<img class="{self.picture_class}" src="{root}{html.escape(path)}" alt="" width="{size}" '
                f'height="{size}" loading="lazy">')

    def factor_scale(self, layer: str, size: int) -> tuple[int, int, int, int] | None:
        """Height and width of ``layer``'s factor pictures, and the whole screen pixels per kernel
        position, across and down, that show them at about ``size`` pixels (None: no factors).
        A long thin kernel is widened as :func:`generator.render.readable` widens images."""
        factors = self.structure.factors.get(layer)
        if factors is None:
            return None
        h, w = factors.spatial.shape[2:]
        f = max(1, round(size / max(h, w)))
        tall, wide = readable_shape(h, w)
        return h, w, max(f, round(f * wide / w)), max(f, round(f * tall / h))

    def factor_css(self, layer: str, root: str, size: int) -> str:
        """The page CSS of class ``wa-nmf``: a unit's factor picture of ``layer`` at about ``size``
        screen pixels, whole pixels per weight, cut from the layer's sprite ('' without factors)."""
        scale = self.factor_scale(layer, size)
        if scale is None:
            return ""
        h, w, fx, fy = scale
        count = len(self.structure.factors[layer].spatial)
        columns = min(FACTOR_COLUMNS, count)
        rows = -(-count // columns)
        return (f".wa-nmf{{width:{w * fx}px;height:{h * fy}px;background-image:url({root}units/{self.slugs[layer]}/"
                f"factors.png);background-size:{columns * w * fx}px {rows * h * fy}px}}")

    def factor_tag(self, layer: str, unit: int, size: int) -> str:
        """A unit's factor picture (with :meth:`factor_css` of the same ``size`` on the page), or ''."""
        scale = self.factor_scale(layer, size)
        if scale is None:
            return ""
        h, w, fx, fy = scale
        row, column = divmod(unit, FACTOR_COLUMNS)
        explained = self.structure.factors[layer].explained[unit]
        return (f'<i class="wa-nmf" style="background-position:-{column * w * fx}px -{row * h * fy}px" '
                f'title="weight factors: {100 * explained:.0f}% explained"></i>')

    # -- the stage ---------------------------------------------------------------------------
    def write(self, site: Path, shell: PageShell) -> list[list[str]]:
        """Write every unit's files into ``site``; return the units' search entries."""
        files.write(site / "units" / "about.json", json.dumps(self.about(), indent=1, allow_nan=False).encode())
        for layer, unit in sorted(self.thumbnails):
            kernel = self.units[(layer, unit)].rgb_kernel
            files.write(site / self.thumbnail(layer, unit), rgb_kernel(np.repeat(kernel, 3 // len(kernel), axis=0)))
        for layer, factors in self.structure.factors.items():
            pictures = [factors.picture(u) for u in range(len(factors.spatial))]
            files.write(site / "units" / self.slugs[layer] / "factors.png", factor_grid(pictures, FACTOR_COLUMNS))
        chunks = [(layer, start, min(start + CHUNK, layer.channels)) for layer in self.graph.layers
                  for start in range(0, layer.channels, CHUNK)]

        def write_chunk(chunk: tuple[Layer, int, int]) -> list[list[str]]:
            layer, start, stop = chunk
            folder = site / "units" / self.slugs[layer.name]
            return [self._write_unit(folder, shell, layer, unit) for unit in range(start, stop)]

        entries = []
        with tqdm(total=len(self.units), desc="unit pages", unit="page", leave=False, disable=None) as progress:
            for written in forked_map(write_chunk, chunks):
                entries += written
                progress.update(len(written))
        return entries

    def _write_unit(self, folder: Path, shell: PageShell, layer: Layer, unit: int) -> list[str]:
        page = UnitPage(self, folder, layer, unit)
        note = self.structure.annotations.of(layer.name, unit)
        family, family_number = self.family_of[(layer.name, unit)]
        title = f"{layer.name} {unit}" + (f" · {note.label}" if note.label else "")
        sections = [(section, context) for section in SECTIONS if (context := section.context(page)) is not None]
        css = page.tiles.finish() + "".join(context.get("css", "") for _, context in sections)
        shown = {section.name: context for section, context in sections}
        group = self.group_files.get((layer.name, family.name))
        body = self.template.render(
            root="../../", layer=layer, unit=unit, branch=layer.branch_of(unit), weights=page.weights, css=css,
            note=note, family=family, family_href=f"../../layers/{self.slugs[layer.name]}.html#family-{family_number}",
            group_href=f"../../{group}.html" if group else None, data_file=f"{unit}.json",
            previous=f"{unit - 1}.html" if unit > 0 else None,
            next=f"{unit + 1}.html" if unit + 1 < layer.channels else None,
            layer_href=f"../../layers/{self.slugs[layer.name]}.html", examples=shown.get("dataset-examples"),
            sections=[(section.name, context) for section, context in sections])
        page.write(f"{unit}.html", shell.page(title, body).encode("utf-8"))
        data = {"layer": layer.name, "unit": unit, "branch": self.branch(layer.name, unit) or None,
                "label": note.label, "family": family.name, "family_automatic": family.automatic, "note": note.note,
                "input_count": page.weights.input_count, "output_count": page.weights.output_count,
                "excitatory_inputs": page.weights.excitatory, "inhibitory_inputs": page.weights.inhibitory,
                "input_l2": rounded(page.weights.input_l2), "scale": rounded(page.weights.scale),
                "rgb_kernel": None if page.weights.rgb_kernel is None else
                np.vectorize(rounded, otypes=[float])(page.weights.rgb_kernel).tolist()}
        for section in SECTIONS:
            data.update(section.data(shown.get(section.name)))
        data["about"] = ABOUT
        page.write(f"{unit}.json", json.dumps(data, separators=(",", ":"), allow_nan=False).encode())
        examples = shown.get("dataset-examples")
        named = not family.name.startswith("family ") and family.name != OTHER
        branch = self.branch(layer.name, unit)
        words = [f"unit {unit} of layer {layer.name} ({layer.name}:{unit})", f"branch {branch}" if branch else "",
                 note.label or "", f"family {family.name}" if named else "",
                 f"examples: {examples['summary']}" if examples and examples["summary"] else "", note.note or ""]
        return [f"units/{self.slugs[layer.name]}/{unit}.html", title, ", ".join(w for w in words if w),
                self.picture(layer.name, unit) or ""]

    def about(self) -> dict[str, Any]:
        """What every unit's data file means, and the settings that made them: ``units/about.json``."""
        return {
            "ranking": {"by": "inputs: L2 norm of the kernel; outputs: share, the kernel's L2 norm over the L2 norm "
                              "of all inputs of the unit it feeds",
                        "sign": "sign of the kernel's sum",
                        "peak": "the kernel's largest absolute weight",
                        "scale": "largest absolute weight over all of this unit's inputs from that layer",
                        "top_k": self.config.ranking.top_k,
                        "weights": "direct: the stored kernel; expanded: the linear map between the two layers "
                                   "with ReLU as the identity and max-pooling as average pooling (one value "
                                   "for the group, or one per connection)",
                        "kernels": "the listed connections' kernels, [connection, height, width], as int8, each "
                                   "relative to its peak, zlib-compressed, in base64: numpy.frombuffer(zlib."
                                   "decompress(base64.b64decode(zlib)), 'i1')"
                                   ".reshape(shape) / 127 * peak[:, None, None] (within 0.4% of the peak; each "
                                   "layer's page has its own weights, whole)",
                        "anchor": "the cards' ids on the unit's page are ANCHOR-UNIT (page.html#ANCHOR-UNIT)",
                        "positions": "the kernel is a map over the input layer's positions (a dense layer "
                                     "reading a flattened feature map)",
                        "frozen": "gates and layer norms held at their mean over reference images",
                        "paths": "per connection, null (one path) or its paths through the layers between: names "
                                 "(their weighted and pooling steps), shares (each path's kernel projected on the "
                                 "expanded weight, over its squared norm: they add up to 1), peaks and kernels "
                                 "(int8 as above, [path, height, width]); the paths' kernels add up to the "
                                 "expanded weight"},
            "linearity": None if self.structure.linearity is None else {
                "effects": "each connection's measured effect in the real network: the mean gradient of the "
                           "receiving unit's input (before its own activation) with respect to the sending unit, "
                           f"over {self.structure.linearity.images}, on the kernel's window (int8 as the kernels, "
                           "relative to effect_peak)",
                "cosine": "cosine similarity of the measured effect and the expanded weight",
                "ratio": "L2 norm of the measured effect over that of the expanded weight",
                "holds": f"a cosine of at least {HOLDS}", "nonlinear": f"a cosine below {MARK}: the card is marked",
                "circuit": "circuit edges carry the cosine and ratio of the connections they stand for (weighted "
                           "by L2 norm over a family node's units)"},
            "settings": self.settings,
            "feature_visualisation": self._picture_recipe(),
        }

    def _picture_recipe(self) -> dict[str, Any] | None:
        """How every feature visualisation was made (from the first unit's positive picture: the
        settings are the cache's key, the same for all)."""
        if self.pictures is None:
            return None
        record = {k: v for k, v in self.pictures.provenance(self.graph.layers[0].name, 0, 1).items()
                  if k not in PICTURE_FIELDS + ("layer", "unit", "objective")}
        record["objective"] = {"positive": describe(1), "negative": describe(-1)}
        return record
