"""Writing files: into a fresh folder, or atomically into a cache other builds read."""

from __future__ import annotations

import os
import re
import tempfile
import zlib
from pathlib import Path


UMASK = os.umask(0o022)  # read once, at import, before any thread could create a file
os.umask(UMASK)


def write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target``, creating its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that it is never seen half-written, even after a crash,
    and so that builds writing the same file at once each write a whole file (the last wins)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name[:40]}.", suffix=".partial", dir=target.parent)
    try:
        os.fchmod(handle, 0o666 & ~UMASK)  # as open() would create it, not mkstemp's 0600
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def folder_name(name: str) -> str:
    """A file-name-safe, collision-free folder name for a model name (such as a layer's)."""
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', name).strip('-')[:40]}-{zlib.crc32(name.encode()):08x}"
