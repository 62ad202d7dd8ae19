"""YAML files people hand the build (atlas configs), read so that no input can hurt it.

A file is read whole only up to a size; a key given twice is an error (YAML would keep the
last silently); nested aliases that would expand to a huge value (a "billion laughs") are
refused before anything walks them; and messages show a value as a short preview, never
expanded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import AtlasError

MAX_VALUES = 100_000  # scalars, lists and mappings a file may expand to, counting every alias use
PREVIEW = 60  # characters of a value shown in a message


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives one key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise _DuplicateKey(None, None, f"the key `{preview(key.value, quoted=False)}` is given twice "
                                                    f"in one mapping (only the last would count); keep one",
                                        key.start_mark)
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


def read_limited(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of the file ``path`` (a ``what``, for messages), refused when larger than ``max_bytes``."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise AtlasError(f"The {what} {path} cannot be read ({error.strerror}).") from None
    if len(data) > max_bytes:
        raise AtlasError(f"The {what} {path} is larger than {max_bytes // 1024:,} KB; it is not read. Check that "
                         f"the path names the right file.")
    return data


def read_yaml(path: Path, what: str, max_bytes: int) -> Any:
    """The value of the YAML file ``path`` (a ``what``, for messages), or an :class:`AtlasError`
    naming the file, the line and the fix."""
    data = read_limited(path, what, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise AtlasError(f"{path}:{line} is not UTF-8 text (byte 0x{data[error.start]:02x}). Save the {what} "
                         f"as UTF-8.") from None
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a safe loader)
    except _DuplicateKey as error:
        raise AtlasError(f"{path}:{error.problem_mark.line + 1}: {error.problem}.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or "unreadable"
        raise AtlasError(f"{where}: the {what} is not valid YAML ({problem}). Fix it at that line.") from None
    except RecursionError:
        raise AtlasError(f"{path}: the {what} is nested too deeply to read; it is not a real {what}.") from None
    _check_size(value, path, what)
    return value


def _check_size(value: Any, path: Path, what: str) -> None:
    """Refuse a value that expands to more than :data:`MAX_VALUES` values, or that holds itself.

    PyYAML gives every use of an alias the same object, so a "billion laughs" file is small
    in memory, and costs nothing until something walks or prints it: its size is counted
    once per object here, without expanding it.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(item: Any) -> int:
        if not isinstance(item, (list, dict)):
            return 1
        key = id(item)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise AtlasError(f"{path}: the {what} holds a value that contains itself (a YAML alias inside its own "
                             f"anchor); write the value out instead.")
        open_.add(key)
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_VALUES:
                break
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        total = size(value)
    except RecursionError:
        raise AtlasError(f"{path}: the {what} is nested too deeply to read; it is not a real {what}.") from None
    if total > MAX_VALUES:
        raise AtlasError(f"{path}: the {what} expands to more than {MAX_VALUES:,} values (nested YAML aliases, a "
                         f"\"billion laughs\"); it is not read. Write the settings out without aliases.")


def preview(value: Any, limit: int = PREVIEW, quoted: bool = True) -> str:
    """A short text showing ``value`` for a message: at most ``limit`` characters plus "…",
    built without expanding the value (a list of a million items costs a few of them)."""
    parts: list[str] = []
    budget = [limit + 1]

    def add(text: str) -> None:
        if budget[0] > 0:
            parts.append(text[: budget[0]])
            budget[0] -= len(text)

    def walk(item: Any, depth: int) -> None:
        if budget[0] <= 0:
            return
        if depth > 8:
            add("…")
        elif isinstance(item, dict):
            add("{")
            for i, (key, child) in enumerate(item.items()):
                if budget[0] <= 0:
                    return
                add(", " if i else "")
                walk(key, depth + 1)
                add(": ")
                walk(child, depth + 1)
            add("}")
        elif isinstance(item, (list, tuple)):
            add("[")
            for i, child in enumerate(item):
                if budget[0] <= 0:
                    return
                add(", " if i else "")
                walk(child, depth + 1)
            add("]")
        elif isinstance(item, str):
            add(repr(item[: limit + 1]) if quoted else item[: limit + 1])
        elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 200:
            try:
                add(f"a {len(str(abs(item)))}-digit number")
            except ValueError:  # more digits than Python turns into text
                add("a number of over 4,000 digits")
        else:
            add(repr(item)[: limit + 1])

    walk(value, 0)
    text = "".join(parts)
    return text if len(text) <= limit else text[:limit] + "…"
