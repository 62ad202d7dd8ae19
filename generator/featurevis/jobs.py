"""The feature visualisation stage: plan the missing pictures as jobs, run them, cache them.

A job (one layer, up to ``batch`` units) needs nothing but the model, so jobs run in any
order and in any process: in a pool of worker processes that each load the model from
the atlas config, in the build's own process when there is one job or a GPU, or as tasks
on a Ray cluster (``featurevis.engine: ray``, :mod:`generator.cluster`). Each job's
pictures go into the cache as soon as it finishes.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..cluster import Cluster, Shared
from ..config import AtlasConfig
from ..errors import AtlasError
from ..graph import LayerGraph, find_layers
from ..network import TracedNetwork
from ..workers import ended, worker_started
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
    processes: int = 0  # worker processes this build started (0: none needed)

    def image(self, layer: str, unit: int, direction: int = 1) -> Path:
        return self.cache.image(layer, unit, direction)

    def picture(self, layer: str, unit: int, direction: int = 1) -> Image.Image:
        """The picture, decoded (an :class:`AtlasError` if its file turns out damaged)."""
        return self.cache.picture(layer, unit, direction)

    def provenance(self, layer: str, unit: int, direction: int = 1) -> dict[str, Any]:
        return self.cache.provenance(layer, unit, direction)


def resolve_device(setting: str) -> torch.device:
    """``auto``: the GPU when PyTorch sees one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise AtlasError(f"`featurevis.device` is {setting}, but PyTorch sees no CUDA GPU here. "
                         f"Set `featurevis.device: auto` (or cpu) to run on the CPU.")
    return torch.device(setting)


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


def batch_sizes(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph,
                device: torch.device | None) -> Callable[[str], int]:
    """Pictures per job in each layer: ``featurevis.batch``; if 0, what fits on a local GPU
    (measured once per layer), else ``CPU_BATCH`` (on a Ray cluster too: the build cannot
    measure its workers' GPUs)."""
    settings = config.featurevis
    if settings.batch or device is None or device.type != "cuda":
        return lambda layer: settings.batch or CPU_BATCH
    network.model.eval().requires_grad_(False).to(device)
    processes = 1 if settings.jobs == "auto" else int(settings.jobs)  # sharing the GPU

    @functools.cache
    def fitting(layer: str) -> int:
        size = fitting_batch(model_for(network, graph, layer, 1), layer, graph.layer(layer).channels, settings,
                             config.input, device, share=0.8 / processes)
        log.info("feature visualisation: %d pictures of `%s` at once fit on %s", size, layer, device)
        return size
    return fitting


def visualise_units(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph, weights: str) -> Pictures:
    """Make (or find in the cache) the pictures of every unit of ``graph``; ``weights`` is the
    model's :func:`generator.loading.weights_hash`."""
    settings = config.featurevis
    cache = PictureCache(config.cache, weights, config)
    directions = (1, -1) if settings.negative else (1,)
    pictures = Pictures(cache, directions)
    device = resolve_device(settings.device) if settings.engine == "local" else None  # a cluster's are its own
    jobs = plan(graph, cache, directions, batch_sizes(config, network, graph, device))
    total = sum(layer.channels for layer in graph.layers) * len(directions)
    pictures.reused = total - sum(len(j.units) for j in jobs)
    if not jobs:
        log.info("feature visualisation: all %d pictures from the cache %s", total, cache.folder)
        return pictures
    to_make = total - pictures.reused
    if settings.engine == "ray":
        with Cluster(settings.address, network.model, settings.device) as cluster:
            log.info("feature visualisation: %d of %d pictures to make (%d steps each), %d jobs on %s",
                     to_make, total, settings.steps, len(jobs), cluster.description)
            with closing(cluster.run(render_on_worker, [(config, job) for job in jobs], describe)) as finished:
                _store((result for _, result in finished), pictures, "cuda" if cluster.use_gpus else "cpu", to_make)
        return pictures
    if settings.jobs == "auto":
        processes = 1 if device.type == "cuda" else min(os.cpu_count() or 1, len(jobs))
    else:
        processes = min(int(settings.jobs), len(jobs))
    pictures.processes = processes
    log.info("feature visualisation: %d of %d pictures to make (%d steps each), %d jobs on %s in %d process%s",
             to_make, total, settings.steps, len(jobs), device, processes, "" if processes == 1 else "es")
    _store(run_jobs(jobs, config, network, graph, device, processes), pictures, device.type, to_make)
    return pictures


