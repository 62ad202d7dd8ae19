"""Where a build's jobs run: one engine per build, chosen from ``featurevis.engine``.

Feature visualisation and dataset examples split their work into jobs that need only the
model: a :class:`Work` says what one job does (a module-level function of a
:class:`Worker` and an item), how to name one and what it counts for in progress. An
engine runs them and yields each job's result as it finishes, in any order. Every engine
implements :class:`Engine`; :data:`ENGINES` names them, and :func:`engine_for` is the one
place a build's engine is chosen. A new engine is one module and one line in
:data:`ENGINES`:

- ``local`` (:mod:`generator.engines.local`): this machine; jobs in worker processes that
  each load the model, or in the build's own process;
- ``ray`` (:mod:`generator.cluster`): tasks on a Ray cluster, lost ones sent again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import nn

from ..config import AtlasConfig
from ..errors import AtlasError
from ..graph import LayerGraph, trace_layers
from ..network import TracedNetwork

Item = TypeVar("Item")
Result = TypeVar("Result")

ENGINES: dict[str, str] = {  # featurevis.engine -> "module:class" of the engine
    "local": "generator.engines.local:LocalEngine",
    "ray": "generator.cluster:RayEngine",
}


def _nothing(count: int) -> None:
    return None


@dataclass
class Worker:
    """What a job runs with, in whichever process runs it: the model, the device jobs use,
    and what jobs derive from them (``memo``: a traced network, cut models), kept for the
    jobs that follow in that process. ``progress`` counts work done within a job; only an
    engine that runs jobs in the build's process listens (see :func:`in_order`)."""

    model: nn.Module
    device: torch.device
    memo: dict[Any, Any] = field(default_factory=dict)
    progress: Callable[[int], object] = _nothing

    @staticmethod
    def of_build(network: TracedNetwork, graph: LayerGraph, device: torch.device) -> Worker:
        """A worker in the build's own process: it uses the build's model, already traced."""
        return Worker(network.model, device, {("traced", network.input_shape): (network, graph)})

    def traced(self, shape: tuple[int, int, int]) -> tuple[TracedNetwork, LayerGraph]:
        """The model traced on inputs of ``shape`` (channels, height, width) and its layers, once."""
        key = ("traced", tuple(shape))
        if key not in self.memo:
            self.memo[key] = trace_layers(self.model, shape)
        return self.memo[key]


@dataclass(frozen=True)
class Work(Generic[Item, Result]):
    """A kind of job, the same on every engine.

    ``task(worker, item)`` does one job; it is a module-level function, so that other
    processes import it, and its item and result are picklable. ``describe(item)`` names
    a job in messages ("The job of 16 pictures of `conv1` (units 0 to 15)"); ``size(item)``
    is what it counts for in progress (pictures, images). ``name`` names the work in
    messages ("feature-visualisation"). ``in_build``: quick jobs that a local engine runs
    in the build's process, where starting workers that load the model would cost more
    than they save (a cluster's engine still spreads them).
    """

    name: str
    task: Callable[[Worker, Item], Result]
    describe: Callable[[Item], str]
    size: Callable[[Item], int]
    in_build: bool = False


class Engine(Protocol):
    """Runs a build's jobs; made by ``Engine(config, network, graph)`` for one build, which
    closes it at its end. It joins or starts what it needs (worker processes, a cluster)
    only once there are jobs to run, and stops their work when the build stops (an error,
    Ctrl-C, SIGTERM: ``run``'s iterator is closed)."""

    device: torch.device | None  # the device of jobs run on this machine (measured to size jobs); None: elsewhere

    def processes(self, work: Work, jobs: int) -> int:
        """How many processes of this machine run ``jobs`` jobs of ``work`` (0: they run elsewhere)."""

    def where(self, work: Work, jobs: int) -> str:
        """Where ``jobs`` jobs of ``work`` run, in words for the log: "cpu in 2 processes"."""

    def run(self, work: Work[Item, Result], items: Sequence[Item],
            progress: Callable[[int], object]) -> Iterator[tuple[Item, Result]]:
        """Every item's result, as each job finishes; ``progress(count)`` is told each job's
        ``size`` once the caller has taken its result. A job lost with a worker is sent again
        where the engine can (Ray), or stops the build with an :class:`AtlasError` naming
        that worker's end; an :class:`AtlasError` of a job reaches the build as it is."""

    def close(self) -> None:
        """End what the engine started (workers, a connection)."""


def engine_for(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph) -> Engine:
    """The engine ``featurevis.engine`` names, for a build of ``network``: the one place it is chosen."""
    name = config.featurevis.engine
    if name not in ENGINES:
        raise AtlasError(f"`featurevis.engine` must be one of {', '.join(sorted(ENGINES))}, not {name!r}.")
    module, _, attribute = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)(config, network, graph)


@contextmanager
def opened(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph,
           engine: Engine | None = None) -> Iterator[Engine]:
    """``engine`` (a build's, kept open), or else the config's own for this stage, closed at its end."""
    if engine is not None:
        yield engine
        return
    engine = engine_for(config, network, graph)
    try:
        yield engine
    finally:
        engine.close()


def in_order(worker: Worker, work: Work[Item, Result], items: Sequence[Item],
             progress: Callable[[int], object]) -> Iterator[tuple[Item, Result]]:
    """Every job in this process, one after another: how an engine runs jobs in the build's
    process. ``progress`` hears the job's own counts as it goes (``worker.progress``)."""
    for item in items:
        told = 0

        def tell(count: int) -> None:
            nonlocal told
            told += count
            progress(count)
        worker.progress = tell
        try:
            result = work.task(worker, item)
        finally:
            worker.progress = _nothing
        yield item, result
        progress(work.size(item) - told)
