"""Unit annotations: labels, families and notes that people give units, and class names.

An atlas config may come with a labels file (YAML), named by the config's ``labels``
setting (relative to the config's folder) or, by default, ``<config name>.labels.yml``
beside the config, read when it exists::

    units:
      mixed3b:
        379: {label: curve detector, family: curves, note: "excited by mixed3a 147"}
        342: curve detector          # a bare string is a label
      conv2d0:
        0: {label: "high-low frequency"}
    classes:                          # optional: class names for a classifier layer
      layer: fc                       # default: the last layer of the atlas
      file: imagenet_classes.txt      # one name per line, relative to the labels file
      # from: model                   # or the names the model itself carries

Class names label that layer's units, except units with a label of their own. Without a
``classes`` section, a model carrying class names (an attribute ``class_names``,
``classes`` or ``categories``) as many as its last layer's units has them used as labels.

Every mistake stops the build with an :class:`AtlasError` naming the file and the line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from .config import AtlasConfig
from .errors import AtlasError
from .yaml_input import read_limited

TOP_KEYS = ("units", "classes", "example")
EXAMPLE_KEYS = ("layer", "unit")
UNIT_KEYS = ("label", "family", "note")
CLASS_KEYS = ("layer", "file", "from")
METADATA = ("class_names", "classes", "categories")  # model attributes that may hold class names
SHOWN = 10  # the most layer names listed in a message
MAX_LABELS_FILE = 16 * 1024 * 1024  # bytes of a labels file, and of a class names file
MAX_TEXT = {"label": 200, "family": 100, "note": 2000}  # characters


@dataclass(frozen=True)
class Annotation:
    """What people say about one unit: a short label, the family it belongs to, a note."""

    label: str | None = None
    family: str | None = None
    note: str | None = None


EMPTY = Annotation()


@dataclass(frozen=True)
class Annotations:
    """The annotated units of an atlas, by ``(layer, unit)``; layers in the atlas's order.

    ``source`` is the labels file as the config names it (or the default name found beside
    the config), None when there is none.
    """

    units: dict[tuple[str, int], Annotation]
    source: str | None = None
    example: tuple[str, int] | None = None  # How to read's worked example, when the file names one

    def of(self, layer: str, unit: int) -> Annotation:
        """The unit's annotation; an empty one when it has none."""
        return self.units.get((layer, unit), EMPTY)

    def label(self, layer: str, unit: int) -> str | None:
        return self.of(layer, unit).label

    def families(self, layer: str) -> dict[str, list[int]]:
        """Family name -> its units (sorted) in ``layer``; families in order of first appearance."""
        found: dict[str, list[int]] = {}
        for (name, unit), annotation in self.units.items():
            if name == layer and annotation.family is not None:
                found.setdefault(annotation.family, []).append(unit)
        return {family: sorted(units) for family, units in found.items()}

    def groups(self) -> list[tuple[str, str, list[int]]]:
        """``(layer, family, units)`` for every annotated family of every layer."""
        layers = dict.fromkeys(name for name, _ in self.units)
        return [(layer, family, units) for layer in layers for family, units in self.families(layer).items()]


def labels_path(config: AtlasConfig) -> tuple[Path, str] | None:
    """The labels file of ``config`` and its name as given; None when it has none.

    A ``labels`` setting must name an existing file; the default ``<name>.labels.yml``
    beside the config is used only when it exists.
    """
    folder = Path(config.path).parent
    if config.labels is not None:
        path = folder / config.labels
        if not path.is_file():
            raise AtlasError(
                f"{config.path}: the labels file {path} (`labels: {config.labels}`) does not exist. "
                f"Set `labels` to the path of a YAML file, relative to the config's folder, or leave it out."
            )
        return path, config.labels
    if config.path == "<built-in>":
        return None
    name = f"{Path(config.path).stem}.labels.yml"
    return (folder / name, name) if (folder / name).is_file() else None


