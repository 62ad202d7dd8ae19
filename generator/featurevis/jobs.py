"""The feature visualisation stage: plan the missing pictures as jobs, run them, cache them.

A job (one layer, up to ``batch`` units) needs nothing but the model, so jobs run in any
order and in any process, on the build's engine (:mod:`generator.engines`: worker
processes of this machine, the build's own process, or a Ray cluster). Each job's
pictures go into the cache as soon as it finishes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..config import AtlasConfig
from ..engines import Engine, Work, Worker, opened
from ..errors import AtlasError
from ..graph import LayerGraph
from ..network import TracedNetwork
from .cache import PictureCache
from .optimise import Job, Picture, fitting_batch, model_for, render
from .progress import Progress

log = logging.getLogger("weight_atlas")


@dataclass
class Pictures:
    """Where every unit's pictures are, and what this build had to make."""

    cache: PictureCache
    directions: tuple[int, ...]  # (1,) or (1, -1)
    made: int = 0  # pictures optimised by this build
    reused: int = 0  # pictures found in the cache
    processes: int = 0  # processes of this machine that made them (0: none needed, or a cluster's)

    def image(self, layer: str, unit: int, direction: int = 1) -> Path:
        return self.cache.image(layer, unit, direction)

    def picture(self, layer: str, unit: int, direction: int = 1) -> Image.Image:
        """The picture, decoded (an :class:`AtlasError` if its file turns out damaged)."""
        return self.cache.picture(layer, unit, direction)

    def provenance(self, layer: str, unit: int, direction: int = 1) -> dict[str, Any]:
        return self.cache.provenance(layer, unit, direction)


CPU_BATCH = 32  # pictures a job on a CPU optimises together, when `featurevis.batch` is 0


def plan(graph: LayerGraph, cache: PictureCache, directions: tuple[int, ...],
         batch: Callable[[str], int]) -> list[Job]:
    """Jobs for every picture not in the cache, up to ``batch(layer)`` pictures each, layer by layer."""
    jobs = []
    for layer in graph.layers:
        for direction in directions:
            missing = [u for u in range(layer.channels) if not cache.has(layer.name, u, direction)]
            if missing:
                size = batch(layer.name)
                jobs += [Job(layer.name, tuple(missing[start : start + size]), direction)
                         for start in range(0, len(missing), size)]
    return jobs


def batch_sizes(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph, engine: Engine) -> Callable[[str], int]:
    """Pictures per job in each layer: ``featurevis.batch``; if 0, what fits on the engine's GPU
    (measured once per layer, shared by the processes that use it), else ``CPU_BATCH`` (on a
    Ray cluster too: the build cannot measure its workers' GPUs)."""
    settings = config.featurevis
    device = engine.device
    if settings.batch or device is None or device.type != "cuda":
        return lambda layer: settings.batch or CPU_BATCH
    network.model.eval().requires_grad_(False).to(device)
    most = 2 * sum(layer.channels for layer in graph.layers)  # jobs: at most one a picture
    processes = engine.processes(PICTURES, most)

    @functools.cache
    def fitting(layer: str) -> int:
        size = fitting_batch(model_for(network, graph, layer, 1), layer, graph.layer(layer).channels, settings,
                             config.input, device, share=0.8 / max(processes, 1))
        log.info("feature visualisation: %d pictures of `%s` at once fit on %s", size, layer, device)
        return size
    return fitting


