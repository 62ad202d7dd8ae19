"""The sections of a unit page, in page order. Each is one module and one partial.

A section's module has a :class:`Section`: ``context(page)`` turns what the build knows of
the unit (a :class:`generator.unit_pages.UnitPage`) into the data its partial
``templates/sections/NAME.html.j2`` renders (as ``d``), or None where the unit has nothing to
show there; it may add tiles (``page.tiles``), files beside the page (``page.write``) and
page CSS (``"css"``). ``data(context)`` is what the section adds to the unit's data file.
Adding a section is one module here, listed in :data:`SECTIONS`, and its partial.
"""

from __future__ import annotations

from typing import Any

LABEL_CHARS = 28  # a label longer than this is shortened on cards and chips (in full on hover)


class Section:
    """A part of every unit page; see the module's description."""

    name = ""  # the id of its heading, and the name of its partial

    def context(self, page) -> dict[str, Any] | None:
        raise NotImplementedError

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        return {}


def rounded(x: float, digits: int = 6) -> float:
    """``digits`` significant digits (rounding to decimals would overflow float32 past 1e32)."""
    return float(f"{x:.{digits}g}")


def shortened(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


from . import circuit, connections, examples, factors, kernel, pictures  # noqa: E402 (they import the above)

SECTIONS: list[Section] = [pictures.SECTION, examples.SECTION, kernel.SECTION, circuit.SECTION, factors.SECTION,
                           *connections.SECTIONS]
