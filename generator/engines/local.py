"""``featurevis.engine: local``: jobs on this machine.

Jobs run in a pool of spawned worker processes (``featurevis.jobs``; ``auto`` is one per
core), each of which loads the model from the atlas config and traces it once, with the
machine's threads shared among them. They run in the build's own process instead when
there is one job, when the device is a GPU (one process uses it best), or for work marked
``in_build``. A worker that dies (killed by a signal, out of memory) stops the build with
an :class:`AtlasError` that says how it ended; Ctrl-C, SIGTERM or an error ends the
workers at once.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from ..config import AtlasConfig
from ..errors import AtlasError
from ..graph import LayerGraph
from ..network import TracedNetwork
from ..workers import ended, started, worker_started
from . import Work, Worker, in_order


def resolve_device(setting: str) -> torch.device:
    """``featurevis.device``; ``auto``: the GPU when PyTorch sees one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise AtlasError(f"`featurevis.device` is {setting}, but PyTorch sees no CUDA GPU here. "
                         f"Set `featurevis.device: auto` (or cpu) to run on the CPU.")
    return torch.device(setting)


class LocalEngine:
    """Jobs in worker processes of this machine, or in the build's own process."""

    def __init__(self, config: AtlasConfig, network: TracedNetwork, graph: LayerGraph):
        self.config, self.network, self.graph = config, network, graph
        self._device: torch.device | None = None
        self._here: Worker | None = None

    @property
    def device(self) -> torch.device:
        """``featurevis.device``, checked when first needed (a build that runs no job checks nothing)."""
        if self._device is None:
            self._device = resolve_device(self.config.featurevis.device)
        return self._device

    def processes(self, work: Work, jobs: int) -> int:
        setting = self.config.featurevis.jobs
        if work.in_build:
            return 1
        if setting == "auto":
            return 1 if self.device.type == "cuda" else min(os.cpu_count() or 1, jobs)
        return min(int(setting), jobs)

    def where(self, work: Work, jobs: int) -> str:
        count = self.processes(work, jobs)
        return (f"{self.device} in the build's process" if work.in_build else
                f"{self.device} in {count} process{'' if count == 1 else 'es'}")

    def run(self, work: Work, items: Sequence[Any], progress: Callable[[int], object]) -> Iterator[tuple[Any, Any]]:
        processes = self.processes(work, len(items))
        if processes <= 1:
            if self._here is None:
                self._here = Worker.of_build(self.network, self.graph, self.device)
            return in_order(self._here, work, items, progress)
        return self._in_workers(work, items, processes, progress)

    def _in_workers(self, work: Work, items: Sequence[Any], processes: int,
                    progress: Callable[[int], object]) -> Iterator[tuple[Any, Any]]:
        threads = max(1, torch.get_num_threads() // processes)
        context = multiprocessing.get_context("spawn")  # forking a process that holds torch threads can hang
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                                 initargs=(self.config, str(self.device), threads, os.getpid())) as pool:
            futures = {pool.submit(_run, work.task, item): item for item in items}
            workers = started(pool)
            try:
                for future in as_completed(futures):
                    item = futures[future]
                    yield item, future.result()
                    progress(work.size(item))
            except BrokenProcessPool:
                workers += [p for p in started(pool) if p not in workers]  # one started after the first look
                raise AtlasError(f"A {work.name} worker process died ({ended(workers)}); the build stopped. Finished "
                                 f"work is kept. If the machine ran out of memory, set a smaller `featurevis.batch` "
                                 f"or `featurevis.jobs`, then build again.") from None
            except BaseException:  # an error, Ctrl-C or SIGTERM: stop now, finished work is kept
                # Running jobs would be waited for and thrown away: end the workers, which fails
                # every job left (the executor has no public way to before Python 3.14).
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.terminate()
                raise

    def close(self) -> None:
        self._here = None


_WORKER: Worker | None = None  # in a worker process: its model


def _start_worker(config: AtlasConfig, device: str, threads: int, build: int) -> None:
    from ..loading import load_model  # the worker's own copy of the model

    global _WORKER
    worker_started(build)
    torch.set_num_threads(threads)
    try:
        worker = Worker(load_model(config), torch.device(device))
        worker.traced(config.input.shape)  # once per worker
    except Exception as error:  # the build's own load succeeded: a factory that is not deterministic
        print(f"error: a worker could not load the model: {str(error)[:500]}", file=sys.stderr)
        os._exit(3)  # the build reports the worker's end
    _WORKER = worker


def _run(task: Callable[[Worker, Any], Any], item: Any) -> Any:
    assert _WORKER is not None, "worker not started"
    return task(_WORKER, item)
