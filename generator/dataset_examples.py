"""Dataset examples: for every unit, the images that excite it most, and where.

Images come from a folder (every .jpg/.png under it, sorted by path) or from the default
model's procedural generator. They stream through the model cut after the deepest
browsed layer, once, in shards of ``SHARD`` images, jobs of the build's engine (in this
process, or as tasks on a Ray cluster); per unit the ``top`` images with the largest
activation at any position are kept, ties going to the earlier image. Each shard's result
is kept until the layers are written, so a stopped build reads only the shards it had not
finished. Each example is shown as the crop around its strongest position (the part of
the image that position can see, at least a quarter of the image's shorter side, square
where the image allows) and the whole image with that crop outlined. Images are read at
the model's input size, ``(height, width)``; files are read as grey or RGB, and procedural
images are square and RGB, so a model that reads other images has none from those sources.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from tqdm import tqdm

from .config import AtlasConfig
from .engines import Engine, Work, Worker, opened
from .errors import AtlasError
from .files import atomic_write, folder_name
from .graph import LayerGraph
from .network import TracedNetwork
from .images import FILE_CHANNELS, IMAGE_SUFFIXES, REFERENCE_IMAGES, Normalise, as_rgb, load_image, reference_images
from .render import webp

log = logging.getLogger("weight_atlas")

ALGORITHM = 4  # raise when a change here changes which examples are chosen or how they look, or what is kept
RESPONSES = 1024  # images whose every unit's response is kept (for families): the first ones
BATCH = 128
PROCEDURAL_BATCH = 256
PICTURE = 64  # pixels per crop and per whole image in a unit's strip of examples
GAP = 2
EXAMPLES_QUALITY = 70  # WebP quality of a unit's strip of examples


# -- image sources ---------------------------------------------------------------------------
class FolderImages:
    """Every .jpg/.png under a folder (hidden files and folders left out), sorted by path, at the
    model's input size ``(height, width)``."""

    def __init__(self, root: Path, limit: int, size: tuple[int, int], channels: int):
        self.root, self.size, self.channels = root, size, channels
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))  # no hidden ones
        self.files = files[:limit]
        listing = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files]
        self.key = {"folder": str(root.resolve()), "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
        self.unreadable: list[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, size: int, first: int = 0, stop: int | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Images ``first`` to ``stop`` (default: the last) in batches of ``size``, unreadable ones left out."""
        stop = len(self.files) if stop is None else min(stop, len(self.files))
        for start in range(first, stop, size):
            indices, pixels = [], []
            for i in range(start, min(start + size, stop)):
                try:
                    pixels.append(load_image(self.files[i], self.size, self.channels))
                    indices.append(i)
                except (OSError, ValueError, Image.DecompressionBombError) as error:
                    self.unreadable.append(f"{self.files[i].relative_to(self.root)}: {error}")
            if indices:
                yield indices, torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255

    def fetch(self, indices: set[int]) -> dict[int, tuple[np.ndarray, str, dict[str, str]]]:
        """The images ``indices`` as ``[height, width, channels]`` uint8, with their labels (paths)
        and attributes (the folder an image is in, below the dataset's: often its class)."""
        found = {}
        for i in sorted(indices):
            relative = self.files[i].relative_to(self.root)
            folder = {"folder": str(relative.parent)} if relative.parent != Path(".") else {}
            found[i] = (load_image(self.files[i], self.size, self.channels), str(relative), folder)
        return found


class ProceduralImages:
    """The default model's labelled procedural images, drawn in fixed batches from a seed:
    RGB, ``size`` pixels square."""

    def __init__(self, count: int, seed: int, size: int):
        self.count, self.seed, self.size = count, seed, size
        self.key = {"procedural": count, "seed": seed}
        self.unreadable: list[str] = []  # never any

    def __len__(self) -> int:
        return self.count

    def batch(self, number: int):
        """Batch ``number`` of ``PROCEDURAL_BATCH`` images, with their labels."""
        from .default_model.procedural import draw

        state = np.random.SeedSequence([self.seed, number]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state >> np.uint64(1)))
        return draw(min(PROCEDURAL_BATCH, self.count - number * PROCEDURAL_BATCH), self.size, generator)

    def batches(self, size: int, first: int = 0, stop: int | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
        """The batches (always of ``PROCEDURAL_BATCH``, whatever ``size``) that hold images ``first``
        to ``stop``; a shard starts and ends at multiples of ``PROCEDURAL_BATCH``."""
        stop = self.count if stop is None else min(stop, self.count)
        for number in range(first // PROCEDURAL_BATCH, (stop + PROCEDURAL_BATCH - 1) // PROCEDURAL_BATCH):
            images = self.batch(number).images
            yield list(range(number * PROCEDURAL_BATCH, number * PROCEDURAL_BATCH + len(images))), images

    def fetch(self, indices: set[int]) -> dict[int, tuple[np.ndarray, str, dict[str, str]]]:
        """The images ``indices`` as ``[size, size, 3]`` uint8, with labels naming what they show
        and their labelled attributes."""
        from .default_model.procedural import ATTRIBUTES

        found = {}
        for number in sorted({i // PROCEDURAL_BATCH for i in indices}):
            batch = self.batch(number)
            for i in sorted(i for i in indices if i // PROCEDURAL_BATCH == number):
                j = i % PROCEDURAL_BATCH
                pixels = (batch.images[j].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
                attributes = {name: values[int(batch.labels[name][j])] for name, values in ATTRIBUTES.items()}
                found[i] = (pixels, f"procedural image {i}: {_described(attributes)}", attributes)
        return found


def _described(attributes: dict[str, str]) -> str:
    """A procedural image's attributes in words: "green ring on a 45deg grating", others after it."""
    rest = {k: v for k, v in attributes.items() if k not in ("hue", "shape", "orientation")}
    main = (f"{attributes['hue']} {attributes['shape']} on a {attributes['orientation']} grating"
            if {"hue", "shape", "orientation"} <= set(attributes) else "")
    return ", ".join([main] * bool(main) + [f"{k} {v}" for k, v in rest.items()])


def image_source(config: AtlasConfig) -> FolderImages | ProceduralImages | None:
    """The images the config names, or None (with the reason logged) when there are none."""
    source, inp = config.dataset.source, config.input
    if source is None:
        return None
    if source == "procedural":
        if inp.channels != 3:
            log.info("skipped dataset examples: procedural images are RGB and the model reads %d channels",
                     inp.channels)
            return None
        if inp.height != inp.width:
            log.info("skipped dataset examples: procedural images are square and the model reads %d x %d "
                     "(height x width) images", inp.height, inp.width)
            return None
        return ProceduralImages(config.dataset.images, config.dataset.seed, inp.height)
    if inp.channels not in FILE_CHANNELS:
        log.info("skipped dataset examples: image files are read as grey (1 channel) or RGB (3) and the model "
                 "reads %d channels", inp.channels)
        return None
    root = Path(source).expanduser()
    if not root.is_dir():
        log.info("skipped dataset examples: the image folder %s does not exist", root)
        return None
    images = FolderImages(root, config.dataset.images, inp.size, inp.channels)
    if not len(images):
        log.info("skipped dataset examples: no .jpg or .png images under %s", root)
        return None
    return images


def first_images(config: AtlasConfig, shape: tuple[int, int, int], count: int,
                 pixels: bool = True) -> tuple[torch.Tensor | None, str]:
    """The dataset's first ``count`` images as the model reads them, and their description; seeded
    uniform noise of ``shape`` (:func:`generator.images.reference_images`) without a dataset. What
    gates and norms are frozen over, and what measured effects are averaged over. Without
    ``pixels``, procedural images are only described (None for the images): drawing their
    first batch at 224 pixels takes seconds, and a build whose results are cached needs only
    the description."""
    source = image_source(config)
    if not pixels and isinstance(source, ProceduralImages) and source.count > 0:
        return None, f"the first {min(count, source.count, PROCEDURAL_BATCH)} dataset images"
    first = next(source.batches(count), None) if source is not None else None
    if first is not None:
        images = first[1][:count]
        return Normalise(config.input)(images).contiguous(), f"the first {len(images)} dataset images"
    return reference_images(shape, Normalise(config.input)), f"{REFERENCE_IMAGES} uniform-noise images"


# -- the strongest activations ---------------------------------------------------------------
@dataclass
class Strongest:
    """Per unit of one layer, its ``top`` strongest images: activation, image, position."""

    values: torch.Tensor  # [units, top], strongest first
    images: torch.Tensor  # [units, top] image indices
    rows: torch.Tensor  # [units, top] position of the maximum (0 for a layer with no positions)
    columns: torch.Tensor
    fired: torch.Tensor  # [units]: on how many images the unit's maximum is above zero
    responses: torch.Tensor  # [units, RESPONSES]: its maximum on each of the first images (0 beyond them)

    @staticmethod
    def empty(units: int) -> Strongest:
        nothing = torch.empty(units, 0)
        return Strongest(nothing, nothing.long(), nothing.long(), nothing.long(), fired=torch.zeros(units, dtype=torch.long),
                         responses=torch.zeros(units, RESPONSES))

    def merged(self, other: Strongest, top: int) -> Strongest:
        """The strongest ``top`` of both, by value, ties to the earlier image: the same whatever
        order parts of the images are merged in (each image is in one part only)."""
        joined = [torch.cat(pair, dim=1) for pair in zip((self.values, self.images, self.rows, self.columns),
                                                         (other.values, other.images, other.rows, other.columns))]
        by_image = torch.sort(joined[1], dim=1, stable=True).indices
        strongest_first = torch.sort(joined[0].gather(1, by_image), dim=1, descending=True, stable=True).indices
        order = by_image.gather(1, strongest_first[:, :top])
        return Strongest(*(t.gather(1, order) for t in joined), fired=self.fired + other.fired,
                         responses=self.responses + other.responses)


SHARD = 1024  # images per shard (a Ray task; a part kept on disk): a multiple of both batch sizes


def strongest(model: torch.nn.Module, names: list[str], batches: Iterable[tuple[list[int], torch.Tensor]],
              normalise: Normalise, top: int, device: torch.device,
              progress: Callable[[int], object] = lambda count: None) -> dict[str, Strongest]:
    """Every unit's strongest images among ``batches``; ``model`` maps images to the values of ``names``."""
    found: dict[str, Strongest] = {}
    with torch.no_grad():
        for indices, images in batches:
            values = model(normalise(images.to(device)))
            index = torch.tensor(indices)
            for name, value in zip(names, values):
                flat = value.float().reshape(len(value), value.shape[1], -1).cpu()
                peak, where = flat.max(dim=2)  # [B, units]; the first position on ties
                if not torch.isfinite(peak).all():
                    raise AtlasError(
                        f"The activations of `{name}` on dataset images are not finite (NaN or infinity): the model "
                        f"overflows float32 (are its weights far too large?). Check the checkpoint, or build "
                        f"without dataset examples (leave `dataset.source` out).")
                width = value.shape[3] if value.dim() == 4 else 1
                responses = torch.zeros(peak.shape[1], RESPONSES)
                first = index < RESPONSES
                responses[:, index[first]] = peak[first].T
                batch = Strongest(peak.T, index.expand(peak.shape[1], -1), (where // width).T, (where % width).T,
                                  fired=(peak > 0).sum(dim=0), responses=responses)
                found[name] = found[name].merged(batch, top=top) if name in found else \
                    Strongest.empty(peak.shape[1]).merged(batch, top=top)
            progress(len(indices))
    return found


def merge_parts(parts: Iterable[dict[str, Strongest]], top: int) -> dict[str, Strongest]:
    """One result from the results of disjoint parts of the images, in any order."""
    found: dict[str, Strongest] = {}
    for part in parts:
        for name, best in part.items():
            found[name] = found[name].merged(best, top=top) if name in found else best
    return found


def windows(model: torch.nn.Module, names: list[str], inp, normalise: Normalise,
            device: torch.device) -> dict[str, tuple[int, int, int, int] | None]:
    """Per spatial layer, the image window its centre position sees, ``(top, left, bottom, right)``,
    from the gradient of that position's channels with respect to a few noise images."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, *inp.shape, generator=generator).to(device).requires_grad_(True)
    found = {}
    for name, value in zip(names, model(normalise(images))):
        if value.dim() != 4:
            found[name] = None
            continue
        centre = value[:, :, value.shape[2] // 2, value.shape[3] // 2]
        (gradient,) = torch.autograd.grad(centre.abs().sum(), images, retain_graph=True)
        seen = gradient.abs().sum(dim=(0, 1)).cpu() > 0
        rows, columns = torch.nonzero(seen.any(dim=1)), torch.nonzero(seen.any(dim=0))
        if not len(rows):
            found[name] = (0, 0, inp.height, inp.width)
            continue
        found[name] = (int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1)
    return found


def crop_box(window: tuple[int, int, int, int] | None, layer_size: tuple[int, int], row: int, column: int,
             image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The crop of an image of ``image_size = (height, width)`` around position ``(row, column)``
    of a layer: the window of the layer's centre moved there, kept inside the image. It is a
    square whose side is the window's longer side, at least a quarter of the image's shorter
    side, and cut to the image along an axis where the image is shorter than that."""
    height, width = image_size
    if window is None:
        return (0, 0, height, width)
    top, left, bottom, right = window
    step_y, step_x = height / layer_size[0], width / layer_size[1]
    dy, dx = round((row - layer_size[0] // 2) * step_y), round((column - layer_size[1] // 2) * step_x)
    side = max(bottom - top, right - left, min(height, width) // 4, 1)
    crop_height, crop_width = min(side, height), min(side, width)
    centre_y, centre_x = (top + bottom) / 2 + dy, (left + right) / 2 + dx
    y0 = int(min(max(round(centre_y - crop_height / 2), 0), height - crop_height))
    x0 = int(min(max(round(centre_x - crop_width / 2), 0), width - crop_width))
    return (y0, x0, y0 + crop_height, x0 + crop_width)


# -- the stage ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    image: int
    label: str
    value: float
    box: tuple[int, int, int, int]  # (top, left, bottom, right) in the image at the model's input (height, width)


class Examples:
    """The stage's output: per unit its examples and the picture of them, in the cache. Each
    layer's files are read once."""

    def __init__(self, folder: Path, description: str):
        self.folder, self.description = folder, description
        self._read: dict[tuple[str, str], Any] = {}

    def _layer(self, layer: str) -> Path:
        return self.folder / folder_name(layer)

    def _data(self, layer: str, name: str) -> Any:
        if (layer, name) not in self._read:
            self._read[(layer, name)] = json.loads((self._layer(layer) / name).read_text(encoding="utf-8"))
        return self._read[(layer, name)]

    def of(self, layer: str, unit: int) -> list[Example]:
        return [Example(e["image"], e["label"], e["value"], tuple(e["box"])) for e in self._data(layer, "examples.json")[unit]]

    def peaks(self, layer: str) -> list[float]:
        """Per unit of ``layer``, its largest activation over all the images read: at or below
        zero, the unit never fired."""
        return [chosen[0]["value"] if chosen else 0.0 for chosen in self._data(layer, "examples.json")]

    def activity(self, layer: str) -> list[float]:
        """Per unit of ``layer``, the share of the images read on which it fires (its largest
        value over positions is above zero)."""
        data = self._data(layer, "activity.json")
        return [fired / max(data["images"], 1) for fired in data["fired"]]

    def picture(self, layer: str, unit: int) -> Path:
        return self._layer(layer) / f"{unit}.webp"

    def responses(self, layer: str) -> np.ndarray:
        """Per unit of ``layer``, its largest value on each of the first (up to ``RESPONSES``) images:
        ``[units, images]``."""
        return np.load(self._layer(layer) / "responses.npy", allow_pickle=False).astype(np.float32)

    def attributes(self, layer: str, unit: int) -> list[dict[str, str]]:
        """The attributes of each of the unit's examples (such as hue and shape), strongest first."""
        return [e.get("attributes", {}) for e in self._data(layer, "examples.json")[unit]]

    def whole(self, layer: str, channels: int) -> bool:
        """Whether the cache holds this layer's examples whole; a damaged layer is deleted (and so
        made again)."""
        folder = self._layer(layer)
        if not (folder / "examples.json").is_file():
            return False
        problem = check_examples(folder, channels)
        if problem is None:
            return True
        log.warning("cached dataset examples were damaged and are made again: %s (%s)", folder, problem)
        shutil.rmtree(folder, ignore_errors=True)
        return False


def check_examples(folder: Path, channels: int | None = None) -> str | None:
    """What is wrong with one layer's cached examples in ``folder`` (None: nothing): both data
    files must parse and hold one well-formed entry per unit (``channels`` of them, when
    given), with finite values, and every unit's strip must be a whole WebP file."""
    try:
        records = json.loads((folder / "examples.json").read_bytes().decode("utf-8"))
        activity = json.loads((folder / "activity.json").read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"a data file is missing or does not parse ({type(error).__name__})"
    if not isinstance(records, list) or (channels is not None and len(records) != channels):
        return "examples.json does not hold one entry per unit"
    if not isinstance(activity, dict) or not _count(activity.get("images")) or \
            not isinstance(activity.get("fired"), list) or len(activity["fired"]) != len(records) or \
            not all(_count(n) for n in activity["fired"]):
        return "activity.json does not hold a count per unit"
    for chosen in records:
        if not isinstance(chosen, list) or not all(_example(e) for e in chosen):
            return "examples.json holds an entry that is not a list of examples"
    try:
        responses = np.load(folder / "responses.npy", allow_pickle=False)
    except (OSError, ValueError) as error:
        return f"responses.npy is missing or does not read ({type(error).__name__})"
    if responses.ndim != 2 or len(responses) != len(records) or not np.isfinite(responses).all():
        return "responses.npy does not hold finite responses, a row per unit"
    for unit in range(len(records)):
        if not _whole_webp(folder / f"{unit}.webp"):
            return f"the picture {unit}.webp is not a whole WebP file"
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _example(entry: Any) -> bool:
    return (isinstance(entry, dict) and _count(entry.get("image")) and isinstance(entry.get("label"), str)
            and isinstance(entry.get("value"), (int, float)) and not isinstance(entry.get("value"), bool)
            and math.isfinite(entry["value"]) and isinstance(entry.get("box"), list) and len(entry["box"]) == 4
            and all(_count(b) for b in entry["box"])
            and isinstance(entry.get("attributes", {}), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in entry.get("attributes", {}).items()))


def _whole_webp(path: Path) -> bool:
    """A WebP file (RIFF container) whose header's length is the file's: not cut short or grown."""
    try:
        with open(path, "rb") as file:
            header = file.read(12)
            size = path.stat().st_size
    except OSError:
        return False
    return (len(header) == 12 and header[:4] == b"RIFF" and header[8:12] == b"WEBP"
            and int.from_bytes(header[4:8], "little") + 8 == size)


def find_examples(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph, weights: str,
                  engine: Engine | None = None) -> Examples | None:
    """Dataset examples of every unit (from the cache when nothing changed), or None without
    images. Shards run on ``engine`` (the build's), else on the config's own engine."""
    source = image_source(config)
    if source is None:
        return None
    key = {"algorithm": ALGORITHM, "weights": weights, "model": config.model.source, "source": source.key,
           "input": dataclasses.asdict(config.input), "top": config.dataset.top}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    examples = Examples(Path(config.cache) / "examples" / weights[:16] / digest[:16],
                        f"{len(source):,} {'procedural images' if isinstance(source, ProceduralImages) else 'images from ' + Path(config.dataset.source).name}")
    layers = [layer for layer in graph.layers if not examples.whole(layer.name, layer.channels)]
    if not layers:
        log.info("dataset examples: all layers from the cache %s", examples.folder)
        return examples
    names = [layer.name for layer in layers]
    assert SHARD % BATCH == 0 and SHARD % PROCEDURAL_BATCH == 0, "a shard must hold whole batches"
    parts = Parts(examples.folder, names)
    shards = [(first, min(first + SHARD, len(source))) for first in range(0, len(source), SHARD)]
    done = {shard: part for shard in shards if (part := parts.load(*shard)) is not None}
    if done:
        log.info("dataset examples: %d of %d shards of %d images from an earlier build", len(done), len(shards), SHARD)
    missing = [shard for shard in shards if shard not in done]
    with tqdm(total=len(source), desc="dataset examples", unit="image", leave=False, disable=None) as progress:
        progress.update(sum(stop - first for first, stop in done))
        if missing:
            sent = config  # what jobs read: workers look for a folder of images where the build found it
            if isinstance(source, FolderImages):
                sent = dataclasses.replace(config, dataset=dataclasses.replace(config.dataset,
                                                                               source=str(source.root.resolve())))
            tasks = [(sent, names, source.key, first, stop) for first, stop in missing]
            with opened(config, network, graph, engine) as engine:
                log.info("dataset examples: %d images in %d shards on %s", sum(stop - first for first, stop in missing),
                         len(missing), engine.where(EXAMPLES, len(tasks)))
                with closing(engine.run(EXAMPLES, tasks, progress.update)) as finished:  # on an error, stops its jobs
                    for (*_, first, stop), part in finished:
                        parts.save(first, stop, *part)
                        done[(first, stop)] = part
    found = merge_parts((part for part, _ in done.values()), config.dataset.top)
    device = next(network.model.parameters()).device  # where the build's model is now
    truncated = network.truncated([graph.values[name] for name in names]).eval().requires_grad_(False)
    seen = windows(truncated, names, config.input, Normalise(config.input, device), device)
    for reason in sorted(reason for _, skipped in done.values() for reason in skipped):
        log.warning("skipped an unreadable image: %s", reason)
    if not found:
        log.warning("skipped dataset examples: none of the %d images under %s could be read", len(source),
                    config.dataset.source)
        return None
    images = source.fetch({int(i) for best in found.values() for i in best.images.flatten().tolist()})
    for layer in layers:
        _write_layer(examples._layer(layer.name), found[layer.name], seen[layer.name], layer.shape, images,
                     config.input.size, len(source))  # (height, width)
    parts.clear()
    return examples


Part = tuple[dict[str, Strongest], list[str]]  # one shard's strongest images, and its unreadable ones


class Parts:
    """Each finished shard's strongest images of some layers, kept on disk until those layers
    are written, so a build stopped part way reads only the shards it had not finished."""

    FIELDS = ("values", "images", "rows", "columns", "fired", "responses")

    def __init__(self, folder: Path, names: list[str]):
        self.root = folder / "parts"
        self.names = names
        self.folder = self.root / hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]

    def _path(self, first: int, stop: int) -> Path:
        return self.folder / f"{first}-{stop}.safetensors"

    def load(self, first: int, stop: int) -> Part | None:
        path = self._path(first, stop)
        if not path.is_file():
            return None
        part = read_part(path)
        if isinstance(part, str):
            log.warning("a cached shard of dataset examples was damaged and is made again: %s (%s)", path, part)
            path.unlink(missing_ok=True)
            return None
        found, unreadable = part
        return {name: found[str(i)] for i, name in enumerate(self.names) if str(i) in found}, unreadable

    def save(self, first: int, stop: int, found: dict[str, Strongest], unreadable: list[str]) -> None:
        tensors = {f"{i}.{field}": getattr(found[name], field).contiguous()
                   for i, name in enumerate(self.names) if name in found for field in self.FIELDS}
        atomic_write(self._path(first, stop), save(tensors, metadata={"unreadable": json.dumps(unreadable)}))

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def read_part(path: Path) -> tuple[dict[str, Strongest], list[str]] | str:
    """A shard's result as :meth:`Parts.save` wrote it, by layer number, and its unreadable
    images; or, for a damaged file, what is wrong with it."""
    try:
        with safe_open(str(path), "pt") as stored:
            tensors = {key: stored.get_tensor(key) for key in stored.keys()}
            unreadable = json.loads((stored.metadata() or {}).get("unreadable", "null"))
        numbers = {key.partition(".")[0] for key in tensors}
        found = {n: Strongest(**{field: tensors[f"{n}.{field}"] for field in Parts.FIELDS}) for n in numbers}
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        return f"it does not read ({type(error).__name__})"
    if not all(_well_formed(best) for best in found.values()):
        return "its tensors have the wrong shapes or values"
    if not isinstance(unreadable, list) or not all(isinstance(u, str) for u in unreadable):
        return "its list of unreadable images is not a list of text"
    return found, unreadable


def _well_formed(best: Strongest) -> bool:
    """Whether a shard's result read from disk has the shapes and types :func:`strongest` gives,
    and finite values."""
    shape = best.values.shape
    return (best.values.dim() == 2 and best.values.is_floating_point() and bool(torch.isfinite(best.values).all())
            and all(t.shape == shape and t.dtype == torch.long and bool((t >= 0).all())
                    for t in (best.images, best.rows, best.columns))
            and best.fired.shape == shape[:1] and best.fired.dtype == torch.long
            and best.responses.shape == (shape[0], RESPONSES) and bool(torch.isfinite(best.responses).all()))


def strongest_on_worker(worker: Worker, shard) -> Part:
    """On a worker: :func:`strongest` over one shard, and the images of it that could not be read."""
    config, names, key, first, stop = shard
    memo = worker.memo.get("examples")
    if memo is None or memo[0] != (config, names):
        network, graph = worker.traced(config.input.shape)
        truncated = network.truncated([graph.values[name] for name in names]).eval().requires_grad_(False)
        memo = worker.memo["examples"] = ((config, names), truncated.to(worker.device), image_source(config))
    _, truncated, source = memo
    if source is None or source.key != key:
        raise AtlasError("The dataset images a worker sees are not those of the build: `dataset.source` must be at "
                         "the same path, with the same files, on every machine that runs jobs (every node of a "
                         "Ray cluster).")
    source.unreadable = []
    found = strongest(truncated, names, source.batches(BATCH, first, stop), Normalise(config.input, worker.device),
                      config.dataset.top, worker.device, worker.progress)
    return found, source.unreadable


def _describe_shard(shard) -> str:
    return f"The dataset examples of images {shard[3]} to {shard[4] - 1}"


EXAMPLES = Work("dataset-examples", strongest_on_worker, _describe_shard, size=lambda shard: shard[4] - shard[3],
                in_build=True)  # one quick pass over the images: not worth workers on this machine


def _write_layer(folder: Path, best: Strongest, window, shape,
                 images: dict[int, tuple[np.ndarray, str, dict[str, str]]], size: tuple[int, int], count: int) -> None:
    atomic_write(folder / "activity.json", json.dumps({"images": count, "fired": best.fired.tolist()}).encode())
    responses = io.BytesIO()
    np.save(responses, best.responses[:, :min(count, RESPONSES)].numpy().astype(np.float16), allow_pickle=False)
    atomic_write(folder / "responses.npy", responses.getvalue())
    records = []
    for unit in range(len(best.values)):
        chosen = []
        for value, image, row, column in zip(*(t[unit].tolist() for t in
                                               (best.values, best.images, best.rows, best.columns))):
            box = crop_box(window, tuple(shape[1:3]) if len(shape) == 3 else (1, 1), row, column, size)
            chosen.append({"image": image, "label": images[image][1], "attributes": images[image][2],
                           "value": round(value, 6), "box": box})
        records.append(chosen)
        atomic_write(folder / f"{unit}.webp", _strip([as_rgb(images[e["image"]][0]) for e in chosen],
                                                     [e["box"] for e in chosen]))
    atomic_write(folder / "examples.json", json.dumps(records, allow_nan=False).encode())  # last: the layer is complete


def _fit(width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` scaled to fit a ``PICTURE``-pixel square, keeping the aspect."""
    scale = PICTURE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _strip(images: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> bytes:
    """One WebP picture: the crops in the top row, the whole images with the crop outlined below
    (one row only, when every crop is the whole image). Each column is ``PICTURE`` pixels
    wide; a picture that is not square is fitted into it (keeping its aspect) and centred,
    and the row of whole images is as tall as they are."""
    n = max(len(images), 1)
    whole_images = all(box == (0, 0, len(image), image.shape[1]) for image, box in zip(images, boxes))
    height, width = images[0].shape[:2] if images else (PICTURE, PICTURE)
    small_size = _fit(width, height)  # a whole image, in the strip
    top_row = 0 if whole_images else PICTURE + GAP
    canvas = Image.new("RGB", (n * (PICTURE + GAP) - GAP, top_row + small_size[1]), "white")
    for i, (pixels, (top, left, bottom, right)) in enumerate(zip(images, boxes)):
        whole = Image.fromarray(pixels)
        x = i * (PICTURE + GAP)
        crop = whole.crop((left, top, right, bottom))
        shown = _fit(crop.width, crop.height)
        enlarge = shown[0] > crop.width
        crop = crop.resize(shown, Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS)
        canvas.paste(crop, (x + (PICTURE - shown[0]) // 2, (PICTURE - shown[1]) // 2 if top_row else 0))
        if whole_images:
            continue
        small = whole.resize(small_size, Image.Resampling.LANCZOS)
        sx, sy = small_size[0] / whole.width, small_size[1] / whole.height
        x0, y0 = left * sx, top * sy  # the outline, at least one pixel wide and high
        ImageDraw.Draw(small).rectangle((x0, y0, max(x0, right * sx - 1), max(y0, bottom * sy - 1)),
                                        outline=(255, 0, 64))
        canvas.paste(small, (x + (PICTURE - small_size[0]) // 2, top_row))
    return webp(canvas, quality=EXAMPLES_QUALITY)
