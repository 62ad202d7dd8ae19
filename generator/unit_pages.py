"""Unit pages: per unit one HTML page, one tile sprite, its pictures and one JSON data file.

There are thousands of units, so this stage is built for speed and size: a unit's tiles
are one sprite PNG, its connection cards are short HTML strings made here (every name
from the model escaped), and the page is the theme's shell around the rendered
``unit.html.j2``, written straight into the built site.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
from tqdm import tqdm

from PIL import Image

from . import files
from .config import AtlasConfig
from .dataset_examples import Examples
from .factors import COMPONENTS, LayerFactors
from .families import OTHER
from .featurevis import Pictures
from .graph import Layer, LayerGraph
from .ranking import Link, UnitWeights, input_link
from .render import factor_grid, rgb_kernel, tile_sprite, webp
from .workers import forked_map

if TYPE_CHECKING:
    from .pages import Structure
    from .site import PageShell

CHUNK = 64  # units written by one task of a worker process
SIGNS = {1: ("wa-exc", "+"), -1: ("wa-inh", "\u2212"), 0: ("", "±")}  # +, minus sign
THUMBNAIL = 40  # pixels of a feature visualisation's small copy, for cards, grids, the index and search
THUMBNAIL_QUALITY = 60  # its WebP quality: at 40 pixels, 60 looks as 80 does
LARGE = 128  # at least this many screen pixels for a unit's own feature visualisation
FACTOR_LARGE = 120  # about this many screen pixels for a unit's own factor picture
FACTOR_COLUMNS = 64  # units per row of a layer's factor-picture sprite
FACTOR_INPUTS = 6  # input units listed per factor on a unit page
FACTOR_NAMES = ("red", "green", "blue")
SHOWN_SHARE = 0.005  # factors with less of a unit's weight are left out of its page
ABOUT = "../about.json"  # from a unit's data file: what its fields mean, and the atlas's settings
LABEL_CHARS = 28  # a label longer than this is shortened on cards (in full on hover)
EXTRA_SHARE = 0.05  # a factor with at least this share of a unit's weights always gets cards
EXTRA_CARDS = 3  # its strongest inputs shown, when none of the listed inputs is its own


class UnitPages:
    def __init__(self, graph: LayerGraph, units: dict[tuple[str, int], UnitWeights], config: AtlasConfig,
                 slugs: dict[str, str], env: jinja2.Environment, structure: Structure, group_files: dict[tuple[str, str], str],
                 pictures: Pictures | None = None, examples: Examples | None = None):
        self.graph, self.units, self.config, self.slugs = graph, units, config, slugs
        self.structure, self.group_files = structure, group_files
        self.pictures, self.examples = pictures, examples
        self.family_of = {(layer, u): (f, number) for layer, families in structure.families.items()
                          for number, f in enumerate(families, start=1) for u in f.units}
        self.labels = {  # per unit with a label, the escaped label for its cards
            key: f'<em title="{html.escape(a.label, quote=True)}">{html.escape(_shortened(a.label))}</em>'
            for key, a in structure.annotations.units.items() if a.label}
        self.size = max(config.picture_shape)  # the longer side of a feature visualisation
        self.template = env.get_template("unit.html.j2")
        self.names = {layer.name: html.escape(layer.name) for layer in graph.layers}
        self.branch_labels = {  # per layer, the escaped branch label of every unit
            layer.name: [f'<small>{html.escape(b.name)}</small>' if (b := layer.branch_of(u)) else ""
                         for u in range(layer.channels)]
            for layer in graph.layers
        }
        self.settings = config.as_dict()  # in every unit's data file
        self.thumbnails = {key for key, w in units.items() if w.rgb_kernel is not None and len(w.rgb_kernel) in (1, 3)}

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
        return f'<img class="{self.picture_class}" src="{root}{path}" alt="" width="{size}" height="{size}" loading="lazy">'

    def card_picture(self, layer: str, unit: int, root: str = "../") -> str:
        """:meth:`picture_tag` as a unit page's cards and chips carry it, a hundred to a page: the
        path from the page's folder (``root`` leads to ``units/``), the size set by the site's CSS
        (``.wa-card img``, ``.wa-chip img``), or '' without a picture."""
        path = self.picture(layer, unit)
        if path is None:
            return ""
        crisp = ' class="wa-thumb"' if self.pictures is None else ""  # a colour kernel, drawn crisp
        return f'<img{crisp} src="{root}{path.removeprefix("units/")}" alt="" loading="lazy">'

    def factor_css(self, layer: str, root: str, size: int) -> str:
        """The page CSS of class ``wa-nmf``: a unit's factor picture of ``layer`` at about ``size``
        screen pixels, whole pixels per weight, cut from the layer's sprite ('' without factors)."""
        factors = self.structure.factors.get(layer)
        if factors is None:
            return ""
        h, w, f = _factor_scale(factors, size)
        columns = min(FACTOR_COLUMNS, len(factors.spatial))
        rows = -(-len(factors.spatial) // columns)
        return (f".wa-nmf{{width:{w * f}px;height:{h * f}px;background-image:url({root}units/{self.slugs[layer]}/"
                f"factors.png);background-size:{columns * w * f}px {rows * h * f}px}}")

    def factor_tag(self, layer: str, unit: int, size: int) -> str:
        """A unit's factor picture (with :meth:`factor_css` of the same ``size`` on the page), or ''."""
        factors = self.structure.factors.get(layer)
        if factors is None:
            return ""
        h, w, f = _factor_scale(factors, size)
        row, column = divmod(unit, FACTOR_COLUMNS)
        return (f'<i class="wa-nmf" style="background-position:-{column * w * f}px -{row * h * f}px" '
                f'title="weight factors: {100 * factors.explained[unit]:.0f}% explained"></i>')

    def _factor_view(self, layer: Layer, unit: int) -> dict[str, Any] | None:
        """The unit's weight factors, strongest first, each with its top input units as links."""
        factors = self.structure.factors.get(layer.name)
        if factors is None:
            return None
        rows = []
        for c in np.argsort(-factors.shares[unit], kind="stable").tolist():
            top = factors.top_inputs(unit, c, FACTOR_INPUTS)
            chips = "".join(self._chip(source, other, sign, k, len(factors.sources) > 1) for source, other, sign, k in top)
            rows.append({"factor": c, "colour": FACTOR_NAMES[c], "share": float(factors.shares[unit, c]),
                         "inputs": top, "chips": chips})
        # The page carries its own picture (a few hundred bytes), not the layer's sprite.
        h, w, f = _factor_scale(factors, FACTOR_LARGE)
        picture = base64.b64encode(factor_grid([factors.picture(unit)], 1)).decode()
        return {"explained": float(factors.explained[unit]), "rows": rows,
                "grouped": factors.explained[unit] >= self.config.factors.grouped,
                "tag": f'<i class="wa-nmf" title="weight factors: {100 * factors.explained[unit]:.0f}% explained"></i>',
                "css": f".wa-nmf{{width:{w * f}px;height:{h * f}px;background-image:url(data:image/png;base64,"
                       f"{picture});background-size:100% 100%}}", "shown": SHOWN_SHARE}

    def _chip(self, layer: str, unit: int, sign: int, coefficient: float, named: bool) -> str:
        """A small link to an input unit of a factor: picture, name, label, sign and coefficient."""
        style, mark = SIGNS[sign]
        name = f"{self.names[layer]} " if named else ""
        label = self.labels.get((layer, unit), "")
        return (f'<a class="wa-chip {style}" href="../{self.slugs[layer]}/{unit}.html">'
                f'{self.card_picture(layer, unit)}{name}<b>{unit}</b>{label} '
                f'{mark}{coefficient:.2f}</a>')

    def _write_pictures(self, folder: Path, layer: str, unit: int) -> dict[str, Any]:
        """Copy a unit's feature visualisations and dataset examples into the site; describe them."""
        shown: dict[str, Any] = {}
        if self.pictures is not None:
            shown["featurevis"] = []
            for direction in self.pictures.directions:
                name = f"{unit}.fv.webp" if direction > 0 else f"{unit}.fv-negative.webp"
                image = self.pictures.picture(layer, unit, direction)
                files.write(folder / name, webp(image))
                if direction > 0:
                    files.write(folder / f"{unit}.thumb.webp", webp(image, THUMBNAIL, THUMBNAIL_QUALITY))
                shown["featurevis"].append(dict(self.pictures.provenance(layer, unit, direction), image=name))
        if self.examples is not None:
            name = f"{unit}.examples.webp"
            source = self.examples.picture(layer, unit)
            files.write(folder / name, source.read_bytes())
            with Image.open(source) as strip:
                width, height = strip.size
            chosen = self.examples.of(layer, unit)
            shown["examples"] = {"image": name, "width": width, "height": height,
                                 "source": self.examples.description,
                                 "summary": shared(self.examples.attributes(layer, unit)),
                                 "fired": bool(chosen) and chosen[0].value > 0,
                                 "examples": [dict(label=e.label, activation=e.value, image=e.image, box=list(e.box))
                                              for e in chosen]}
        return shown

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
        weights = self.units[(layer.name, unit)]
        branch = layer.branch_of(unit)
        note = self.structure.annotations.of(layer.name, unit)
        family, family_number = self.family_of[(layer.name, unit)]
        title = f"{layer.name} {unit}" + (f" · {note.label}" if note.label else "")
        shown = self._write_pictures(folder, layer.name, unit)
        channels = list(weights.rgb_kernel) if weights.rgb_kernel is not None else []
        links = weights.inputs + weights.outputs + [k for f in weights.further for k in f.links]
        factors = self._factor_view(layer, unit)
        grouping = self._by_factor(layer.name, unit, weights) if factors and factors["grouped"] else None
        if grouping is not None and len(grouping) < 2:
            grouping = None  # one group is the list itself
        extra = [link for group in grouping or [] for link in group["extra"]]
        links += extra
        tiles, css = [], ""
        if channels or links:  # one sprite holds all the unit's tiles, in this order
            # The colour channels of a first-layer kernel share the unit's scale; every
            # connection's tile has its own, so that each shows its structure.
            sprite, places = tile_sprite(channels + [k.kernel for k in links],
                                         [weights.scale] * len(channels) + [k.peak for k in links])
            files.write(folder / f"{unit}.tiles.png", sprite)
            tiles, css = self.tiles(f"{unit}.tiles.png", places)
        tiles.reverse()  # taken from the end, in drawing order
        first = None
        if channels:
            names = ("red", "green", "blue") if len(channels) == 3 else [f"channel {i}" for i in range(len(channels))]
            first = {"image": f"{unit}.png" if (layer.name, unit) in self.thumbnails else None,
                     "channels": [(name, tiles.pop()) for name in names]}
        input_cards = self.cards(weights.inputs, tiles, "in")
        outputs = "".join(self.cards(weights.outputs, tiles, "out"))
        further = [{"layer": f.layer, "hops": f.hops, "scale": f.scale, "count": len(f.links),
                    "cards": "".join(self.cards(f.links, tiles, f"in{f.hops}"))} for f in weights.further]
        extra_cards = dict(zip(((k.layer, k.unit) for k in extra), self.cards(extra, tiles, "in", ranks=True)))
        by_factor = None
        if grouping:
            cards = dict(zip(((k.layer, k.unit) for k in weights.inputs), input_cards)) | extra_cards
            by_factor = [dict(g, cards="".join(cards[(k.layer, k.unit)] for k in g["links"] + g["extra"]))
                         for g in grouping]
        group = self.group_files.get((layer.name, family.name))
        large = self.size * max(1, round(LARGE / self.size))
        body = self.template.render(
            root="../../", layer=layer, unit=unit, branch=branch, weights=weights, first=first, tile_css=css,
            inputs="".join(input_cards), outputs=outputs, further=further, factors=factors, by_factor=by_factor,
            note=note, family=family, family_href=f"../../layers/{self.slugs[layer.name]}.html#family-{family_number}",
            group_href=f"../../{group}.html" if group else None,
            grouped=self.config.factors.grouped,
            inputs_expanded=any(not k.direct for k in weights.inputs),
            outputs_expanded=any(not k.direct for k in weights.outputs),
            input_count=len(weights.inputs), output_count=len(weights.outputs),
            source_layers=sorted({k.layer for k in weights.inputs}),
            target_layers=sorted({k.layer for k in weights.outputs}), data_file=f"{unit}.json",
            previous=f"{unit - 1}.html" if unit > 0 else None,
            next=f"{unit + 1}.html" if unit + 1 < layer.channels else None,
            layer_href=f"../../layers/{self.slugs[layer.name]}.html",
            featurevis=shown.get("featurevis"), examples=shown.get("examples"), fv_size=self.size, fv_shown=large,
            frozen_inputs=_frozen(weights.inputs), frozen_outputs=_frozen(weights.outputs),
            placed_inputs=any(k.weights.placed for k in weights.inputs),
            placed_outputs=any(k.weights.placed for k in weights.outputs),
        )
        files.write(folder / f"{unit}.html", shell.page(title, body).encode("utf-8"))
        data = dict(self._data(layer, unit, weights), label=note.label, family=family.name,
                    family_automatic=family.automatic, note=note.note, factors=_factor_data(factors),
                    feature_visualisation=_pictures_data(shown.get("featurevis")), dataset_examples=shown.get("examples"))
        files.write(folder / f"{unit}.json", json.dumps(data, separators=(",", ":"), allow_nan=False).encode())
        named = not family.name.startswith("family ") and family.name != OTHER
        words = [f"unit {unit} of layer {layer.name} ({layer.name}:{unit})", f"branch {branch.name}" if branch else "",
                 note.label or "", f"family {family.name}" if named else "",
                 f"examples: {shown['examples']['summary']}" if shown.get("examples", {}).get("summary") else "",
                 note.note or ""]
        return [f"units/{self.slugs[layer.name]}/{unit}.html", title, ", ".join(w for w in words if w),
                self.picture(layer.name, unit) or ""]

    def _by_factor(self, layer: str, unit: int, weights: UnitWeights) -> list[dict[str, Any]]:
        """The unit's inputs grouped by the weight factor each contributes most to, in rank order
        within a group, groups ordered by their strongest input (so the strongest input of all
        comes first). A factor that carries weight but is no listed input's strongest gets its
        own strongest inputs (``extra``), found beyond the listed ones."""
        factors = self.structure.factors[layer]
        dominant = factors.dominant(unit)
        start = {s.layer: s.start for s in factors.sources}
        groups: dict[int, list[Link]] = {}
        for link in weights.inputs:
            groups.setdefault(int(dominant[start[link.layer] + link.unit]), []).append(link)
        listed = {(k.layer, k.unit) for k in weights.inputs}
        extra: dict[int, list[Link]] = {}
        for c in range(len(factors.shares[unit])):
            if c not in groups and factors.shares[unit, c] >= EXTRA_SHARE:
                extra[c] = sorted((self._link(layer, unit, source, other) for source, other, _, _ in
                                   factors.top_inputs(unit, c, EXTRA_CARDS) if (source, other) not in listed),
                                  key=lambda link: link.rank)
        rank = {(k.layer, k.unit): i for i, k in enumerate(weights.inputs)}
        first = {c: min(rank[(k.layer, k.unit)] for k in links) for c, links in groups.items()}
        first |= {c: min(k.rank for k in links) for c, links in extra.items() if links and c not in groups}
        order = sorted(first, key=first.get)
        return [{"factor": c, "colour": FACTOR_NAMES[c], "share": float(factors.shares[unit, c]),
                 "links": groups.get(c, []), "extra": extra.get(c, [])} for c in order]

    def _link(self, layer: str, unit: int, source: str, other: int) -> Link:
        """The connection from ``source``'s unit ``other`` into this unit, as a ranked link would be."""
        weights = self.structure.kernels[(source, layer)]
        row = np.concatenate([self.structure.norms[(s, d)][unit] for s, d in self.structure.norms if d == layer])
        link = input_link(weights, unit, other, self.units[(layer, unit)].scale)
        link.rank = int((row > link.l2).sum())
        return link

    def tiles(self, sprite: str, places: list[tuple[int, int, int]]) -> tuple[list[str], str]:
        """Each tile's HTML, and the page CSS of its shapes: whole screen pixels per weight."""
        width, height = sum(w + 1 for _, w, _ in places) - 1, max(h for _, _, h in places)
        shapes: dict[tuple[int, int, int], str] = {}
        tiles = []
        for x, w, h in places:
            factor = max(1, round(self.config.site.tile_size / max(w, h)))
            shape = shapes.setdefault((w, h, factor), f"t{len(shapes)}")
            tiles.append(f'<i class="wa-tile {shape}" style="--x:-{x * factor}px"></i>')  # atlas.css places it
        css = "".join(
            f".{name}{{width:{w * f}px;height:{h * f}px;background-image:url({sprite});"
            f"background-size:{width * f}px {height * f}px}}"
            for (w, h, f), name in shapes.items())
        return tiles, css

    def cards(self, links: list[Link], tiles: list[str], direction: str, ranks: bool = False,
              root: str = "../") -> list[str]:
        """Connection cards, small: thousands of pages carry a hundred each.

        Each card draws the connection the article's way, the other unit's picture beside the
        kernel (this unit's picture is at the top of its page), and names the other unit by
        layer, number, label and branch. Cards are numbered by rank (``ranks``: by the rank
        each link carries, for inputs found beyond the listed ones). Every card has an id,
        ``DIRECTION-LAYER-UNIT``, so a link can point at one connection. ``root`` leads from the
        page to the site's ``units/`` folder.
        """
        marked = len({k.direct for k in links}) > 1  # mark expanded cards only among direct ones
        cards = []
        for number, link in enumerate(links, start=1):
            style, sign = SIGNS[link.sign]
            slug = self.slugs[link.layer]
            tile = tiles.pop()
            flow = f'<span>{self.card_picture(link.layer, link.unit, root)}{tile}</span>'
            score = f'{100 * link.share:.2g}% · ' if direction == "out" else ""
            mark = '<span class="wa-expanded">expanded</span>' if marked and not link.direct else ""
            if link.weights.frozen:
                why = html.escape("; ".join(link.weights.frozen), quote=True)
                mark += f'<span class="wa-frozen" title="{why}">frozen</span>'
            rank = link.rank + 1 if ranks else number
            # Short markup (the site's CSS styles each part by its place in .wa-card): a page holds
            # a hundred cards, a model thousands of pages.
            cards.append(f'<a class="wa-card {style}" id="{direction}-{slug}-{link.unit}" href="{root}{slug}/{link.unit}.html">'
                         f'<i>{rank}</i>{flow}<small>±{link.peak:.2g}</small>'
                         f'<span>{self.names[link.layer]} <b>{link.unit}</b></span>'
                         f'{self.labels.get((link.layer, link.unit), "")}'
                         f'{self.branch_labels[link.layer][link.unit] or "<small></small>"}{mark}'
                         f'<b>{score}{sign}{link.l2:.3g}</b></a>\n')
        return cards

    def _data(self, layer: Layer, unit: int, weights: UnitWeights) -> dict[str, Any]:
        """The unit's data file: ranked connections as columns, grouped by the layer at the other end."""
        def columns(links: list[Link], key: str, direction: str) -> list[dict[str, Any]]:
            groups = []
            for name in dict.fromkeys(k.layer for k in links):
                chosen = [k for k in links if k.layer == name]
                kinds = sorted({"direct" if k.direct else "expanded" for k in chosen})
                groups.append({key: name, "units": [k.unit for k in chosen], "anchor": f"{direction}-{self.slugs[name]}",
                               "l2": [_rounded(k.l2) for k in chosen], "sign": [k.sign for k in chosen],
                               **({"share": [_rounded(k.share) for k in chosen]} if key == "to" else {}),
                               "peak": [_rounded(k.peak) for k in chosen],
                               "weights": kinds[0] if len(kinds) == 1 else
                                          ["direct" if k.direct else "expanded" for k in chosen],
                               "positions": any(k.weights.placed for k in chosen),
                               "frozen": sorted({f for k in chosen for f in k.weights.frozen}),
                               "kernels": _kernel_block([k.kernel for k in chosen])})
            return groups

        branch = layer.branch_of(unit)
        return {
            "layer": layer.name, "unit": unit, "branch": branch.name if branch else None,
            "inputs": columns(weights.inputs, "from", "in"), "outputs": columns(weights.outputs, "to", "out"),
            "further_inputs": [dict(columns(f.links, "from", f"in{f.hops}")[0], hops=f.hops)
                               for f in weights.further if f.links],
            "input_count": weights.input_count, "output_count": weights.output_count,
            "excitatory_inputs": weights.excitatory, "inhibitory_inputs": weights.inhibitory,
            "input_l2": _rounded(weights.input_l2), "scale": _rounded(weights.scale),
            "rgb_kernel": None if weights.rgb_kernel is None else np.vectorize(_rounded, otypes=[float])(weights.rgb_kernel).tolist(),
            "about": ABOUT,
        }

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
                        "kernels": "the listed connections' kernels, [connection, height, width], as int8 in base64, "
                                   "each relative to its peak: numpy.frombuffer(base64.b64decode(base64), 'i1')"
                                   ".reshape(shape) / 127 * peak[:, None, None] (within 0.4% of the peak; each "
                                   "layer's page has its own weights, whole)",
                        "anchor": "the cards' ids on the unit's page are ANCHOR-UNIT (page.html#ANCHOR-UNIT)",
                        "positions": "the kernel is a map over the input layer's positions (a dense layer "
                                     "reading a flattened feature map)",
                        "frozen": "gates and layer norms held at their mean over reference images"},
            "settings": self.settings,
            "feature_visualisation": self._picture_recipe(),
        }

    def _picture_recipe(self) -> dict[str, Any] | None:
        """How every feature visualisation was made (from the first unit's positive picture: the
        settings are the cache's key, the same for all)."""
        if self.pictures is None:
            return None
        layer = self.graph.layers[0].name
        record = {k: v for k, v in self.pictures.provenance(layer, 0, 1).items() if k not in PICTURE_FIELDS}
        for key in ("layer", "unit", "objective"):
            record.pop(key, None)
        record["objective"] = {"positive": "maximise the unit's mean activation",
                               "negative": "minimise the unit's mean pre-activation (before its activation function)"}
        return record


