"""Atlas configs: one YAML file per model in ``site_config/``, read into plain dataclasses.

Every key is checked: an unknown key (a typo) or a value of the wrong type stops the
build with an error naming the key, the file and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import AtlasError
from .yaml_input import preview, read_yaml

MAX_HOPS = 3
MAX_SEED = 2**32 - 1
MAX_SIDE = 4096  # pixels: the largest input side and picture side
MAX_TEXT = 200  # characters of a title
MAX_PATH = 4096  # characters of a path, a source or an address
MAX_CONFIG = 1024 * 1024  # bytes of an atlas config file


def setting(default: Any, smallest: float, largest: float, above: bool = False) -> Any:
    """A dataclass field whose numbers (each one, for a list; its length, for text) must lie in
    ``[smallest, largest]``, or in ``(smallest, largest]`` when ``above``."""
    return field(default=default, metadata={"range": (smallest, largest, above)})


@dataclass(frozen=True)
class ModelConfig:
    """Which network to load (``default``, ``inceptionv1``, ``torchvision:NAME`` or
    ``package.module:factory``), the checkpoint to read, and where to download it from."""

    source: str = "default"
    checkpoint: str | None = None
    url: str | None = None  # http:// or https:// only
    sha256: str | None = None  # the checkpoint's SHA-256, checked before it is used


@dataclass(frozen=True)
class InputConfig:
    """The image the model expects: channels, size and per-channel normalisation.

    In a config file ``size`` is a whole number (a square image, such as 224) or
    ``[height, width]`` (such as [224, 320]); it is stored as ``(height, width)``, and
    :attr:`shape` is ``(channels, height, width)``. ``mean`` and ``std`` left out are 0.5
    and 0.25 for every channel, so ``channels: 1`` alone describes a grayscale model.
    """

    channels: int = setting(3, 1, 1024)
    size: tuple[int, int] = setting((64, 64), 1, MAX_SIDE)  # (height, width); an int given here means a square
    mean: tuple[float, ...] | None = None  # None: 0.5 per channel
    std: tuple[float, ...] | None = None  # None: 0.25 per channel

    def __post_init__(self) -> None:
        if isinstance(self.size, int):
            object.__setattr__(self, "size", (self.size, self.size))
        else:
            object.__setattr__(self, "size", tuple(self.size))
        if self.mean is None:
            object.__setattr__(self, "mean", (0.5,) * self.channels)
        if self.std is None:
            object.__setattr__(self, "std", (0.25,) * self.channels)

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)``: one image as the model reads it, without the batch."""
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class RankingConfig:
    """How many of a unit's strongest connections are listed, each way, and how far back."""

    top_k: int = setting(24, 1, 1000)
    hops: int = setting(1, 1, MAX_HOPS)  # 2 also lists inputs from two layers up (expanded weights), and so on
    memory_mb: int = setting(2048, 1, 1024 * 1024)  # the largest expanded-weight map composed; larger pairs are skipped


@dataclass(frozen=True)
class FactorsConfig:
    """Factorised views: each unit's input weights by one-sided NMF, and families of units.

    A unit's inputs are listed by factor when its three factors explain at least
    ``grouped`` of its incoming weights (their squared L2 norm). Without annotated families,
    each layer is split into ``families`` automatic ones (0: about the square root of half
    its units).
    """

    grouped: float = setting(0.6, 0, 1, above=True)
    families: int = setting(0, 0, 1000)


@dataclass(frozen=True)
class CircuitsConfig:
    """Each unit page's circuit: the unit, its ``width`` strongest inputs, theirs, and so on,
    ``depth`` layers deep. ``linearity``: measure each connection's effect in the real network
    and compare it with its expanded weight (:mod:`generator.linearity`), in atlases that
    have pictures or a dataset."""

    depth: int = setting(2, 1, 4)
    width: int = setting(3, 1, 8)
    linearity: bool = True