def visualise_units(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph, weights: str,
                    engine: Engine | None = None) -> Pictures:
    """Make (or find in the cache) the pictures of every unit of ``graph``; ``weights`` is the
    model's :func:`generator.loading.weights_hash`. Jobs run on ``engine`` (the build's), else
    on the config's own engine."""
    settings = config.featurevis
    cache = PictureCache(config.cache, weights, config)
    directions = (1, -1) if settings.negative else (1,)
    pictures = Pictures(cache, directions)
    with opened(config, network, graph, engine) as engine:
        jobs = plan(graph, cache, directions, batch_sizes(config, network, graph, engine))
        total = sum(layer.channels for layer in graph.layers) * len(directions)
        pictures.reused = total - sum(len(j.units) for j in jobs)
        if not jobs:
            log.info("feature visualisation: all %d pictures from the cache %s", total, cache.folder)
            return pictures
        to_make = total - pictures.reused
        pictures.processes = engine.processes(PICTURES, len(jobs))
        log.info("feature visualisation: %d of %d pictures to make (%d steps each), %d jobs on %s",
                 to_make, total, settings.steps, len(jobs), engine.where(PICTURES, len(jobs)))
        with Progress(to_make) as progress, \
                closing(engine.run(PICTURES, [(config, job) for job in jobs], progress.made)) as finished:
            for _, (device, made) in finished:
                _store(made, device, pictures)
        log.info(progress.summary())
    return pictures


def _store(made: list[Picture], device: str, pictures: Pictures) -> None:
    """Put a finished job's pictures in the cache, counting them."""
    for picture in made:
        if not (math.isfinite(picture.objective) and math.isfinite(picture.noise)):
            raise AtlasError(
                f"The activations of `{picture.layer}` are not finite (NaN or infinity) while its pictures "
                f"are optimised: the model overflows float32 (are its weights far too large?). Check the "
                f"checkpoint, or build without pictures (`featurevis.enabled: false`).")
        pictures.cache.put(picture, device)
    pictures.made += len(made)


def run_jobs(jobs: list[Job], config: AtlasConfig, network: TracedNetwork, graph: LayerGraph,
             device: torch.device, processes: int) -> Iterator[list[Picture]]:
    """Each job's pictures as jobs finish, on this machine's local engine in up to ``processes``
    processes on ``device`` (what the benchmark measures)."""
    settings = dataclasses.replace(config.featurevis, engine="local", device=str(device), jobs=str(processes))
    config = dataclasses.replace(config, featurevis=settings)
    with opened(config, network, graph) as engine, \
            closing(engine.run(PICTURES, [(config, job) for job in jobs], lambda count: None)) as finished:
        for _, (_, made) in finished:
            yield made


class _Renderer:
    """Renders jobs with one traced model, keeping each layer's cut model."""

    def __init__(self, config: AtlasConfig, network: TracedNetwork, graph: LayerGraph, device: torch.device):
        self.config, self.network, self.graph, self.device = config, network, graph, device
        network.model.eval().requires_grad_(False).to(device)
        self.models: dict[tuple[str, int], nn.Module] = {}

    def __call__(self, job: Job) -> list[Picture]:
        key = (job.layer, job.direction)
        if key not in self.models:
            self.models[key] = model_for(self.network, self.graph, job.layer, job.direction)
        return render(self.models[key], job, self.config.featurevis, self.config.input, self.device)


def render_job(worker: Worker, item: tuple[AtlasConfig, Job]) -> tuple[str, list[Picture]]:
    """On a worker: a job's pictures, and the kind of device that made them ("cpu", "cuda")."""
    config, job = item
    renderer = worker.memo.get("featurevis")
    if renderer is None or renderer.config != config:
        renderer = worker.memo["featurevis"] = _Renderer(config, *worker.traced(config.input.shape), worker.device)
    return worker.device.type, renderer(job)


def _describe(item: tuple[AtlasConfig, Job]) -> str:
    job = item[1]
    return (f"The job of {len(job.units)} {'negative ' if job.direction < 0 else ''}picture"
            f"{'s' if len(job.units) != 1 else ''} of `{job.layer}` (units {job.units[0]} to {job.units[-1]})")


PICTURES: Work[tuple[AtlasConfig, Job], tuple[str, list[Picture]]] = Work(
    "feature-visualisation", render_job, _describe, size=lambda item: len(item[1].units))