def load_annotations(config: AtlasConfig, graph: Any, model: nn.Module) -> Annotations:
    """The annotations of the atlas ``config`` describes, checked against ``graph``'s layers.

    ``graph`` is the atlas's :class:`~generator.graph.LayerGraph` (only its ``layers`` are
    read); ``model`` may carry class names (see the module's description).
    """
    layers = {layer.name: layer.channels for layer in graph.layers}
    found = labels_path(config)
    units: dict[tuple[str, int], Annotation] = {}
    section = source = example = None
    if found is not None:
        path, source = found
        reader = _Reader(path, layers)
        units, section, example = reader.read()
    if section is None:
        classes = _auto_classes(layers, model)
    else:
        classes = _class_labels(reader, *section, config, model)
    for key, name in classes.items():
        own = units.get(key, EMPTY)
        if own.label is None:
            units[key] = Annotation(name, own.family, own.note)
    return Annotations(_ordered(units, layers), source, example)


def _ordered(units: dict[tuple[str, int], Annotation], layers: dict[str, int]) -> dict[tuple[str, int], Annotation]:
    """``units`` with layers in the atlas's order (units keep their order within a layer)."""
    order = {name: i for i, name in enumerate(layers)}
    return dict(sorted(units.items(), key=lambda item: order[item[0][0]]))


def _auto_classes(layers: dict[str, int], model: nn.Module) -> dict[tuple[str, int], str]:
    """Class names the model carries, as labels of the last layer when they fit it."""
    if not layers:
        return {}
    last, channels = list(layers.items())[-1]
    names = _attribute_names(model)
    if names is None or len(names) != channels:
        return {}
    return {(last, unit): name for unit, name in enumerate(names) if name}


def _attribute_names(model: nn.Module) -> list[str] | None:
    """Class names in an attribute of ``model``: a list of text, or a dict from 0, 1, ... to text."""
    for attribute in METADATA:
        value = getattr(model, attribute, None)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value]
        if isinstance(value, dict) and value and set(value) == set(range(len(value))) and \
                all(isinstance(v, str) for v in value.values()):
            return [value[i].strip() for i in range(len(value))]
    return None


def _torchvision_names(name: str) -> list[str] | None:
    """The categories of torchvision model ``name``'s published weights (the default ones)."""
    from .torchvision_models import import_torchvision

    try:
        torchvision = import_torchvision()
        weights = torchvision.models.get_model_weights(name)
    except Exception:  # torchvision missing, an unknown name, or a release too old to list weights
        return None
    members = list(weights)
    if not members:
        return None
    chosen = getattr(weights, "DEFAULT", members[0])
    categories = getattr(chosen, "meta", {}).get("categories")
    if isinstance(categories, (list, tuple)) and all(isinstance(c, str) for c in categories):
        return list(categories)
    return None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3)
    return f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""


def _text(node: yaml.Node) -> str | None:
    """A scalar's text as written (``note: 147`` is the text 147); None for anything else."""
    if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        return None
    return node.value.strip()