@dataclass(frozen=True)
class SiteConfig:
    """Where and how the site is written."""

    output: str = "site"
    tile_size: int = setting(48, 1, 256)  # screen pixels a kernel tile is enlarged to (a whole number per weight)


@dataclass(frozen=True)
class TransformConfig:
    """Robustness transforms applied to the image at every optimisation step (Lucid's set).

    The image is padded with grey by ``pad``, then a window of it is taken, moved by up to
    ``jitter``, scaled by a factor drawn from ``scale`` and turned by up to ``rotate``
    degrees either way. ``pad`` and ``jitter`` below 1 are shares of the picture's side,
    along each axis (the defaults, 0.05 and 0.04, are Lucid's 12 and 8 pixels at 224); 1 or
    more are pixels (:meth:`pixels`). Rotation is off for pictures under ``MIN_TURNED``
    pixels on a side, such as a one-dimensional model's.
    """

    pad: float = setting(0.05, 0, MAX_SIDE)
    jitter: float = setting(0.04, 0, MAX_SIDE)
    scale: tuple[float, ...] = setting((0.95, 1.05), 0, 10, above=True)  # smallest and largest factor
    rotate: float = setting(10.0, 0, 180)  # degrees

    MIN_TURNED: ClassVar[int] = 8

    def pixels(self, shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int], float]:
        """For a picture of ``(height, width)``: the padding and the jitter in whole pixels,
        each ``(down, across)``, and the rotation in degrees."""
        def whole(value: float, side: int) -> int:
            return round(value * side) if value < 1 else round(value)

        return (tuple(whole(self.pad, side) for side in shape), tuple(whole(self.jitter, side) for side in shape),
                self.rotate if min(shape) >= self.MIN_TURNED else 0.0)


@dataclass(frozen=True)
class FeatureVisConfig:
    """Feature visualisation: for every unit, an image optimised to excite it.

    ``size`` 0 means pictures of the model's input size, ``(height, width)``. A positive
    ``size`` is the picture's longer side in pixels; the shorter side is scaled to keep the
    input's aspect (rounded, at least 1 pixel), so a square input gives ``size`` x ``size``
    pictures and a 40 x 56 input with ``size: 112`` gives 80 x 112 ones
    (:meth:`picture_shape`). ``jobs`` is how many processes share the work
    (``auto``: one per CPU core, or one on a GPU); ``device`` is ``auto``, ``cpu`` or
    ``cuda`` (``cuda:N``). ``batch`` is how many units are optimised together in one job
    (0: 32 on a CPU; on a GPU, as many as fit in 80% of its free memory, at most 512).
    ``precision`` is ``float32`` or ``bfloat16`` (the model's forward pass in bfloat16,
    where the device has it; each picture's objective is still measured in float32).
    ``engine`` is where jobs run: ``local`` (this machine) or ``ray`` (a Ray cluster, at
    ``address`` when given, else the one Ray finds or starts; dataset examples then run
    there too, in shards).
    """

    enabled: bool = True
    steps: int = setting(512, 1, 100_000)
    size: int = setting(0, 0, MAX_SIDE)
    learning_rate: float = setting(0.05, 0, 100, above=True)
    seed: int = setting(0, 0, MAX_SEED)
    negative: bool = True  # also optimise the opposite direction
    decorrelate: bool = True  # Fourier parameterisation with decorrelated colour
    transforms: TransformConfig = field(default_factory=TransformConfig)
    batch: int = setting(0, 0, 4096)
    precision: str = "float32"
    jobs: str = "auto"
    device: str = "auto"
    engine: str = "local"
    address: str | None = None

    def picture_shape(self, inp: InputConfig) -> tuple[int, int]:
        """``(height, width)`` of a picture for a model that reads ``inp``."""
        if not self.size:
            return inp.size
        longer = max(inp.size)
        return tuple(max(1, round(side * self.size / longer)) for side in inp.size)


