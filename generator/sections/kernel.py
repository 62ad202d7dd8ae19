"""Section: a first-layer unit's kernel on the input image, as a colour image and per channel."""

from __future__ import annotations

from typing import Any

from ..render import readable_shape, shown_size
from . import Section

SHOWN = 140  # screen pixels of the colour kernel's longer side


class FirstLayerKernel(Section):
    name = "kernel"

    def context(self, page) -> dict[str, Any] | None:
        """The unit's kernel per input channel, all on the unit's scale, so that they compare."""
        kernel = page.weights.rgb_kernel
        if kernel is None:
            return None
        names = ("red", "green", "blue") if len(kernel) == 3 else [f"channel {i}" for i in range(len(kernel))]
        width, height = shown_size(*readable_shape(*kernel.shape[1:]), SHOWN)
        return {"image": f"{page.unit}.png" if page.site.thumbnail(page.layer.name, page.unit) else None,
                "width": width, "height": height, "channel_count": len(kernel),
                "channels": [(name, page.tiles.tile(channel, page.weights.scale)) for name, channel in zip(names, kernel)],
                "scale": page.weights.scale}


SECTION = FirstLayerKernel()
