"""Families: the groups a layer's units are shown in.

Annotated families come from the labels file. The rest of a layer's units get *automatic*
families: k-means (scikit-learn) over what each unit does. With dataset examples that is
its response to each of the first dataset images (so units that fire on the same images
go together); without them, how its feature visualisation looks; without either, what it
reads (its input kernels' L2 norms). Units that never fire on the dataset are one family of
their own. An automatic family is named by what its members share, where one thing stands
out: their labels (class names), or the attributes of their dataset examples (such as a
hue and a shape, or an image folder). Every unit is in exactly one family; automatic
families of one unit are together under "other units".
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .annotations import Annotations
from .expanded import LayerWeights
from .graph import Layer, LayerGraph

DIMENSIONS = 128  # units are clustered in a random projection to this many dimensions
PICTURE_SIDE = 8  # a feature visualisation, shrunk to this many pixels a side, as clustering features
SHARED = 0.5  # a label or attribute names a family when more than this share of its members (examples) have it
NAME_PARTS = 2  # attribute values in a family's name, at most
LIFT = 2.0  # ... and at least this many times as often as the layer's other units' examples

OTHER = "other units"
DEAD = "never fire"


@dataclass(frozen=True)
class Family:
    name: str
    units: tuple[int, ...]
    automatic: bool  # found by clustering, not named by people
    note: str = ""  # for automatic families: what they have in common, such as their branch


@dataclass(frozen=True)
class UnitFeatures:
    """What one layer's units are clustered on, and what can name their families."""

    rows: np.ndarray  # [units, d]
    basis: str  # "responses", "pictures" or "weights"
    dead: tuple[int, ...] = ()  # units that never fire on the dataset
    attributes: tuple[tuple[dict[str, str], ...], ...] = ()  # per unit, its examples' attributes


def layer_families(graph: LayerGraph, annotations: Annotations, features: dict[str, UnitFeatures],
                   count: int = 0) -> dict[str, list[Family]]:
    """Per layer, its families, largest first, "never fire" and "other units" last.

    ``count`` is the number of automatic families per layer (0: about sqrt(units / 2)).
    """
    found = {}
    for layer in graph.layers:
        named = annotations.families(layer.name)
        families = [Family(name, tuple(units), False) for name, units in named.items()]
        placed = {u for units in named.values() for u in units}
        rest = [u for u in range(layer.channels) if u not in placed]
        features_of = features.get(layer.name)
        if rest and features_of is not None:
            families += _clustered(layer, features_of, rest, annotations, count)
        found[layer.name] = _ordered(layer, families)
    return found


def family_features(graph: LayerGraph, weights: list[LayerWeights], norms: list[np.ndarray],
                    pictures=None, examples=None) -> dict[str, UnitFeatures]:
    """Per layer, what its units are clustered on: their responses to the dataset images with
    ``examples``, else their positive feature visualisations shrunk to a few pixels with
    ``pictures``, else the norms of their input kernels from each layer they read (a first
    layer's kernels themselves)."""
    read: dict[str, list[np.ndarray]] = {}
    for w, l2 in zip(weights, norms):
        if w.hops == 1:
            block = w.kernel if w.src is None else l2
            read.setdefault(w.dst, []).append(block.reshape(len(block), -1))
    found = {}
    for layer in graph.layers:
        if examples is not None:
            responses = examples.responses(layer.name)
            dead = tuple(np.flatnonzero(np.asarray(examples.peaks(layer.name)) <= 0).tolist())
            attributes = tuple(tuple(examples.attributes(layer.name, u)) for u in range(layer.channels))
            found[layer.name] = UnitFeatures(responses, "responses", dead, attributes)
        elif pictures is not None:
            shrunk = np.stack([_shrunk(pictures.picture(layer.name, u)) for u in range(layer.channels)])
            found[layer.name] = UnitFeatures(shrunk.reshape(layer.channels, -1), "pictures")
        elif layer.name in read:  # one source: its norms themselves, not a copy (VGG-16's fc7: 128 MB)
            blocks = read[layer.name]
            found[layer.name] = UnitFeatures(blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1), "weights")
    return found


def _shrunk(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.BOX),
                      dtype=np.float32)


def _ordered(layer: Layer, families: list[Family]) -> list[Family]:
    """Largest first, "never fire" after them; units in no family, and automatic families of
    one, as "other units" at the end."""
    kept = sorted((f for f in families if len(f.units) > 1 or not f.automatic),
                  key=lambda f: (f.name == DEAD, -len(f.units), f.units[0]))
    placed = {u for f in kept for u in f.units}
    rest = tuple(u for u in range(layer.channels) if u not in placed)
    return kept + ([Family(OTHER, rest, all(f.automatic for f in families))] if rest else [])


