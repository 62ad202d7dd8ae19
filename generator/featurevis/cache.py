"""The picture cache: every feature visualisation on disk, under the key of what made it.

A picture's folder is keyed by a hash of the model's weights and a hash of the settings
that change what a picture is (model source, input, steps, size, learning rate, seed,
parameterisation, transforms); settings that only change how fast or where it is made
(batch, jobs, device, engine, address) are not part of it. A picture is written once,
atomically (its data file last), so an interrupted build leaves only whole pictures
behind and the next build makes only the missing ones.

A picture found in the cache is checked before it is used (:meth:`PictureCache.check`):
its data file must parse, name this picture and these settings, and hold finite numbers,
and its image must be a whole PNG of the picture's size. A damaged picture is logged by
its path, deleted and made again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from PIL import Image

from ..config import AtlasConfig
from ..errors import AtlasError
from ..files import atomic_write, folder_name
from ..images import as_rgb
from ..render import png
from .objectives import describe
from .optimise import Picture

log = logging.getLogger("weight_atlas")

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

    def picture(self, layer: str, unit: int, direction: int) -> Image.Image:
        """The picture, decoded. One whose data cannot be decoded (the build checked its file's
        chunks, but not the data inside) is deleted, so that the next build makes it again."""
        path = self.image(layer, unit, direction)
        try:
            with Image.open(path) as image:
                image.load()
                return image
        except Exception as error:  # PIL raises many kinds for a damaged file  # noqa: BLE001
            path.with_suffix(".json").unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise AtlasError(f"The cached picture {path} could not be decoded ({type(error).__name__}); it was damaged "
                             f"after it was checked, and is now deleted. Build again: it is made anew.") from None

    def has(self, layer: str, unit: int, direction: int) -> bool:
        """Whether the cache holds this picture whole; a damaged one is deleted (and so made again)."""
        record = self._path(layer, unit, direction, ".json")
        if not record.is_file():
            return False
        problem = check_picture(record, self.key)
        if problem is None:
            return True
        log.warning("a cached picture was damaged and is made again: %s (%s)", record.with_suffix(".png"), problem)
        record.unlink(missing_ok=True)
        record.with_suffix(".png").unlink(missing_ok=True)
        return False

    def provenance(self, layer: str, unit: int, direction: int) -> dict[str, Any]:
        return json.loads(self._path(layer, unit, direction, ".json").read_text(encoding="utf-8"))

    def put(self, picture: Picture, device: str) -> None:
        image = self._path(picture.layer, picture.unit, picture.direction, ".png")
        settings = self.key["picture"]
        record = {
            "layer": picture.layer, "unit": picture.unit,
            "direction": "positive" if picture.direction > 0 else "negative",
            "objective": describe(picture.direction),
            "objective_value": round(picture.objective, 6), "noise_value": round(picture.noise, 6),
            "noise": "the same mean on uniform-noise images",
            "parameterisation": "Fourier spectrum scaled by 1/frequency" +
                                (", decorrelated colour" if settings["decorrelate"] else "") + ", sigmoid",
            "optimiser": "Adam", **settings, "device": device, "weights_sha256": self.key["weights"],
        }
        atomic_write(image, png(as_rgb(picture.image)))
        atomic_write(image.with_suffix(".json"), json.dumps(record, sort_keys=True, allow_nan=False).encode())


def check_picture(record: Path, key: dict[str, Any] | None = None) -> str | None:
    """What is wrong with the cached picture whose data file is ``record`` (None: nothing).

    Checked without the cache's key: the data file parses, names the unit, direction and
    layer its path names, and holds finite numbers; the image beside it is a whole PNG of the
    size the data file gives. With ``key``, its weights and settings must be the key's too.
    """
    unit, _, direction = record.name.removesuffix(".json").partition(".")
    try:
        data = json.loads(record.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"its data file does not parse ({type(error).__name__})"
    if not isinstance(data, dict):
        return "its data file is not a record"
    if str(data.get("unit")) != unit or data.get("direction") != direction or \
            not isinstance(data.get("layer"), str) or folder_name(data["layer"]) != record.parent.name:
        return "its data file names another picture"
    if not all(isinstance(data.get(k), (int, float)) and not isinstance(data.get(k), bool) and math.isfinite(data[k])
               for k in ("objective_value", "noise_value")):
        return "its data file holds a value that is not a finite number"
    weights = data.get("weights_sha256")
    if not isinstance(weights, str) or weights[:16] != record.parent.parent.parent.name:
        return "its data file names other weights"
    if key is not None:
        expected = json.loads(json.dumps(key["picture"]))
        if weights != key["weights"] or any(data.get(name) != value for name, value in expected.items()):
            return "its data file records other settings"
    try:
        with Image.open(record.with_suffix(".png")) as image:
            image.verify()  # every chunk whole, its checksum right
            size = image.size
    except Exception as error:  # PIL raises many kinds for a damaged file  # noqa: BLE001
        return f"its image is not a whole PNG ({type(error).__name__})"
    if size != (data.get("width"), data.get("height")):
        return f"its image is {size[0]} x {size[1]} pixels, not {data.get('width')} x {data.get('height')}"
    return None