@dataclass(frozen=True)
class DatasetConfig:
    """Dataset examples: the images that excite each unit most.

    ``source`` is a folder of .jpg/.png images (searched recursively) or ``procedural``
    (the default model's image generator); empty means no dataset examples. At most
    ``images`` images are read; each unit shows its ``top`` strongest.
    """

    source: str | None = None
    images: int = setting(4096, 1, 10_000_000)
    top: int = setting(8, 1, 64)
    seed: int = setting(0, 0, MAX_SEED)  # for the procedural generator


@dataclass(frozen=True)
class AtlasConfig:
    title: str = setting("Weight Atlas", 1, MAX_TEXT)
    layers: tuple[str, ...] | None = None  # the browsed layers to include (default: all)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    featurevis: FeatureVisConfig = field(default_factory=FeatureVisConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    factors: FactorsConfig = field(default_factory=FactorsConfig)
    circuits: CircuitsConfig = field(default_factory=CircuitsConfig)
    labels: str | None = None  # unit labels and families; default: <config name>.labels.yml beside the config
    site: SiteConfig = field(default_factory=SiteConfig)
    cache: str = ".atlas-cache"  # feature visualisations and dataset examples, reused across builds
    path: str = "<built-in>"  # the file it came from, for messages and the site's index

    @property
    def picture_shape(self) -> tuple[int, int]:
        """``(height, width)`` of a feature visualisation (see :class:`FeatureVisConfig`)."""
        return self.featurevis.picture_shape(self.input)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data, for the site's index and the units' data files: paths
        by their last part only, so no folder of the build machine is published."""
        data = dataclasses.asdict(self)
        data.pop("path")
        for section, key in (("model", "checkpoint"), ("dataset", "source"), (None, "labels"), ("site", "output"),
                             (None, "cache")):
            place = data[section] if section else data
            if place[key] is not None:
                place[key] = Path(place[key]).name or place[key]
        if data["model"]["source"].startswith("onnx:"):  # an ONNX file by its name
            data["model"]["source"] = "onnx:" + Path(data["model"]["source"][5:]).name
        if data["model"]["url"] is not None:  # no credentials, query or local folder
            url = urllib.parse.urlsplit(data["model"]["url"])
            data["model"]["url"] = (Path(url.path).name if url.scheme in ("", "file") else
                                    urllib.parse.urlunsplit((url.scheme, url.hostname or "", url.path, "", "")))
        return data


def _build(cls: type, values: Any, where: str, source: str) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise AtlasError(f"{source}: `{where}` must be a mapping of settings, not {preview(values)}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    types = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            valid = ", ".join(fields)
            raise AtlasError(
                f"{source}: unknown setting `{where + '.' if where else ''}{preview(key, quoted=False)}`.{hint} "
                f"Valid settings here are: {valid}."
            )
        kwargs[key] = _check(fields[key], types[key], value, f"{where + '.' if where else ''}{key}", source)
    return cls(**kwargs)


def _check(f: dataclasses.Field, kind: Any, value: Any, where: str, source: str) -> Any:
    """The value of one setting, converted to the field's type and checked against its range,
    or a clear error. Nothing is allocated from a value before it is checked."""
    if dataclasses.is_dataclass(f.default_factory):
        return _build(f.default_factory, value, where, source)
    smallest, largest, above = f.metadata.get("range", (1, MAX_PATH, False))
    if f.name == "layers":
        if not isinstance(value, list) or not value or len(value) > 10_000 or \
                not all(isinstance(v, str) and 0 < len(v) <= MAX_PATH for v in value):
            raise AtlasError(f"{source}: `layers` must be a list of layer names, such as [conv2d0, mixed3a], "
                             f"not {preview(value)}.")
        return tuple(value)
    if f.name == "jobs" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `jobs: 2` and `jobs: auto` are both natural in YAML
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # `str | None`: None is allowed
        if value is None:
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if where == "input.size":
        return _image_size(value, where, source)
    if kind is bool:
        if not isinstance(value, bool):
            raise AtlasError(f"{source}: `{where}` must be true or false, not {preview(value)}.")
    elif kind is int:
        if not isinstance(value, int) or isinstance(value, bool) or not smallest <= value <= largest:
            raise AtlasError(f"{source}: `{where}` must be a whole number from {smallest:,} to {largest:,}, "
                             f"not {preview(value)}.")
    elif kind is float:
        number = _number(value)
        if number is None or not _within(number, smallest, largest, above):
            raise AtlasError(f"{source}: `{where}` must be a finite number {_span(smallest, largest, above)}, "
                             f"not {preview(value)}.")
        return number
    elif typing.get_origin(kind) is tuple:
        numbers = [_number(v) for v in value] if isinstance(value, list) and len(value) <= 1024 else [None]
        if None in numbers:
            example = list(f.default) if f.default is not None else [0.5, 0.5, 0.5]
            raise AtlasError(f"{source}: `{where}` must be a list of finite numbers, such as {example}, "
                             f"not {preview(value)}.")
        if f.metadata.get("range") and not all(_within(n, smallest, largest, above) for n in numbers):
            raise AtlasError(f"{source}: every number of `{where}` must be {_span(smallest, largest, above)}, "
                             f"not {preview(value)}.")
        return tuple(numbers)
    elif not isinstance(value, str):
        raise AtlasError(f"{source}: `{where}` must be text, not {preview(value)}.")
    elif not value.strip():
        raise AtlasError(f"{source}: `{where}` is empty; give it a value or leave the key out.")
    elif len(value) > largest:
        raise AtlasError(f"{source}: `{where}` is {len(value):,} characters long; at most {largest:,} are allowed "
                         f"(it begins {preview(value)}).")
    return value


def _within(number: float, smallest: float, largest: float, above: bool) -> bool:
    return (number > smallest if above else number >= smallest) and number <= largest


def _span(smallest: float, largest: float, above: bool) -> str:
    return f"{'above' if above else 'from'} {smallest:g} {'and at most' if above else 'to'} {largest:g}"


def _number(value: Any) -> float | None:
    """A finite number, or None. Text that reads as one counts: YAML reads ``5e-2`` (no dot) as text."""
    if isinstance(value, str):
        if len(value) > 100:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1023:
        return None  # float() of it would overflow
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def _side(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SIDE


def _image_size(value: Any, where: str, source: str) -> tuple[int, int]:
    """``input.size``: a whole number (a square) or ``[height, width]``, as ``(height, width)``."""
    if _side(value):
        return (value, value)
    if isinstance(value, list) and len(value) == 2 and all(_side(v) for v in value):
        return (value[0], value[1])
    raise AtlasError(f"{source}: `{where}` must be a whole number of pixels from 1 to {MAX_SIDE:,} for a square "
                     f"image (such as 224) or [height, width] (such as [224, 320]), not {preview(value)}.")


def load_config(path: str | Path) -> AtlasConfig:
    """Read and check an atlas config file."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(
            f"Atlas config {path} does not exist. Pass the path of a YAML file such as "
            f"site_config/default.yml (make atlas CONFIG=path/to/config.yml)."
        )
    values = read_yaml(path, "atlas config", MAX_CONFIG)
    if values is None or not isinstance(values, dict):
        raise AtlasError(f"{path} holds {'nothing' if values is None else preview(values)}, not a mapping of "
                         f"settings. An atlas config is YAML such as `title: My network` and `model: {{source: "
                         f"default}}`; see site_config/default.yml.")
    config = _build(AtlasConfig, values, "", str(path))
    config = dataclasses.replace(config, path=str(path), **_home_expanded(config))
    inp = config.input
    if len(inp.mean) != inp.channels or len(inp.std) != inp.channels:
        raise AtlasError(
            f"{path}: `input.mean` and `input.std` need one value per input channel "
            f"({inp.channels}); got {len(inp.mean)} and {len(inp.std)}."
        )
    if any(s <= 0 for s in inp.std):
        raise AtlasError(f"{path}: every `input.std` value must be positive; got {list(inp.std)}.")
    _check_model(config.model, path)
    _check_featurevis(config.featurevis, path)
    return config


