"""``weight-atlas cache verify``: check every entry of a cache without building.

The build checks each entry it reads (a damaged one is logged, deleted and made again);
this walks the whole cache, entries of every model and setting, with the same checks.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .dataset_examples import check_examples, read_part
from .featurevis.cache import check_picture
from .linearity import read_effect


@dataclass
class CacheReport:
    checked: int = 0  # entries: pictures, layers of examples, shards, measured effects
    damaged: list[str] = field(default_factory=list)  # "path: what is wrong"


def verify_cache(root: Path, delete: bool = True) -> CacheReport:
    """Check every picture, layer of dataset examples, shard and measured effect under ``root``; with ``delete``,
    remove the damaged ones, so that the next build makes them again."""
    report = CacheReport()

    def found(path: Path, problem: str | None, *paths: Path) -> None:
        report.checked += 1
        if problem is None:
            return
        report.damaged.append(f"{path}: {problem}")
        if delete:
            for each in paths:
                shutil.rmtree(each, ignore_errors=True) if each.is_dir() else each.unlink(missing_ok=True)

    for record in sorted((root / "featurevis").glob("*/*/*/*.json")):
        found(record.with_suffix(".png"), check_picture(record), record, record.with_suffix(".png"))
    for examples in sorted((root / "examples").glob("*/*/*/examples.json")):
        found(examples.parent, check_examples(examples.parent), examples.parent)
    for shard in sorted((root / "examples").glob("*/*/parts/*/*.safetensors")):
        part = read_part(shard)
        found(shard, part if isinstance(part, str) else None, shard)
    for effect in sorted((root / "effects").glob("*/*/*.safetensors")):
        read = read_effect(effect)
        found(effect, read if isinstance(read, str) else None, effect)
    return report
