"""What a visualisation maximises: a score per image of the batch, from the layer's activations.

Objectives compose like Lucid's: ``a + b``, ``a - b``, ``2 * a`` and ``-a`` are objectives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Objective:
    """A function from activations ``[B, C, ...]`` to one score per image, ``[B]``."""

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor], description: str):
        self.score, self.description = score, description

    def __call__(self, activations: torch.Tensor) -> torch.Tensor:
        return self.score(activations)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda a: self(a) + other(a), f"{self.description} + {other.description}")

    def __sub__(self, other: Objective) -> Objective:
        return self + (-1.0) * other

    def __rmul__(self, factor: float) -> Objective:
        return Objective(lambda a: factor * self(a), f"{factor:g} * ({self.description})")

    def __neg__(self) -> Objective:
        return (-1.0) * self


def channel_mean(activations: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Per image ``b``, the mean activation of unit ``units[b]`` over all positions."""
    picked = activations[torch.arange(len(activations), device=activations.device), units]
    return picked.reshape(len(picked), -1).mean(dim=1)


def channels(units: list[int], directions: list[int], device: torch.device | str = "cpu") -> Objective:
    """Image ``b`` maximises the mean activation of unit ``units[b]`` (or minimises it, for
    direction -1): the positive and negative feature visualisations of many units at once.
    ``device`` is where the activations will be (nothing is copied there per step)."""
    index = torch.tensor(units, device=device)
    sign = torch.tensor(directions, dtype=torch.float32, device=device)
    return Objective(lambda a: sign.to(a.device) * channel_mean(a, index.to(a.device)),
                     "mean activation of each image's own unit")
