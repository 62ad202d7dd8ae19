"""Families: the groups a layer's units are shown in.

Annotated families come from the labels file. A layer with none gets *automatic*
families: k-means (scikit-learn) over what each unit reads (its input L2 norms, each unit
scaled to one) and, when the atlas has feature visualisations, over how its picture looks,
both given equal weight. A mixed layer is clustered branch by branch, so its families
keep to one branch. Every unit is in exactly one family; units in no annotated family,
and automatic families of one unit, are together under "other units".
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

OTHER = "other units"


@dataclass(frozen=True)
class Family:
    name: str
    units: tuple[int, ...]
    automatic: bool  # found by clustering, not named by people
    note: str = ""  # for automatic families: what they have in common, such as their branch


def layer_families(graph: LayerGraph, annotations: Annotations, features: dict[str, list[np.ndarray]],
                   count: int = 0) -> dict[str, list[Family]]:
    """Per layer, its families, largest first, "other units" last.

    ``features[layer]`` holds blocks ``[units, d]`` to cluster on (any may be missing);
    ``count`` is the number of automatic families per layer (0: about sqrt(units / 2)).
    """
    found = {}
    for layer in graph.layers:
        named = annotations.families(layer.name)
        if named:
            families = [Family(name, tuple(units), False) for name, units in named.items()]
        else:
            families = _clustered(layer, features.get(layer.name, []), count)
        found[layer.name] = _ordered(layer, families)
    return found


def family_features(graph: LayerGraph, weights: list[LayerWeights], norms: list[np.ndarray],
                    pictures=None) -> dict[str, list[np.ndarray]]:
    """Per layer, what its units are clustered on: the norms of their input kernels from each
    layer they read (a first layer's kernels themselves) and, with ``pictures``, their positive
    feature visualisations shrunk to a few pixels."""
    read: dict[str, list[np.ndarray]] = {}
    for w, l2 in zip(weights, norms):
        if w.hops == 1:
            block = w.kernel if w.src is None else l2
            read.setdefault(w.dst, []).append(block.reshape(len(block), -1))
    found = {name: [np.concatenate(blocks, axis=1)] for name, blocks in read.items()}
    if pictures is not None:
        for layer in graph.layers:
            shrunk = np.stack([_shrunk(pictures.picture(layer.name, u)) for u in range(layer.channels)])
            found.setdefault(layer.name, []).append(shrunk)
    return found


def _shrunk(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.BOX),
                      dtype=np.float32)


def _ordered(layer: Layer, families: list[Family]) -> list[Family]:
    """Largest first; units in no family, and families of one, as "other units" at the end."""
    kept = sorted((f for f in families if len(f.units) > 1), key=lambda f: (-len(f.units), f.units[0]))
    placed = {u for f in kept for u in f.units}
    rest = tuple(u for u in range(layer.channels) if u not in placed)
    return kept + ([Family(OTHER, rest, all(f.automatic for f in families))] if rest else [])


def _clustered(layer: Layer, blocks: list[np.ndarray], count: int) -> list[Family]:
    """Automatic families: k-means within each branch (so a family never mixes branches), or
    over the whole layer when it has none; ``count`` families per layer, shared out by size."""
    if not blocks or layer.channels < 4:
        return []
    data = np.concatenate([_unit_rows(b) for b in blocks], axis=1)
    spans = [(b.start, b.stop) for b in layer.branches] or [(0, layer.channels)]
    total = count or max(2, round(np.sqrt(layer.channels / 2)))
    families = []
    for start, stop in spans:
        share = max(1, round(total * (stop - start) / layer.channels)) if count else \
            max(1, round(np.sqrt((stop - start) / 2)))
        for members in _kmeans(data[start:stop], share):
            families.append(Family("", tuple(start + u for u in members), True,
                                   _common_branch(layer, tuple(start + u for u in members))))
    ordered = sorted(families, key=lambda f: (-len(f.units), f.units[0]))
    return [Family(f"family {i + 1}", f.units, True, f.note) for i, f in enumerate(ordered)]


def _kmeans(data: np.ndarray, count: int) -> list[list[int]]:
    """``data``'s rows in ``count`` clusters (scikit-learn's k-means, seeded)."""
    from sklearn.cluster import KMeans
    from sklearn.random_projection import GaussianRandomProjection

    count = min(count, len(data))
    if count <= 1:
        return [list(range(len(data)))]
    if data.shape[1] > DIMENSIONS:  # a random projection keeps distances (Johnson-Lindenstrauss), at a fraction of the work
        data = GaussianRandomProjection(DIMENSIONS, random_state=0).fit_transform(data)
    with warnings.catch_warnings():
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
    """"mostly BRANCH" when at least 60% of the members lie in one branch."""
    if not layer.branches:
        return ""
    counts = Counter(b.name for u in members if (b := layer.branch_of(u)))
    if not counts:
        return ""
    name, n = counts.most_common(1)[0]
    return f"all {name}" if n == len(members) else f"mostly {name}" if n >= 0.6 * len(members) else ""
