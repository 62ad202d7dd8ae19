"""Weight Atlas: build a static website of a CNN's weights, a page per neuron."""

import os

# Before torch is imported: PyTorch then places tensors of 2 MB or more on transparent huge pages
# (Linux), so a fresh kernel map costs a fault per 2 MB, not per 4 KB: allocating and writing
# InceptionV1's mixed4e -> mixed5a expanded weights (132 MB) took 28 ms on 4 KB pages, 9 ms on
# huge ones. No effect where torch was imported first, or elsewhere than Linux.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .build import build_atlas
from .config import AtlasConfig, load_config
from .errors import AtlasError
from .expanded import expanded_weights, linear_map
from .graph import LayerGraph, trace_layers
from .network import TracedNetwork

__all__ = ["AtlasConfig", "AtlasError", "LayerGraph", "build_atlas", "expanded_weights", "linear_map",
           "load_config", "trace_layers", "TracedNetwork"]
