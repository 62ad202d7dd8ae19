"""Labels files: unit labels, families and notes, class names, and their error messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch import nn

from generator.annotations import Annotation, Annotations, load_annotations
from generator.config import load_config
from generator.errors import AtlasError
from generator.graph import Layer

from .conftest import write_config

LAYERS = (
    Layer("conv2d0", "conv", (8, 16, 16), ("conv2d0",)),
    Layer("mixed3a", "mixed", (16, 8, 8), ("mixed3a.a",)),
    Layer("mixed3b", "mixed", (32, 8, 8), ("mixed3b.a",)),
    Layer("fc", "linear", (3,), ("fc",)),
)
GRAPH = SimpleNamespace(layers=LAYERS)  # only `layers` is read


def atlas(tmp_path: Path, labels_text: str | bytes | None, labels_name: str = "atlas.labels.yml",
          **settings):
    """A config written in ``tmp_path`` and, when given, its labels file ``labels_name``."""
    settings.setdefault("model", {"source": "default"})
    config = load_config(write_config(tmp_path, **settings))
    if isinstance(labels_text, bytes):
        (tmp_path / labels_name).write_bytes(labels_text)
    elif labels_text is not None:
        (tmp_path / labels_name).write_text(labels_text, encoding="utf-8")
    return config


def load(tmp_path: Path, text: str | bytes | None, model: nn.Module | None = None, **settings) -> Annotations:
    return load_annotations(atlas(tmp_path, text, **settings), GRAPH, model or nn.Identity())


def error(tmp_path: Path, text: str | bytes, model: nn.Module | None = None) -> str:
    with pytest.raises(AtlasError) as caught:
        load(tmp_path, text, model)
    return str(caught.value)


VALID = """\
# unit labels
units:
  mixed3b:
    7: {label: curve detector, family: curves, note: "excited by mixed3a 3"}
    3: curve detector          # a bare string is a label
    10: {family: curves}
    1: {family: lines, label: line}
  conv2d0:
    0: {label: "high-low frequency"}