def _home_expanded(config: AtlasConfig) -> dict[str, Any]:
    """The config's paths with ``~`` expanded to the user's home folder, as a shell would."""
    def expand(text: str | None) -> str | None:
        return str(Path(text).expanduser()) if text is not None and text.startswith("~") else text

    dataset = config.dataset.source
    return {"site": dataclasses.replace(config.site, output=expand(config.site.output)),
            "cache": expand(config.cache), "labels": expand(config.labels),
            "model": dataclasses.replace(config.model, checkpoint=expand(config.model.checkpoint)),
            "dataset": dataclasses.replace(config.dataset, source=dataset if dataset == "procedural" else expand(dataset))}


def _check_model(model: ModelConfig, path: Path) -> None:
    if model.url is not None:
        scheme = urllib.parse.urlsplit(model.url).scheme.lower() if "://" in model.url else ""
        if scheme not in ("http", "https"):
            raise AtlasError(f"{path}: `model.url` must be an http:// or https:// address, not "
                             f"{preview(redacted(model.url))}. For a file on this machine, set `model.checkpoint` "
                             f"to its path instead.")
        if model.checkpoint is None:
            raise AtlasError(f"{path}: `model.url` says where to download `model.checkpoint` from; set "
                             f"`model.checkpoint` to the path the download is kept at.")
    if model.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", model.sha256):
        raise AtlasError(f"{path}: `model.sha256` must be the checkpoint's SHA-256 as 64 hexadecimal digits "
                         f"(what `sha256sum FILE` prints), not {preview(model.sha256)}.")
    if model.sha256 is not None and model.checkpoint is None:
        raise AtlasError(f"{path}: `model.sha256` pins the checkpoint file; set `model.checkpoint` too.")


