"""The embedded default model: a narrow InceptionV1 trained on procedural images."""

from pathlib import Path

from .network import INPUT_SIZE, NarrowInceptionV1

WEIGHTS = Path(__file__).with_name("weights.safetensors")
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

__all__ = ["INPUT_SIZE", "MEAN", "STD", "WEIGHTS", "NarrowInceptionV1"]
