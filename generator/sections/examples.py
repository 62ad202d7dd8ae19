"""Section: the dataset images that excite the unit most, and what they share."""

from __future__ import annotations

from collections import Counter
from typing import Any

from PIL import Image

from . import Section


class DatasetExamples(Section):
    name = "dataset-examples"

    def context(self, page) -> dict[str, Any] | None:
        """Copy the unit's strip of examples beside its page; describe them."""
        examples, layer, unit = page.site.examples, page.layer.name, page.unit
        if examples is None:
            return None
        name = f"{unit}.examples.webp"
        source = examples.picture(layer, unit)
        page.write(name, source.read_bytes())
        with Image.open(source) as strip:
            width, height = strip.size
        chosen = examples.of(layer, unit)
        return {"image": name, "width": width, "height": height, "source": examples.description,
                "summary": shared(examples.attributes(layer, unit)), "fired": bool(chosen) and chosen[0].value > 0,
                "examples": [dict(label=e.label, activation=e.value, image=e.image, box=list(e.box)) for e in chosen]}

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        return {"dataset_examples": context}


def shared(examples: list[dict[str, str]]) -> str:
    """What most of a unit's examples show, from their attributes: "green (8 of 8), ring (6 of 8)", or ""."""
    counts = Counter((k, v) for e in examples for k, v in e.items())
    common = [(n, k, v) for (k, v), n in counts.most_common() if n * 2 > len(examples)]
    return ", ".join(f"{f'{k} {v}' if v[:1].isdigit() else v} ({n} of {len(examples)})" for n, k, v in common[:3])


SECTION = DatasetExamples()