def redacted(url: str) -> str:
    """``url`` without a user name or password, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        return urllib.parse.urlunsplit(parts._replace(netloc="…@" + parts.netloc.rpartition("@")[2]))
    except ValueError:
        return url.rpartition("@")[2]


def _check_featurevis(fv: FeatureVisConfig, path: Path) -> None:
    if fv.jobs != "auto" and not (fv.jobs.isdigit() and 0 < int(fv.jobs) <= 1024):
        raise AtlasError(f"{path}: `featurevis.jobs` must be `auto` or a whole number from 1 to 1,024, "
                         f"not {preview(fv.jobs)}.")
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", fv.device):
        raise AtlasError(f"{path}: `featurevis.device` must be auto, cpu, cuda or cuda:N, not {preview(fv.device)}.")
    if fv.precision not in ("float32", "bfloat16"):
        raise AtlasError(f"{path}: `featurevis.precision` must be float32 or bfloat16, not {preview(fv.precision)}.")
    from .engines import ENGINES  # the engines, named once (imported here: they import this module)

    if fv.engine not in ENGINES:
        raise AtlasError(f"{path}: `featurevis.engine` must be one of {', '.join(ENGINES)} (local: this machine; ray: "
                         f"a Ray cluster), not {preview(fv.engine)}.")
    if fv.address is not None and fv.engine != "ray":
        raise AtlasError(f"{path}: `featurevis.address` names a Ray cluster; it needs `featurevis.engine: ray`.")
    scale = fv.transforms.scale
    if len(scale) != 2 or not scale[0] <= scale[1]:
        raise AtlasError(f"{path}: `featurevis.transforms.scale` must be [smallest, largest] factor, "
                         f"such as [0.95, 1.05]; got {list(scale)}.")
