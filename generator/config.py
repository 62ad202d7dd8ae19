"""Atlas configs: one YAML file per model in ``site_config/``, read into plain dataclasses.

Every key is checked: an unknown key (a typo) or a value of the wrong type stops the
build with an error naming the key, the file and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import AtlasError


MAX_HOPS = 3


@dataclass(frozen=True)
class ModelConfig:
    """Which network to load (``default``, ``inceptionv1``, ``torchvision:NAME`` or
    ``package.module:factory``), the checkpoint to read, and where to download it from."""

    source: str = "default"
    checkpoint: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class InputConfig:
    """The image the model expects: channels, size and per-channel normalisation."""

    channels: int = 3
    size: int = 64
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class RankingConfig:
    """How many of a unit's strongest connections are listed, each way, and how far back."""

    top_k: int = 24
    hops: int = 1  # 2 also lists inputs from two layers up (expanded weights), and so on


@dataclass(frozen=True)
class SiteConfig:
    """Where and how the site is written."""

    output: str = "site"
    tile_size: int = 48  # screen pixels a kernel tile is enlarged to (a whole number per weight)


@dataclass(frozen=True)
class AtlasConfig:
    title: str = "Weight Atlas"
    layers: tuple[str, ...] | None = None  # the browsed layers to include (default: all)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    path: str = "<built-in>"  # the file it came from, for messages and the site's index

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data, for the site's index and the units' data files."""
        data = dataclasses.asdict(self)
        data.pop("path")
        return data


def _build(cls: type, values: Any, where: str, source: str) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise AtlasError(f"{source}: `{where}` must be a mapping of settings, not {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            valid = ", ".join(fields)
            raise AtlasError(
                f"{source}: unknown setting `{where + '.' if where else ''}{key}`.{hint} "
                f"Valid settings here are: {valid}."
            )
        kwargs[key] = _check(fields[key], value, f"{where + '.' if where else ''}{key}", source)
    return cls(**kwargs)


def _check(f: dataclasses.Field, value: Any, where: str, source: str) -> Any:
    """The value of one setting, converted to the field's type, or a clear error."""
    if dataclasses.is_dataclass(f.default_factory):
        return _build(f.default_factory, value, where, source)
    default = f.default
    if f.name == "layers":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise AtlasError(f"{source}: `layers` must be a list of layer names, such as [conv2d0, mixed3a].")
        return tuple(value)
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise AtlasError(f"{source}: `{where}` must be a positive whole number, not {value!r}.")
    elif isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
            raise AtlasError(f"{source}: `{where}` must be a list of numbers, such as [0.5, 0.5, 0.5].")
        return tuple(float(v) for v in value)
    elif not isinstance(value, str) and not (value is None and default is None):
        raise AtlasError(f"{source}: `{where}` must be text, not {value!r}.")
    elif isinstance(value, str) and not value.strip():
        raise AtlasError(f"{source}: `{where}` is empty; give it a value or leave the key out.")
    return value


def load_config(path: str | Path) -> AtlasConfig:
    """Read and check an atlas config file."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(
            f"Atlas config {path} does not exist. Pass the path of a YAML file such as "
            f"site_config/default.yml (make atlas CONFIG=path/to/config.yml)."
        )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise AtlasError(f"{path} is not valid YAML ({error}). Fix the syntax at the line it names.") from None
    config = _build(AtlasConfig, values, "", str(path))
    config = dataclasses.replace(config, path=str(path))
    inp = config.input
    if len(inp.mean) != inp.channels or len(inp.std) != inp.channels:
        raise AtlasError(
            f"{path}: `input.mean` and `input.std` need one value per input channel "
            f"({inp.channels}); got {len(inp.mean)} and {len(inp.std)}."
        )
    if any(s <= 0 for s in inp.std):
        raise AtlasError(f"{path}: every `input.std` value must be positive; got {list(inp.std)}.")
    if config.ranking.hops > MAX_HOPS:
        raise AtlasError(
            f"{path}: `ranking.hops` is {config.ranking.hops}; at most {MAX_HOPS} are supported, since expanded "
            f"kernels grow with every layer (and say less: the linearisation misses more)."
        )
    return config