def _clustered(layer: Layer, features: UnitFeatures, units: list[int], annotations: Annotations,
               count: int) -> list[Family]:
    """Automatic families of ``units`` (those in no annotated family): k-means over their
    features, the units that never fire apart; each named by what its members share."""
    dead = [u for u in units if u in set(features.dead)]
    alive = [u for u in units if u not in set(features.dead)]
    families = [Family(DEAD, tuple(dead), True, "no activation above zero on any dataset image")] if len(dead) > 1 else []
    if len(alive) < 4:
        return families + ([Family("", tuple(alive), True)] if alive else [])
    total = count or max(2, round(np.sqrt(layer.channels / 2)))
    share = max(1, round(total * len(alive) / layer.channels))
    clusters = [tuple(alive[i] for i in members) for members in _kmeans(_unit_rows(features.rows[alive]), share)]
    clusters.sort(key=lambda members: (-len(members), members[0]))
    names: Counter[str] = Counter()
    for number, members in enumerate(clusters, start=1):
        name = _name(layer, members, features, annotations) or f"family {number}"
        names[name] += 1
        families.append(Family(name if names[name] == 1 else f"{name} ({names[name]})", members, True,
                               _common_branch(layer, members)))
    return families


def _name(layer: Layer, members: tuple[int, ...], features: UnitFeatures, annotations: Annotations) -> str | None:
    """What the members share, when something stands out: a label most of them carry (such as a
    class name), else the attribute values most of their dataset examples have, and that are
    rarer among the other units' examples (up to two; a number is named with its attribute)."""
    labels = Counter(label for u in members if (label := annotations.label(layer.name, u)))
    if labels and labels.most_common(1)[0][1] > SHARED * len(members):
        return labels.most_common(1)[0][0]
    if not features.attributes:
        return None
    inside = set(members)
    others = [e for u, examples in enumerate(features.attributes) if u not in inside for e in examples]
    base = Counter((k, v) for e in others for k, v in e.items())
    examples = [e for u in members for e in features.attributes[u]]
    counts = Counter((k, v) for e in examples for k, v in e.items())
    common = [(n, k, v) for (k, v), n in counts.items()
              if n > SHARED * len(examples) and n / len(examples) >= LIFT * base[(k, v)] / max(len(others), 1)]
    parts = [f"{k} {v}" if v[:1].isdigit() else v for _, k, v in sorted(common, key=lambda c: -c[0])[:NAME_PARTS]]
    return " ".join(parts) or None


def _kmeans(data: np.ndarray, count: int) -> list[list[int]]:
    """``data``'s rows in ``count`` clusters (scikit-learn's k-means, seeded)."""
    from sklearn.cluster import KMeans
    from sklearn.random_projection import GaussianRandomProjection
    from threadpoolctl import threadpool_limits

    count = min(count, len(data))
    if count <= 1:
        return [list(range(len(data)))]
    if data.shape[1] > DIMENSIONS:  # a random projection keeps distances (Johnson-Lindenstrauss), at a fraction of the work
        data = GaussianRandomProjection(DIMENSIONS, random_state=0).fit_transform(data)
    with warnings.catch_warnings(), threadpool_limits(1):  # small data: BLAS threads cost more than they give
        warnings.simplefilter("ignore")  # k-means warns when there are fewer distinct points than clusters
        assigned = KMeans(count, n_init=2, random_state=0).fit_predict(data)
    return [members for c in range(count) if (members := np.flatnonzero(assigned == c).tolist())]


def _unit_rows(block: np.ndarray) -> np.ndarray:
    """Each row centred and scaled to length one, so units compare by pattern, not strength."""
    block = block.reshape(len(block), -1).astype(np.float64)
    block = block - block.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.where(norm > 0, norm, 1)


def _common_branch(layer: Layer, members: tuple[int, ...]) -> str:
    """"all BRANCH" or "mostly BRANCH" when at least 60% of the members lie in one branch."""
    if not layer.branches:
        return ""
    counts = Counter(b.name for u in members if (b := layer.branch_of(u)))
    if not counts:
        return ""
    name, n = counts.most_common(1)[0]
    return f"all {name}" if n == len(members) else f"mostly {name}" if n >= 0.6 * len(members) else ""
