"""Weight Atlas: build a static website of a CNN's weights, a page per neuron."""

from .build import build_atlas
from .config import AtlasConfig, load_config
from .errors import AtlasError
from .expanded import expanded_weights, linear_map
from .graph import LayerGraph, trace_layers
from .network import TracedNetwork

__all__ = ["AtlasConfig", "AtlasError", "LayerGraph", "build_atlas", "expanded_weights", "linear_map",
           "load_config", "trace_layers", "TracedNetwork"]
