"""The picture cache: every feature visualisation on disk, under the key of what made it.

A picture's folder is keyed by a hash of the model's weights and a hash of the settings
that change what a picture is (model source, input, steps, size, learning rate, seed,
parameterisation, transforms); settings that only change how fast or where it is made
(batch, jobs, device, engine, address) are not part of it. A picture is written once,
atomically (its data file last), so an interrupted build leaves only whole pictures
behind and the next build makes only the missing ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from ..config import AtlasConfig
from ..files import atomic_write, folder_name
from ..images import as_rgb
from ..render import png
from .optimise import Picture

ALGORITHM = 1  # raise when a change to the optimisation changes the pictures it makes
SPEED_ONLY = ("batch", "jobs", "device", "engine", "address")


def picture_settings(config: AtlasConfig) -> dict[str, Any]:
    """The settings that decide what a picture is: ``height`` and ``width`` are the picture's,
    ``size`` its longer side; ``decorrelate`` is false where it does not apply (not RGB)."""
    settings = dataclasses.asdict(config.featurevis)
    for key in SPEED_ONLY + ("enabled",):
        settings.pop(key)
    settings["height"], settings["width"] = config.picture_shape
    settings["size"] = max(config.picture_shape)
    settings["decorrelate"] = settings["decorrelate"] and config.input.channels == 3
    if settings["precision"] == "float32":
        del settings["precision"]  # as before the setting existed: caches made then stay valid
    return settings


class PictureCache:
    def __init__(self, root: str | Path, weights: str, config: AtlasConfig):
        self.key = {"algorithm": ALGORITHM, "weights": weights, "model": config.model.source,
                    "input": dataclasses.asdict(config.input), "picture": picture_settings(config)}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        self.folder = Path(root) / "featurevis" / weights[:16] / digest[:16]

    def _path(self, layer: str, unit: int, direction: int, suffix: str) -> Path:
        return self.folder / folder_name(layer) / f"{unit}.{'positive' if direction > 0 else 'negative'}{suffix}"

    def image(self, layer: str, unit: int, direction: int) -> Path:
        return self._path(layer, unit, direction, ".png")

    def has(self, layer: str, unit: int, direction: int) -> bool:
        return self._path(layer, unit, direction, ".json").is_file()

    def provenance(self, layer: str, unit: int, direction: int) -> dict[str, Any]:
        return json.loads(self._path(layer, unit, direction, ".json").read_text(encoding="utf-8"))

    def put(self, picture: Picture, device: str) -> None:
        image = self._path(picture.layer, picture.unit, picture.direction, ".png")
        settings = self.key["picture"]
        record = {
            "layer": picture.layer, "unit": picture.unit,
            "direction": "positive" if picture.direction > 0 else "negative",
            "objective": "maximise the unit's mean activation" if picture.direction > 0 else
                         "minimise the unit's mean pre-activation (before its activation function)",
            "objective_value": round(picture.objective, 6), "noise_value": round(picture.noise, 6),
            "noise": "the same mean on uniform-noise images",
            "parameterisation": "Fourier spectrum scaled by 1/frequency" +
                                (", decorrelated colour" if settings["decorrelate"] else "") + ", sigmoid",
            "optimiser": "Adam", **settings, "device": device, "weights_sha256": self.key["weights"],
        }
        atomic_write(image, png(as_rgb(picture.image)))
        atomic_write(image.with_suffix(".json"), json.dumps(record, sort_keys=True, allow_nan=False).encode())
