"""Automatic families: clustered on what units do, never on their branch, named by what they share."""

import numpy as np

from generator.annotations import Annotation, Annotations
from generator.families import DEAD, OTHER, UnitFeatures, layer_families
from generator.graph import Branch, Layer
from generator.sections.examples import shared


class _Graph:
    def __init__(self, *layers):
        self.layers = list(layers)


def _mixed(channels: int = 24) -> Layer:
    half = channels // 2
    return Layer("mixed", "mixed", (channels, 4, 4), ("a", "b"), (Branch("1x1", "a", 0, half), Branch("3x3", "b", half, channels)))


def _responses(groups: list[list[int]], images: int = 60, seed: int = 0) -> np.ndarray:
    """Units of one group fire on the same images (their own slice of the images), a little noise apart."""
    rng = np.random.default_rng(seed)
    units = sum(len(g) for g in groups)
    rows = np.zeros((units, images))
    for k, members in enumerate(groups):
        for u in members:
            rows[u, k * 10:(k + 1) * 10] = 1 + 0.1 * rng.random(10)
    return rows + 0.01 * rng.random(rows.shape)


def test_families_follow_responses_across_branches_and_are_named_by_shared_attributes():
    layer = _mixed(24)
    # two behaviours, each spread over both branches; units 22 and 23 never fire
    rings, greens = [0, 2, 4, 12, 14, 16, 18, 20], [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 6, 8, 10]
    rows = _responses([rings, greens, [22, 23]])
    rows[[22, 23]] = 0
    attributes = [tuple({"shape": "ring", "hue": ["red", "blue"][i % 2]} for i in range(8)) if u in rings else
                  tuple({"shape": ["disk", "bar"][i % 2], "hue": "green"} for i in range(8)) if u in greens else
                  tuple({"shape": "bar", "hue": "grey"} for _ in range(8)) for u in range(24)]
    features = {"mixed": UnitFeatures(rows, "responses", (22, 23), tuple(attributes))}
    families = layer_families(_Graph(layer), Annotations({}), features, count=2)["mixed"]
    named = {f.name: set(f.units) for f in families}
    assert named["ring"] == set(rings) and named["green"] == set(greens)  # each family spans both branches
    assert named[DEAD] == {22, 23} and families[-1].name == DEAD
    assert all(f.automatic for f in families)


def test_a_labelled_layer_still_clusters_its_other_units_and_labels_name_families():
    layer = _mixed(24)
    rows = _responses([list(range(0, 12)), list(range(12, 24))])
    labels = {("mixed", u): Annotation(label="tabby cat" if u < 10 else None) for u in range(12)}
    labels[("mixed", 20)] = Annotation(label="edge", family="edges")
    labels[("mixed", 21)] = Annotation(family="edges")
    annotations = Annotations({k: v for k, v in labels.items() if v != Annotation()})
    families = layer_families(_Graph(layer), annotations, {"mixed": UnitFeatures(rows, "responses")}, count=2)["mixed"]
    named = {f.name: set(f.units) for f in families}
    assert named["edges"] == {20, 21} and not next(f for f in families if f.name == "edges").automatic
    assert "tabby cat" in named and named["tabby cat"] >= set(range(10))  # a label most members carry
    assert OTHER not in named and set().union(*named.values()) == set(range(24))


def test_families_without_anything_shared_are_numbered():
    layer = Layer("conv", "conv", (12, 4, 4), ("conv",))
    rows = np.random.default_rng(1).random((12, 30))
    families = layer_families(_Graph(layer), Annotations({}), {"conv": UnitFeatures(rows, "pictures")}, count=3)["conv"]
    assert [f.name for f in families if len(f.units) > 1][:1] == ["family 1"]


def test_what_a_units_examples_share():
    examples = [{"hue": "green", "shape": "ring", "orientation": "45deg"}] * 6 + \
        [{"hue": "green", "shape": "disk", "orientation": "0deg"}] * 2
    assert shared(examples) == "green (8 of 8), ring (6 of 8), orientation 45deg (6 of 8)"
    assert shared([{"folder": "cats"}, {"folder": "dogs"}]) == ""
    assert shared([]) == ""
