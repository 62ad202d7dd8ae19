"""Section: the unit's circuit as a static SVG: its ``circuits.width`` strongest inputs, theirs,
and so on, ``circuits.depth`` layers deep (3 and 2 by default).

Layers are columns, the unit on the right. A unit is its small picture with its number and
label, and links to its page; three or more units of one named family in a column are one
family node, which links to the family on its layer page. An edge is red (excitation) or
blue (inhibition) by its kernel's net sign, as wide as its L2 norm is strong (against the
strongest edge drawn); a family node's edges add up its members'. Where the connections were
measured in the real network (:mod:`generator.linearity`), an edge whose cosine is below
:data:`generator.linearity.MARK` is dashed: the linear view misleads there (a family edge
takes its members' cosines weighted by L2 norm). No script: the diagram is plain SVG in the
page, and works offline.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from ..linearity import MARK
from . import Section, rounded, shortened

NODE = 40  # pixels of a node's picture
ROW = 64  # pixels from one node to the next in a column
COLUMN = 170  # pixels from one column to the next
TEXT_ROOM = 170  # pixels beside the last column's nodes for their captions and labels (up to 28 characters)
GROUPED = 3  # units of one named family in a column that become one family node


@dataclass
class Node:
    key: tuple  # ("unit", layer, unit) or ("family", layer, family)
    href: str
    title: str  # what it is, in full (a tooltip)
    caption: str  # its number, or its family's name
    label: str
    picture: str | None
    column: int
    x: int = 0
    y: int = 0
    members: list[int] = field(default_factory=list)


def draw(site, start: list[tuple[str, int]], root: str, limit: int | None = None) -> dict[str, Any] | None:
    """The circuit of the units ``start`` (one unit, or a family's members) as :func:`svg` draws
    it: their ``circuits.width`` strongest inputs each, theirs, and so on, ``circuits.depth``
    layers deep. ``limit`` keeps only that many units of each column of inputs, those with the
    largest summed L2 norm into the column before. ``root`` leads from the page to the site's
    ``units/`` folder. None: the units have no inputs."""
    settings, linearity = site.config.circuits, site.structure.linearity
    columns: list[dict[tuple[str, int], None]] = [dict.fromkeys(start)]
    # (src, dst) -> (l2, signed l2, cosine and ratio of its measured effect or None)
    edges: dict[tuple[tuple[str, int], tuple[str, int]], tuple[float, float, tuple | None]] = {}
    for depth in range(settings.depth):
        found: dict[tuple[str, int], float] = {}
        for dst in columns[-1]:
            for link in site.strongest_inputs(dst, settings.width):
                src = (link.layer, link.unit)
                found[src] = found.get(src, 0.0) + link.l2
                effects = linearity.of(link.weights) if linearity is not None else None
                measured = (float(effects.cosine[link.row, link.column]), float(effects.ratio[link.row, link.column])) \
                    if effects is not None else None
                edges[(src, dst)] = (link.l2, link.sign * link.l2, measured)
        if limit is not None and len(found) > limit:
            kept = set(sorted(found, key=found.get, reverse=True)[:limit])
            found = {src: l2 for src, l2 in found.items() if src in kept}
        if not found:
            break
        columns.append(dict.fromkeys(found))
    if len(columns) == 1:
        return None
    placed = {unit for column in columns for unit in column}
    edges = {(a, b): e for (a, b), e in edges.items() if a in placed and b in placed}
    nodes, of, height = _nodes(site, root, columns, group_start=len(start) > 1)
    joined: dict[tuple, list] = {}  # node pair -> [l2, signed l2, L2-weighted cosine, ratio, L2 measured]
    for (src, dst), (l2, signed, measured) in edges.items():
        key = (of[src], of[dst])
        joined.setdefault(key, [0.0, 0.0, 0.0, 0.0, 0.0])
        joined[key][0] += l2
        joined[key][1] += signed
        if measured is not None:
            joined[key][2:] = [joined[key][2] + l2 * measured[0], joined[key][3] + l2 * measured[1], joined[key][4] + l2]
    strongest = max(j[0] for j in joined.values())
    lines = []
    for (a, b), (l2, signed, cosines, ratios, weight) in sorted(joined.items(), key=lambda item: item[1][0]):
        cosine, ratio = (cosines / weight, ratios / weight) if weight > 0 else (None, None)
        nonlinear = cosine is not None and cosine < MARK
        lines.append({"x1": nodes[a].x + NODE, "y1": nodes[a].y + NODE // 2, "x2": nodes[b].x,
                      "y2": nodes[b].y + NODE // 2, "width": round(0.75 + 5.25 * l2 / strongest, 2),
                      "sign": ("wa-exc" if signed >= 0 else "wa-inh") + (" wa-nonlinear" if nonlinear else ""),
                      "title": f"{nodes[a].title} \u2192 {nodes[b].title}: L2 {l2:.3g}" + (" (nonlinear)" if nonlinear else ""),
                      "from": a, "to": b, "l2": l2, "signed": signed, "cosine": cosine, "ratio": ratio})
    return {"nodes": list(nodes.values()), "edges": lines, "node": NODE,
            "width": (len(columns) - 1) * COLUMN + NODE + TEXT_ROOM, "height": height + 4,
            "layers": [next(iter(column))[0] for column in reversed(columns)], "follow": settings.width,
            "measured": linearity is not None}


def svg(d: dict[str, Any], aria: str) -> Markup:
    """The diagram of :func:`draw`'s ``d`` as inline SVG, ``aria`` saying what it shows (the
    templates' ``circuit_svg``). Names from the model (titles, captions, labels, ``aria``) are
    escaped; numbers, CSS classes and sanitised file names are the atlas's own. Drawn here
    rather than by a template: a diagram is coordinates, and Jinja's lookups for them took a
    twentieth of every unit page's time."""
    node, width, height = d["node"], d["width"], d["height"]
    out = [f'<div class="wa-scroll"><svg class="wa-circuit" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(aria)}">\n']
    for e in d["edges"]:
        out.append(f'<line class="{e["sign"]}" x1="{e["x1"]}" y1="{e["y1"]}" x2="{e["x2"]}" y2="{e["y2"]}" '
                   f'stroke-width="{e["width"]}"><title>{escape(e["title"])}</title></line>\n')
    for n in d["nodes"]:
        x, y = n.x, n.y
        shown = (f'<image href="{n.picture}" x="{x}" y="{y}" width="{node}" height="{node}" preserveAspectRatio="none"/>'
                 if n.picture else f'<rect x="{x}" y="{y}" width="{node}" height="{node}"/>')
        if n.key[0] == "family":
            shown += f'<rect class="wa-family-node" x="{x - 3}" y="{y - 3}" width="{node + 6}" height="{node + 6}"/>'
        label = f'<text class="wa-circuit-label" x="{x + node + 5}" y="{y + 30}">{escape(n.label)}</text>' if n.label else ""
        out.append(f'<a href="{n.href}"><title>{escape(n.title)}</title>{shown}<text x="{x + node + 5}" y="{y + 16}">'
                   f'{escape(n.caption)}</text>{label}</a>\n')
    out.append("</svg></div>")
    return Markup("".join(out))


def _nodes(site, root: str, columns: list[dict[tuple[str, int], None]],
           group_start: bool = False) -> tuple[dict[tuple, Node], dict, int]:
    """The nodes, placed (columns right to left, each centred), the node of every unit, and
    the height of the tallest column of nodes (units of a family node count once). Units of
    one named family in a column of inputs are one node, and so are ``group_start``'s."""
    nodes: dict[tuple, Node] = {}
    of: dict[tuple[str, int], tuple] = {}
    stacks: list[list[Node]] = []
    for depth, column in enumerate(columns):
        placed: list[Node] = []
        families: dict[str, list[tuple[str, int]]] = {}
        for layer, unit in column:
            family, number = site.family_of[(layer, unit)]
            if family.name not in ("other units", "never fire") and not family.name.startswith("family "):
                families.setdefault(family.name, []).append((layer, unit))
        grouped = {name: members for name, members in families.items()
                   if (len(members) >= GROUPED and depth > 0) or (group_start and depth == 0)}
        for layer, unit in column:
            family, number = site.family_of[(layer, unit)]
            if family.name in grouped:
                key = ("family", layer, family.name)
                if key not in nodes:
                    members = grouped[family.name]
                    node = Node(key, f"{posixpath.normpath(root + '../layers')}/{site.slugs[layer]}.html#family-{number}",
                                f"{layer}: family {family.name} ({len(members)} units here)",
                                f"{len(members)} units", shortened(family.name),
                                site.picture(layer, members[0][1]), len(columns) - 1 - depth,
                                members=[u for _, u in members])
                    nodes[key] = node
                    placed.append(node)
                of[(layer, unit)] = key
                continue
            key = ("unit", layer, unit)
            label = site.label(layer, unit)
            node = Node(key, f"{root}{site.slugs[layer]}/{unit}.html",
                        f"{layer} {unit}" + (f" \u00b7 {label}" if label else ""), f"{layer} {unit}",
                        shortened(label), site.picture(layer, unit), len(columns) - 1 - depth)
            nodes[key] = node
            placed.append(node)
            of[(layer, unit)] = key
        stacks.append(placed)
    height = max(len(placed) for placed in stacks) * ROW
    for placed in stacks:
        top = (height - len(placed) * ROW) // 2
        for i, node in enumerate(placed):
            node.x = node.column * COLUMN + 2
            node.y = top + i * ROW + 2
            if node.picture is not None:
                node.picture = root + node.picture.removeprefix("units/")
    return nodes, of, height


class Circuit(Section):
    name = "circuit"

    def context(self, page) -> dict[str, Any] | None:
        if not page.weights.inputs:
            return None
        return draw(page.site, [(page.layer.name, page.unit)], page.root)

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        if context is None:
            return {"circuit": None}
        index = {n.key: i for i, n in enumerate(context["nodes"])}
        return {"circuit": {
            "by": "the unit, its strongest inputs and theirs (L2 norm of the kernel); edges from node to node, "
                  "the L2 norms (and sums of signed L2 norms) of the kernels they stand for, and the cosine and "
                  "norm ratio of their measured effect in the real network to their expanded weight (weighted by "
                  "L2 norm over a family node's units; null where not measured)",
            "follow": context["follow"],
            "nodes": [{"kind": n.key[0], "layer": n.key[1], **({"unit": n.key[2]} if n.key[0] == "unit" else
                                                                {"family": n.key[2], "units": n.members})}
                      for n in context["nodes"]],
            "edges": [{"from": index[e["from"]], "to": index[e["to"]], "l2": rounded(e["l2"], 4),
                       "signed_l2": rounded(e["signed"], 4),
                       "cosine": None if e["cosine"] is None else rounded(e["cosine"], 2),
                       "ratio": None if e["ratio"] is None else rounded(e["ratio"], 2)} for e in context["edges"]]}}


SECTION = Circuit()
