"""What a visualisation maximises: one score per image of the batch, from the layer's activations.

A job optimises many pictures at once, image ``b`` for its own unit and direction, so the
objective is one score per image (:func:`channels`); :func:`describe` says in words what a
picture of each direction maximises, for its record and its page.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]  # activations [B, C, ...] -> one score per image [B]


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
    return lambda a: sign.to(a.device) * channel_mean(a, index.to(a.device))


def describe(direction: int) -> str:
    """What a picture of ``direction`` maximises or minimises (the negative reads the layer
    before its activation function: :func:`generator.featurevis.optimise.model_for`)."""
    return ("maximise the unit's mean activation" if direction > 0 else
            "minimise the unit's mean pre-activation (before its activation function)")