"""


def test_valid_file(tmp_path):
    notes = load(tmp_path, VALID)
    assert notes.source == "atlas.labels.yml"
    assert notes.of("mixed3b", 7) == Annotation("curve detector", "curves", "excited by mixed3a 3")
    assert notes.label("mixed3b", 3) == "curve detector"
    assert notes.of("mixed3b", 10) == Annotation(family="curves")
    assert notes.of("conv2d0", 0).label == "high-low frequency"
    assert notes.of("mixed3b", 0) == Annotation()
    assert notes.label("fc", 0) is None
    assert notes.families("mixed3b") == {"curves": [7, 10], "lines": [1]}
    assert notes.families("conv2d0") == {}
    assert notes.groups() == [("mixed3b", "curves", [7, 10]), ("mixed3b", "lines", [1])]
    assert [layer for layer, _ in notes.units][:1] == ["conv2d0"]  # layers in the atlas's order


def test_no_labels_file(tmp_path):
    notes = load(tmp_path, None)
    assert notes.units == {} and notes.source is None
    assert notes.groups() == []


def test_empty_file(tmp_path):
    assert load(tmp_path, "# nothing yet\n").units == {}


def test_unknown_layer_names_line(tmp_path):
    message = error(tmp_path, "units:\n  mixed3b:\n    1: a\n  mixed3x:\n    2: b\n")
    assert "atlas.labels.yml:4:" in message
    assert "mixed3x" in message and "mixed3a" in message  # the close match


def test_unit_out_of_range(tmp_path):
    message = error(tmp_path, "units:\n  conv2d0:\n    0: a\n    8: b\n")
    assert "atlas.labels.yml:4:" in message and "0 to 7" in message


def test_unit_not_a_number(tmp_path):
    message = error(tmp_path, "units:\n  conv2d0:\n    first: a\n")
    assert "atlas.labels.yml:3:" in message and "0 to 7" in message


def test_unknown_top_level_key(tmp_path):
    message = error(tmp_path, "units: {}\nclases:\n  file: x.txt\n")
    assert "atlas.labels.yml:2:" in message and "`clases`" in message and "`classes`" in message


def test_unknown_unit_key_suggests(tmp_path):
    message = error(tmp_path, "units:\n  conv2d0:\n    0:\n      lable: edge\n")
    assert "atlas.labels.yml:4:" in message and "`lable`" in message and "Did you mean `label`" in message


def test_unit_value_must_be_text_or_mapping(tmp_path):
    message = error(tmp_path, "units:\n  conv2d0:\n    0: [a, b]\n")
    assert "atlas.labels.yml:3:" in message and "unit 0 of `conv2d0`" in message


def test_duplicate_unit(tmp_path):
    message = error(tmp_path, "units:\n  conv2d0:\n    0: a\n    0: b\n")
    assert "atlas.labels.yml:4:" in message and "twice" in message


def test_worked_example(tmp_path):
    notes = load(tmp_path, VALID + "example: {layer: mixed3b, unit: 7}\n")
    assert notes.example == ("mixed3b", 7)
    assert load(tmp_path, VALID).example is None


@pytest.mark.parametrize("text, words", [
    ("example: {layer: mixed3x, unit: 1}\n", ["unknown layer `mixed3x`", "mixed3a"]),
    ("example: {layer: mixed3b, unit: 99}\n", ["0 to 31"]),
    ("example: {layer: mixed3b}\n", ["both layer and unit"]),
    ("example: {layer: mixed3b, unti: 1}\n", ["`unti`", "Did you mean `unit`"]),
    ("example: mixed3b 7\n", ["must be a mapping"]),
])
def test_worked_example_mistakes_name_their_line(tmp_path, text, words):
    message = error(tmp_path, "units: {}\n" + text)
    assert "atlas.labels.yml:2:" in message
    assert all(word in message for word in words), message


def test_classes_from_file(tmp_path):
    (tmp_path / "names.txt").write_text(" cat\ndog \nbird\n\n\n", encoding="utf-8")
    notes = load(tmp_path, "units:\n  fc:\n    1: {label: puppy, family: pets}\n"
                           "classes:\n  file: names.txt\n")
    assert [notes.label("fc", unit) for unit in range(3)] == ["cat", "puppy", "bird"]
    assert notes.of("fc", 1).family == "pets"


def test_classes_file_for_a_named_layer(tmp_path):
    (tmp_path / "names.txt").write_text("\n".join(f"c{i}" for i in range(8)), encoding="utf-8")
    notes = load(tmp_path, "classes:\n  layer: conv2d0\n  file: names.txt\n")
    assert notes.label("conv2d0", 7) == "c7" and notes.label("fc", 0) is None


def test_classes_count_mismatch(tmp_path):
    (tmp_path / "names.txt").write_text("cat\ndog\n", encoding="utf-8")
    message = error(tmp_path, "units: {}\nclasses:\n  file: names.txt\n")
    assert "atlas.labels.yml:3:" in message and "2 names" in message and "3 units" in message


def test_classes_file_and_from_exclusive(tmp_path):
    message = error(tmp_path, "classes:\n  file: names.txt\n  from: model\n")
    assert "atlas.labels.yml:3:" in message and "not both" in message


class Tagged(nn.Module):
    """A tiny model carrying class names, as some model packages attach them."""

    def __init__(self, names):
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.class_names = names


def test_classes_from_model_metadata(tmp_path):
    notes = load(tmp_path, "classes: {from: model}\n", Tagged(["cat", "dog", "bird"]))
    assert [notes.label("fc", unit) for unit in range(3)] == ["cat", "dog", "bird"]
    dict_names = Tagged(None)
    dict_names.categories = {0: "a", 1: "b", 2: "c"}
    assert load(tmp_path, "classes: {from: model}\n", dict_names).label("fc", 2) == "c"


def test_classes_from_model_without_metadata(tmp_path):
    message = error(tmp_path, "classes:\n  from: model\n")
    assert "atlas.labels.yml:2:" in message and "file:" in message


def test_classes_from_must_be_model(tmp_path):
    message = error(tmp_path, "classes:\n  from: modle\n")
    assert "atlas.labels.yml:2:" in message and "`model`" in message


def test_model_class_names_used_without_labels_file(tmp_path):
    notes = load(tmp_path, None, Tagged(["cat", "dog", "bird"]))
    assert notes.label("fc", 1) == "dog" and notes.source is None
    assert load(tmp_path, None, Tagged(["cat", "dog"])).units == {}  # not the last layer's size


def test_default_labels_file_beside_config(tmp_path):
    (tmp_path / "atlas.labels.yml").write_text("units:\n  fc:\n    0: zero\n", encoding="utf-8")
    config = load_config(write_config(tmp_path, model={"source": "default"}))
    assert load_annotations(config, GRAPH, nn.Identity()).label("fc", 0) == "zero"
    other = dataclasses.replace(config, path=str(tmp_path / "other.yml"))
    assert load_annotations(other, GRAPH, nn.Identity()).units == {}
    built_in = dataclasses.replace(config, path="<built-in>")
    assert load_annotations(built_in, GRAPH, nn.Identity()).source is None


def test_labels_setting(tmp_path):
    (tmp_path / "notes").mkdir()
    notes = load(tmp_path, "units:\n  fc:\n    2: two\n", labels_name="notes/mine.yml", labels="notes/mine.yml")
    assert notes.label("fc", 2) == "two" and notes.source == "notes/mine.yml"


def test_labels_setting_missing_file(tmp_path):
    with pytest.raises(AtlasError, match="missing.yml.*does not exist"):
        load(tmp_path, None, labels="missing.yml")


def test_not_utf8(tmp_path):
    message = error(tmp_path, "units:\n  fc:\n    0: caf\xe9\n".encode("latin-1"))
    assert "atlas.labels.yml:3:" in message and "UTF-8" in message


def test_invalid_yaml(tmp_path):
    message = error(tmp_path, "units:\n  fc:\n    0: {label: a\n    1: b\n")
    assert "atlas.labels.yml" in message and "not valid YAML" in message


def test_classes_from_torchvision_weights(tmp_path):
    """torchvision is installed for the tests (make install), as the zoo tests need it too."""
    config = atlas(tmp_path, "classes: {from: model}\n", model={"source": "torchvision:resnet18"})
    graph = SimpleNamespace(layers=(LAYERS[0], Layer("fc", "linear", (1000,), ("fc",))))
    notes = load_annotations(config, graph, nn.Identity())  # metadata of the published weights
    assert notes.label("fc", 0) == "tench"