def describe(item: tuple[AtlasConfig, Job]) -> str:
    job = item[1]
    return (f"The job of {len(job.units)} {'negative ' if job.direction < 0 else ''}picture"
            f"{'s' if len(job.units) != 1 else ''} of `{job.layer}` (units {job.units[0]} to {job.units[-1]})")


def _store(results: Iterator[list[Picture]], pictures: Pictures, device: str, to_make: int) -> None:
    """Put each finished job's pictures in the cache as it comes, counting them."""
    with Progress(to_make) as progress:
        for result in results:
            for picture in result:
                if not (math.isfinite(picture.objective) and math.isfinite(picture.noise)):
                    raise AtlasError(
                        f"The activations of `{picture.layer}` are not finite (NaN or infinity) while its pictures "
                        f"are optimised: the model overflows float32 (are its weights far too large?). Check the "
                        f"checkpoint, or build without pictures (`featurevis.enabled: false`).")
                pictures.cache.put(picture, device)
            pictures.made += len(result)
            progress.made(len(result))
    log.info(progress.summary())


def run_jobs(jobs: list[Job], config: AtlasConfig, network: TracedNetwork, graph: LayerGraph,
             device: torch.device, processes: int):
    """Each job's pictures, as jobs finish: in this process, or in ``processes`` workers."""
    if processes == 1:
        worker = _Worker(config, network, graph, device)
        for job in jobs:
            yield worker(job)
        return
    threads = max(1, torch.get_num_threads() // processes)
    context = multiprocessing.get_context("spawn")  # forking a process that holds torch threads can hang
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                             initargs=(config, device.type, threads, os.getpid())) as pool:
        futures = [pool.submit(_work, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            raise AtlasError(f"A feature-visualisation worker process died ({ended(pool)}); the build stopped. "
                             f"Finished pictures are cached. If the machine ran out of memory, set a smaller "
                             f"`featurevis.batch` or `featurevis.jobs`, then build again.") from None
        except BaseException:  # an error, Ctrl-C or SIGTERM: stop now, finished pictures are cached
            # Running jobs would be waited for and thrown away: end the workers, which fails
            # every job left (the executor has no public way to before Python 3.14).
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            raise


class _Worker:
    """Renders jobs with one model, keeping each layer's truncated model."""

    def __init__(self, config: AtlasConfig, network: TracedNetwork, graph: LayerGraph, device: torch.device):
        self.config, self.network, self.graph, self.device = config, network, graph, device
        network.model.eval().requires_grad_(False).to(device)
        self.models: dict[tuple[str, int], nn.Module] = {}

    def __call__(self, job: Job) -> list[Picture]:
        key = (job.layer, job.direction)
        if key not in self.models:
            self.models[key] = model_for(self.network, self.graph, job.layer, job.direction)
        return render(self.models[key], job, self.config.featurevis, self.config.input, self.device)


_WORKER: _Worker | None = None


def _start_worker(config: AtlasConfig, device: str, threads: int, build: int) -> None:
    from ..loading import load_model  # the worker's own copy of the model

    global _WORKER
    worker_started(build)
    torch.set_num_threads(threads)
    try:
        network = TracedNetwork(load_model(config), config.input.shape)  # traced once per worker
    except Exception as error:  # the build's own load succeeded: a factory that is not deterministic
        print(f"error: a worker could not load the model: {str(error)[:500]}", file=sys.stderr)
        os._exit(3)  # the build reports the worker's end
    _WORKER = _Worker(config, network, find_layers(network), torch.device(device))


def _work(job: Job) -> list[Picture]:
    assert _WORKER is not None, "worker not started"
    return _WORKER(job)


def render_on_worker(shared: Shared, item: tuple[AtlasConfig, Job], device: torch.device) -> list[Picture]:
    """A job's pictures on a Ray worker, which keeps its traced model for the jobs that follow."""
    config, job = item
    worker = shared.memo.get("featurevis")
    if worker is None or worker.config != config:
        network = TracedNetwork(shared.model, config.input.shape)
        worker = shared.memo["featurevis"] = _Worker(config, network, find_layers(network), device)
    return worker(job)