def _frozen(links: list[Link]) -> list[str]:
    """What was frozen to linearise these connections (gates, norms), each said once."""
    return sorted({f for k in links for f in k.weights.frozen})


def _factor_scale(factors: LayerFactors, size: int) -> tuple[int, int, int]:
    """Height and width of a layer's factor pictures, and the whole screen pixels per kernel
    position that show them at about ``size`` pixels."""
    h, w = factors.spatial.shape[2:]
    return h, w, max(1, round(size / max(h, w)))


def _factor_data(view: dict[str, Any] | None) -> dict[str, Any] | None:
    """A unit's weight factors for its data file."""
    if view is None:
        return None
    return {"explained": _rounded(view["explained"]),
            "by": "one-sided NMF of the input weights split into excitation and inhibition, three factors",
            "factors": [{"colour": row["colour"], "share": _rounded(row["share"]),
                         "inputs": [{"layer": source, "unit": other, "sign": sign, "coefficient": round(k, 4)}
                                    for source, other, sign, k in row["inputs"]]}
                        for row in view["rows"]]}


def shared(examples: list[dict[str, str]]) -> str:
    """What most of a unit's examples show, from their attributes: "green (8 of 8), ring (6 of 8)", or ""."""
    counts = Counter((k, v) for e in examples for k, v in e.items())
    common = [(n, k, v) for (k, v), n in counts.most_common() if n * 2 > len(examples)]
    return ", ".join(f"{f'{k} {v}' if v[:1].isdigit() else v} ({n} of {len(examples)})" for n, k, v in common[:3])


PICTURE_FIELDS = ("direction", "image", "objective_value", "noise_value", "device")  # per picture; the rest is in about.json


def _pictures_data(pictures: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A unit's pictures for its data file: what differs from unit to unit (how every picture was
    made is in ``units/about.json``)."""
    return None if pictures is None else [{k: p[k] for k in PICTURE_FIELDS} for p in pictures]


def _kernel_block(kernels: list[np.ndarray]) -> dict[str, Any]:
    """Kernels of one shape for the data file, compact: ``[count, height, width]`` int8 in base64,
    each kernel relative to its largest absolute weight (its ``peak``) as 127."""
    stacked = np.stack(kernels).astype(np.float64)
    peaks = np.abs(stacked).reshape(len(stacked), -1).max(axis=1)
    scaled = stacked / np.where(peaks > 0, peaks, 1)[:, None, None] * 127
    return {"shape": list(stacked.shape), "dtype": "int8", "base64":
            base64.b64encode(np.round(scaled).astype(np.int8).tobytes()).decode()}


def _shortened(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def _rounded(x: float) -> float:
    """Six significant digits (rounding to decimals would overflow float32 past 1e32)."""
    return float(f"{x:.6g}")
