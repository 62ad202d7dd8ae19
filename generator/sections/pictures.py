"""Section: the unit's feature visualisations, the picture that excites it most and its negative."""

from __future__ import annotations

from typing import Any

from ..render import readable_shape, shown_size, webp
from . import Section

THUMBNAIL = 40  # pixels of a feature visualisation's small copy, for cards, grids, the index and search
THUMBNAIL_QUALITY = 60  # its WebP quality: at 40 pixels, 60 looks as 80 does
LARGE = 128  # at least this many screen pixels for a unit's own feature visualisation
LARGEST = 512  # at most this many, on its longer side (a one-dimensional picture of 4,096 samples)
PICTURE_FIELDS = ("direction", "image", "objective_value", "noise_value", "device")  # per picture; the rest is in about.json


class Pictures(Section):
    name = "feature-visualisation"

    def context(self, page) -> dict[str, Any] | None:
        """Copy the unit's pictures (and the small copy that stands for it elsewhere) beside its page."""
        pictures, unit = page.site.pictures, page.unit
        if pictures is None:
            return None
        shown = []
        for direction in pictures.directions:
            name = f"{unit}.fv.webp" if direction > 0 else f"{unit}.fv-negative.webp"
            image = pictures.picture(page.layer.name, unit, direction)
            page.write(name, webp(image))
            if direction > 0:
                page.write(f"{unit}.thumb.webp", webp(image, THUMBNAIL, THUMBNAIL_QUALITY))
            shown.append(dict(pictures.provenance(page.layer.name, unit, direction), image=name))
        size = max(page.site.config.picture_shape)  # the longer side of a picture
        longest = min(size * max(1, round(LARGE / size)), LARGEST)  # whole screen pixels per pixel, where it fits
        width, height = shown_size(*readable_shape(*page.site.config.picture_shape), longest)
        pad, jitter, rotate = page.site.config.featurevis.transforms.pixels(page.site.config.picture_shape)
        return {"pictures": shown, "width": width, "height": height, "enlarged": longest > size,
                "pad": _pixels(pad), "jitter": _pixels(jitter), "rotate": rotate}

    def data(self, context: dict[str, Any] | None) -> dict[str, Any]:
        """What differs from unit to unit (how every picture was made is in ``units/about.json``)."""
        return {"feature_visualisation": None if context is None else
                [{k: p[k] for k in PICTURE_FIELDS} for p in context["pictures"]]}


def _pixels(sides: tuple[int, int]) -> str:
    """``(down, across)`` pixels in words: "12 px", or "51 px down and 0 across"."""
    down, across = sides
    return f"{down} px" if down == across else f"{down} px down and {across} across"


SECTION = Pictures()