class _Reader:
    """Reads one labels file, with line numbers for every message."""

    def __init__(self, path: Path, layers: dict[str, int]):
        self.path = path
        self.layers = layers

    def fail(self, node: yaml.Node | None, message: str) -> AtlasError:
        where = f"{self.path}:{_line(node)}" if node is not None else str(self.path)
        return AtlasError(f"{where}: {message}")

    def compose(self) -> yaml.Node | None:
        data = read_limited(self.path, "labels file", MAX_LABELS_FILE)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise AtlasError(
                f"{self.path}:{line}: the labels file is not UTF-8 text (byte {data[error.start]:#04x}). "
                f"Save it as UTF-8."
            ) from None
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{self.path}:{mark.line + 1}" if mark is not None else str(self.path)
            problem = getattr(error, "problem", None) or str(error)
            raise AtlasError(
                f"{where}: the labels file is not valid YAML ({problem}). Fix the syntax at that line."
            ) from None

    def mapping(self, node: yaml.Node, what: str, example: str) -> list[tuple[yaml.Node, yaml.Node]]:
        """The key and value nodes of a mapping (an empty value is an empty mapping)."""
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping, such as {example}.")
        return node.value

    def read(self) -> tuple[dict[tuple[str, int], Annotation], tuple[str, yaml.MappingNode] | None,
                            tuple[str, int] | None]:
        """The units' annotations; the ``classes`` section: ``(layer, node)``, or None when there
        is none; and the worked example ``(layer, unit)``, or None."""
        root = self.compose()
        if root is None:
            return {}, None, None
        units: dict[tuple[str, int], Annotation] = {}
        classes: tuple[str, yaml.MappingNode] | None = None
        example: tuple[str, int] | None = None
        for key, value in self.mapping(root, "The labels file", "`units: {conv2d0: {0: edge}}`"):
            name = _text(key) or ""
            if name not in TOP_KEYS:
                raise self.fail(key, f"unknown key `{name}`.{_suggest(name, list(TOP_KEYS))} "
                                     f"A labels file has only `units`, `classes` and `example`.")
            if name == "units":
                units = self.units(value)
            elif name == "classes":
                classes = self.classes(value)
            else:
                example = self.example(value)
        return units, classes, example

    def example(self, node: yaml.Node) -> tuple[str, int]:
        """How to read's worked example: ``{layer: mixed3b, unit: 379}``."""
        shape = "`example: {layer: mixed3b, unit: 379}`"
        keys = self.section(node, "example", EXAMPLE_KEYS, shape, f"layer and unit, such as {shape}")
        if set(keys) != set(EXAMPLE_KEYS):
            raise self.fail(node, f"`example` needs both layer and unit, such as {shape}.")
        layer = self.layer(keys["layer"][1])
        return layer, self.unit(keys["unit"][1], layer)

    def layer(self, node: yaml.Node) -> str:
        """The atlas layer a key names."""
        name = _text(node) or ""
        if name not in self.layers:
            names = list(self.layers)
            shown = ", ".join(names[:SHOWN]) + (f" (and {len(names) - SHOWN} more)" if len(names) > SHOWN else "")
            raise self.fail(node, f"unknown layer `{name}`.{_suggest(name, names)} "
                                  f"The atlas's layers are: {shown or 'none'}.")
        return name

    def units(self, node: yaml.Node) -> dict[tuple[str, int], Annotation]:
        found: dict[tuple[str, int], Annotation] = {}
        for key, value in self.mapping(node, "`units`", "`units: {conv2d0: {0: edge}}`"):
            layer = self.layer(key)
            if any(name == layer for name, _ in found):
                raise self.fail(key, f"layer `{layer}` appears twice under `units`; merge its units into one.")
            for unit_key, unit_value in self.mapping(value, f"`units.{layer}`", "`{0: edge, 1: {label: curve}}`"):
                unit = self.unit(unit_key, layer)
                if (layer, unit) in found:
                    raise self.fail(unit_key, f"unit {unit} of `{layer}` appears twice; keep one.")
                found[(layer, unit)] = self.annotation(unit_value, layer, unit)
        return found

    def unit(self, node: yaml.Node, layer: str) -> int:
        text = _text(node) or ""
        channels = self.layers[layer]
        if not text.isdigit() or int(text) >= channels:
            raise self.fail(node, f"`{text}` is not a unit of `{layer}`: its units are whole numbers "
                                  f"from 0 to {channels - 1}.")
        return int(text)

    def annotation(self, node: yaml.Node, layer: str, unit: int) -> Annotation:
        """A bare text (a label) or a mapping of label, family and note."""
        text = _text(node)
        if text is not None:
            if not text:
                raise self.fail(node, f"the label of unit {unit} of `{layer}` is empty; write one or leave the unit out.")
            return Annotation(label=self.short(node, text, "label"))
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"unit {unit} of `{layer}` needs a label (text) or a mapping of "
                                  f"label, family and note, such as {{label: curve detector, family: curves}}.")
        values: dict[str, str] = {}
        for key, value in node.value:
            name = _text(key) or ""
            if name not in UNIT_KEYS:
                raise self.fail(key, f"unknown key `{name}` for unit {unit} of `{layer}`."
                                     f"{_suggest(name, list(UNIT_KEYS))} A unit takes label, family and note.")
            text = _text(value)
            if not text:
                raise self.fail(value, f"`{name}` of unit {unit} of `{layer}` must be text, such as "
                                       f"`{name}: curves`; leave the key out if it has none.")
            values[name] = self.short(value, text, name)
        return Annotation(**values)

    def short(self, node: yaml.Node, text: str, what: str) -> str:
        """``text``, once it is clear that it is no longer than a ``what`` may be."""
        if len(text) > MAX_TEXT[what]:
            raise self.fail(node, f"a {what} is at most {MAX_TEXT[what]:,} characters; this one has "
                                  f"{len(text):,}. Shorten it.")
        return text

    def section(self, node: yaml.Node, name: str, allowed: tuple[str, ...], example: str,
                takes: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A top-level mapping's ``{key: (key node, value node)}``; a key not ``allowed`` stops
        with the keys the section ``takes``."""
        keys: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in self.mapping(node, f"`{name}`", example):
            text = _text(key) or ""
            if text not in allowed:
                raise self.fail(key, f"unknown key `{text}` under `{name}`.{_suggest(text, list(allowed))} "
                                     f"`{name}` takes {takes}.")
            keys[text] = (key, value)
        return keys

    def classes(self, node: yaml.Node) -> tuple[str, yaml.MappingNode]:
        """The classifier layer and the ``classes`` node (read later, when its names are needed)."""
        example = "`classes: {file: classes.txt}` or `classes: {from: model}`"
        keys = self.section(node, "classes", CLASS_KEYS, example, "layer, and file or from")
        if "file" in keys and "from" in keys:
            raise self.fail(keys["from"][0], "`classes` takes `file` or `from`, not both; keep one.")
        if "file" not in keys and "from" not in keys:
            raise self.fail(node, f"`classes` needs where the names are: {example}.")
        if "layer" in keys:
            layer = self.layer(keys["layer"][1])
        elif self.layers:
            layer = list(self.layers)[-1]
        else:
            raise self.fail(node, "the atlas has no layers to give class names to.")
        return layer, node


def _class_labels(reader: _Reader, layer: str, node: yaml.MappingNode, config: AtlasConfig,
                  model: nn.Module) -> dict[tuple[str, int], str]:
    """The ``classes`` section's names, as labels of ``layer``'s units."""
    keys = {_text(k): (k, v) for k, v in node.value}
    channels = reader.layers[layer]
    if "file" in keys:
        value = keys["file"][1]
        text = _text(value)
        if not text:
            raise reader.fail(value, "`classes.file` must be the path of a text file with one class name a line.")
        path = reader.path.parent / text
        folder = reader.path.parent.resolve()
        if not path.resolve().is_relative_to(folder):
            raise reader.fail(value, f"the class names file `{text[:100]}` lies outside the labels file's folder "
                                     f"{folder}. `classes.file` names a file in that folder or below it, so that a "
                                     f"labels file can publish no other file; copy the names there.")
        if not path.is_file():
            raise reader.fail(value, f"the class names file {path} does not exist. `classes.file` is "
                                     f"relative to the labels file's folder.")
        data = read_limited(path, "class names file", MAX_LABELS_FILE)
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise reader.fail(value, f"the class names file {path} is not UTF-8 text; save it as UTF-8.") from None
        names = [line.strip() for line in lines]
        while names and not names[-1]:
            names.pop()
        if len(names) != channels:
            raise reader.fail(value, f"the class names file {path} has {len(names)} names (lines) but layer "
                                     f"`{layer}` has {channels} units; give one name a line, in unit order.")
        for line, name in enumerate(names, 1):
            if len(name) > MAX_TEXT["label"]:
                raise AtlasError(f"{path}:{line}: a class name is at most {MAX_TEXT['label']} characters; this "
                                 f"one has {len(name):,}. Shorten it.")
    else:
        value = keys["from"][1]
        if _text(value) != "model":
            raise reader.fail(value, f"`classes.from` must be `model`, not `{_text(value) or value.tag}`; "
                                     f"for a file of names write `file:` instead.")
        names = _attribute_names(model)
        source = config.model.source
        if names is None and source.startswith("torchvision:"):
            names = _torchvision_names(source.partition(":")[2])
        if names is None:
            raise reader.fail(value, f"the model (`{source}`) carries no class names (an attribute "
                                     f"{', '.join(METADATA)}, or torchvision's weight metadata). "
                                     f"List them in a text file and write `file:` instead.")
        if len(names) != channels:
            raise reader.fail(value, f"the model carries {len(names)} class names but layer `{layer}` has "
                                     f"{channels} units; name the classifier with `classes.layer`, or "
                                     f"give the names with `file:`.")
    return {(layer, unit): name for unit, name in enumerate(names) if name}
