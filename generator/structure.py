"""How the atlas organises units beyond their connections: the plain data the pages read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .annotations import Annotations
from .expanded import LayerWeights
from .factors import GroupFactors, LayerFactors
from .families import Family
from .linearity import Linearity
from .paths import PairPaths


@dataclass(frozen=True)
class Structure:
    """How the atlas organises units beyond their connections: each unit's weight factors,
    people's labels and families, automatic families, the factors of annotated families, and
    the kernels and kernel norms between adjacent layers (``norms[(src, dst)]``: ``[dst units,
    src units]``), how far the expanded weights hold (None: not measured), and the paths of
    the listed connections that have several."""

    factors: dict[str, LayerFactors]
    annotations: Annotations
    families: dict[str, list[Family]]
    groups: list[GroupFactors]
    norms: dict[tuple[str, str], np.ndarray]
    kernels: dict[tuple[str, str], LayerWeights]  # the weights between adjacent layers, by (src, dst)
    linearity: Linearity | None = None
    paths: dict[tuple, PairPaths] = field(default_factory=dict)  # by (src, dst, hops): pairs with several paths
