"""Writing files: into a fresh folder, or atomically into a cache other builds read."""

from __future__ import annotations

import os
from pathlib import Path


def write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target``, creating its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that it is never seen half-written, even after a crash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
