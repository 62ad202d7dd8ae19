"""The loop: many units' images optimised at once through the model cut after their layer.

One job is one layer and a list of (unit, direction) pairs; image ``b`` of the batch
serves pair ``b`` alone (the model is in eval mode, so images never interact), and draws
its initial spectrum and its transforms from its own random generator, seeded by the
atlas seed, the layer, the unit and the direction. A unit's picture therefore does not
depend on which other units share its batch.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
from torch import nn

from ..config import FeatureVisConfig, InputConfig
from ..graph import LayerGraph
from ..network import TracedNetwork
from ..images import Normalise
from ..operations import name_of, operation
from .layers import fused_local_response_norm, redirected_relu
from .objectives import channel_mean, channels
from .param import FourierImage, initial_spectra
from .transforms import RandomViews, resized

NOISE_IMAGES = 8  # uniform-noise images each job measures its units on, for comparison


@dataclass(frozen=True)
class Job:
    """Independent work: the pictures of some units of one layer."""

    layer: str
    units: tuple[int, ...]
    direction: int  # +1: maximise the units; -1: minimise them (the negative pictures)


@dataclass(frozen=True)
class Picture:
    """One unit's feature visualisation and what it achieves."""

    layer: str
    unit: int
    direction: int
    image: np.ndarray  # uint8 [height, width, channels] (FeatureVisConfig.picture_shape)
    objective: float  # the unit's mean activation (pre-activation, for a negative) on the picture
    noise: float  # the same on uniform-noise images


def redirected(truncated: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A truncated model (:meth:`TracedNetwork.truncated`) with every operation the registry
    marks ``redirect`` (ReLU) redirected and every one it marks ``fuse`` (local response norm)
    fused (:mod:`.layers`), frozen."""
    modules = dict(truncated.named_modules())
    for node in truncated.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        module = modules.get(node.target) if node.op == "call_module" else None
        op = operation(module, name_of(node))
        if op is None or op.featurevis is None:
            continue
        if op.featurevis == "redirect":
            node.op, node.target, node.args, node.kwargs = "call_function", redirected_relu, node.args[:1], {}
        elif module is not None:  # fuse: the module's own settings as arguments
            node.op, node.target, node.kwargs = "call_function", fused_local_response_norm, {}
            node.args = (node.args[0], module.size, module.alpha, module.beta, module.k)
        else:
            node.op, node.target = "call_function", fused_local_response_norm
    truncated.recompile()
    truncated.eval().requires_grad_(False)
    return truncated


def model_for(network: TracedNetwork, graph: LayerGraph, layer: str, direction: int) -> nn.Module:
    """The model cut after ``layer``, ReLUs redirected. For a picture (direction +1) it returns
    the layer's value, what the unit passes on; for a negative picture, its value before the
    activation function, since a ReLU's output stops at zero."""
    return redirected(network.truncated([graph.values[graph.layer(layer).name]], before_activation=direction < 0))


def generator_for(seed: int, layer: str, unit: int, direction: int) -> np.random.Generator:
    """The random generator of one picture: the same numbers on every machine and run."""
    return np.random.default_rng([seed, zlib.crc32(layer.encode("utf-8")), unit, 1 if direction > 0 else 0])


def render(model: nn.Module, job: Job, settings: FeatureVisConfig, inp: InputConfig,
           device: torch.device) -> list[Picture]:
    """Optimise the pictures of ``job`` with the model cut after its layer (:func:`model_for`)."""
    size = settings.picture_shape(inp)  # (height, width)
    generators = [generator_for(settings.seed, job.layer, u, job.direction) for u in job.units]
    image = FourierImage(initial_spectra(generators, inp.channels, size).to(device), settings.decorrelate,
                         width=size[1])
    views = RandomViews(settings.transforms, size, inp.size, generators)
    normalise = Normalise(inp, device)
    objective = channels(list(job.units), [job.direction] * len(job.units), device)
    thetas = views.thetas(settings.steps, device)  # every step's views, sent to the device once

    def values(images: torch.Tensor, precision: str = settings.precision) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            (value,) = model(normalise(images))
        return value.float()

    optimiser = torch.optim.Adam(image.parameters(), lr=settings.learning_rate)
    with torch.enable_grad():  # whatever grad mode the caller left on
        for step in range(settings.steps):
            optimiser.zero_grad(set_to_none=True)
            loss = -objective(values(views(image(), thetas[step]))).sum()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        final = image()
        units = torch.tensor(job.units, device=device)
        achieved = channel_mean(values(resized(final, inp.size), "float32"), units).cpu().tolist()
        noise_images = torch.from_numpy(
            np.random.default_rng([settings.seed, zlib.crc32(job.layer.encode("utf-8"))])
            .random((NOISE_IMAGES, *inp.shape), dtype=np.float32)).to(device)
        on_noise = values(noise_images, "float32")
        noise = on_noise.reshape(NOISE_IMAGES, on_noise.shape[1], -1).mean(dim=(0, 2)).cpu()
        pixels = (final.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return [Picture(job.layer, u, job.direction, pixels[b], float(achieved[b]), float(noise[u]))
            for b, u in enumerate(job.units)]


def fitting_batch(model: nn.Module, layer: str, channels: int, settings: FeatureVisConfig, inp: InputConfig,
                  device: torch.device, share: float = 0.8, most: int = 512) -> int:
    """How many pictures of ``layer`` one job can optimise at once on a CUDA device: as many
    as fit in ``share`` of its free memory, from the peak memory of one step with 2 and with
    6 pictures (their difference is what a picture costs; the rest is fixed)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    before = torch.cuda.memory_allocated(device)
    peaks = {}
    for count in (2, 6):
        torch.cuda.reset_peak_memory_stats(device)
        units = tuple(u % channels for u in range(count))
        render(model, Job(layer, units, 1), dataclasses.replace(settings, steps=1), inp, device)
        peaks[count] = torch.cuda.max_memory_allocated(device) - before
    per_picture = max((peaks[6] - peaks[2]) / 4, 1.0)
    fixed = max(peaks[2] - 2 * per_picture, 0.0)
    return max(1, min(most, int((free * share - fixed) / per_picture)))
