"""Section: a first-layer unit's kernel on the input image, as a colour image and per channel."""

from __future__ import annotations

from typing import Any

from . import Section


class FirstLayerKernel(Section):
    name = "kernel"

    def context(self, page) -> dict[str, Any] | None:
        """The unit's kernel per input channel, all on the unit's scale, so that they compare."""
        kernel = page.weights.rgb_kernel
        if kernel is None:
            return None
        names = ("red", "green", "blue") if len(kernel) == 3 else [f"channel {i}" for i in range(len(kernel))]
        return {"image": f"{page.unit}.png" if page.site.thumbnail(page.layer.name, page.unit) else None,
                "channels": [(name, page.tiles.tile(channel, page.weights.scale)) for name, channel in zip(names, kernel)],
                "scale": page.weights.scale}


SECTION = FirstLayerKernel()
