"""Section: the unit's weight factors, one-sided NMF of its input weights, as one RGB picture
and the strongest input units of each factor."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..factors import FACTOR_INPUTS
from ..render import factor_grid
from . import Section, rounded, shortened

FACTOR_LARGE = 120  # about this many screen pixels for a unit's own factor picture
FACTOR_NAMES = ("red", "green", "blue")
SHOWN_SHARE = 0.005  # factors with less of a unit's weight are left out of its page
SIGNS = {1: ("wa-exc", "+"), -1: ("wa-inh", "\u2212"), 0: ("", "±")}  # +, minus sign


@dataclass(slots=True)
class Chip:
    """A small link to an input unit of a factor (``templates/sections/factors.html.j2``)."""

    style: str
    href: str
    picture: str | None
    crisp: bool
    layer: str  # its layer's name when the factors mix layers, else ""
    unit: int
    label: str
    short: str
    coefficient: str  # sign first: "+1.00"


class WeightFactors(Section):
    name = "factors"

    def context(self, page) -> dict[str, Any] | None:
        factors = page.site.structure.factors.get(page.layer.name)
        if factors is None:
            return None
        unit, site = page.unit, page.site
        named = len(factors.sources) > 1
        rows = []
        for c in np.argsort(-factors.shares[unit], kind="stable").tolist():
            top = factors.top_inputs(unit, c, FACTOR_INPUTS)
            chips = []
            for source, other, sign, coefficient in top:
                label = site.label(source, other)
                picture = site.picture(source, other)
                chips.append(Chip(SIGNS[sign][0], f"{page.root}{site.slugs[source]}/{other}.html",
                                  picture and page.root + picture.removeprefix("units/"), site.pictures is None,
                                  source if named else "", other, label, shortened(label),
                                  f"{SIGNS[sign][1]}{coefficient:.2f}"))
            rows.append({"factor": c, "colour": FACTOR_NAMES[c], "share": float(factors.shares[unit, c]),
                         "inputs": top, "chips": chips})
        # The page carries its own picture (a few hundred bytes), not the layer's sprite.
        h, w, fx, fy = site.factor_scale(page.layer.name, FACTOR_LARGE)
        picture = base64.b64encode(factor_grid([factors.picture(unit)], 1)).decode()
        explained = float(factors.explained[unit])
        return {"explained": explained, "rows": rows, "shown": SHOWN_SHARE,
                "css": f".wa-nmf{{width:{w * fx}px;height:{h * fy}px;background-image:url(data:image/png;base64,"
                       f"{picture});background-size:100% 100%}}"}

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        if context is None:
            return {"factors": None}
        return {"factors": {
            "explained": rounded(context["explained"]),
            "by": "one-sided NMF of the input weights split into excitation and inhibition, three factors",
            "factors": [{"colour": row["colour"], "share": rounded(row["share"]),
                         "inputs": [{"layer": source, "unit": other, "sign": sign, "coefficient": round(k, 4)}
                                    for source, other, sign, k in row["inputs"]]} for row in context["rows"]]}}


SECTION = WeightFactors()
