"""The Ray engine (``featurevis.engine: ray``): work spread over a Ray cluster, many GPUs or
machines, one build.

The build's process is Ray's driver. It joins a cluster (``featurevis.address``; else the
one Ray finds, through ``RAY_ADDRESS`` or ``ray start`` on this machine; else a private one
it starts for the build), puts the model in the cluster's object store once, and sends
jobs (:class:`generator.engines.Work`) as tasks that take one GPU each where the cluster
has GPUs, one CPU each otherwise. Results come back as tasks finish, in any order. A task whose worker or node
is lost is sent again (``TRIES`` sends in all), so a lost machine costs only the work it
was doing.

Every node runs the same Python environment (weight-atlas, torch, Ray). The model's own
code is sent with the work when it lives outside the installed packages; files a task
reads (a dataset folder) must be at the same path on every node.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .config import AtlasConfig
from .engines import Work, Worker
from .errors import AtlasError
from .graph import LayerGraph
from .network import TracedNetwork
from .torchvision_models import ensure_importable

log = logging.getLogger("weight_atlas")

TRIES = 3  # times a task is sent before its repeated loss fails the build
Item = TypeVar("Item")


def _ray():
    try:
        import ray
    except ImportError:
        raise AtlasError("`featurevis.engine: ray` needs Ray, an optional extra: pip install -e '.[ray]' "
                         "(or pip install 'weight-atlas[ray]'), here and on every node of the cluster. "
                         "Or set `featurevis.engine: local`.") from None
    return ray


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for work lost with its worker process or node (not errors of the work itself)."""
    errors = _ray().exceptions
    return (errors.WorkerCrashedError, errors.NodeDiedError, errors.ObjectLostError, errors.OwnerDiedError,
            errors.LocalRayletDiedError)


def _model_code(model: nn.Module) -> dict[str, Any] | None:
    """A Ray ``runtime_env`` that ships the model's code, when it is not an installed package
    (``my_models.py`` beside the config): workers import it like the build did."""
    top = type(model).__module__.split(".")[0]
    path = getattr(sys.modules.get(top), "__file__", None)
    if top in ("__main__", "generator", "torch", "torchvision") or path is None:
        return None  # __main__: pickled by value; the others: installed on every node
    path = Path(path)
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return None
    return {"py_modules": [str(path.parent if path.name == "__init__.py" else path)]}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _check_reachable(address: str | None) -> None:
    """Fail at once where nothing answers at ``host:port`` (Ray itself retries for minutes)."""
    host, _, port = (address or "").removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # None, "auto" or a form Ray explains itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as error:
        raise AtlasError(f"No Ray cluster answers at {address} ({error.strerror or error}). Start one there with "
                         f"`ray start --head --port {port}`, or correct `featurevis.address`.") from None


def _use_token(address: str | None) -> None:
    """A cluster started with ``ray start`` checks a token (Ray writes it to ~/.ray/auth_token).
    Ray sends it when it finds the cluster itself, but not to an address it is given: do as it
    does there, unless ``RAY_AUTH_MODE`` says otherwise."""
    if address is None or "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


class RayEngine:
    """``featurevis.engine: ray``: jobs as tasks on a Ray cluster, joined when the build first
    has jobs to send (a build with nothing to send never connects) and kept until it ends,
    for pictures and dataset examples alike."""

    device = None  # the workers' own

    def __init__(self, config: AtlasConfig, network: TracedNetwork, graph: LayerGraph):
        self.address, self.setting, self.built = config.featurevis.address, config.featurevis.device, network.model
        self.started = False  # whether this build started Ray's connection (else it keeps the caller's)
        self.model: list | None = None  # the model in the object store, in a list: tasks get the reference

    def _join(self) -> None:
        if self.model is not None:
            return
        _use_token(self.address)  # before Ray reads its settings, on import
        ray = _ray()
        if not ray.is_initialized():
            _check_reachable(self.address or os.environ.get("RAY_ADDRESS"))
            handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                ray.init(address=self.address, runtime_env=_model_code(self.built), logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as error:
                raise AtlasError(
                    f"Could not join the Ray cluster{f' at {self.address}' if self.address else ''} "
                    f"({type(error).__name__}: {_first_line(error) or 'no details'}). "
                    f"Start one with `ray start --head`, or correct `featurevis.address`.") from None
            finally:  # Ray installs its own; the build's stop cleanly (Ctrl-C and SIGTERM alike)
                for number, handler in handlers.items():
                    signal.signal(number, handler)
            self.started = True
        try:
            resources = ray.cluster_resources()
            self.gpus, self.cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
            if self.setting.startswith("cuda") and not self.gpus:
                raise AtlasError(f"`featurevis.device` is {self.setting}, but the Ray cluster has no GPU. "
                                 f"Set `featurevis.device: auto` (or cpu) to run on its CPUs.")
            self.use_gpus = self.gpus > 0 and self.setting != "cpu"
            self.model = [ray.put(self.built)]
        except BaseException:
            self.close()
            raise

    def processes(self, work: Work, jobs: int) -> int:
        return 0

    def where(self, work: Work, jobs: int) -> str:
        self._join()
        return (f"a Ray cluster, one task per GPU ({self.gpus} GPUs)" if self.use_gpus
                else f"a Ray cluster, one task per CPU ({self.cpus} CPUs)")

    def close(self) -> None:
        self.model = None
        if self.started:
            self.started = False
            _ray().shutdown()

    def run(self, work: Work[Item, Any], items: Sequence[Item],
            progress: Callable[[int], object]) -> Iterator[tuple[Item, Any]]:
        self._join()
        return self._tasks(work, items, progress)

    def _tasks(self, work: Work[Item, Any], items: Sequence[Item],
               progress: Callable[[int], object]) -> Iterator[tuple[Item, Any]]:
        ray = _ray()
        task = ray.remote(atlas_task).options(max_retries=0, **({"num_gpus": 1} if self.use_gpus else {"num_cpus": 1}))
        pending = {task.remote(work.task, self.model, item): (item, 1) for item in items}
        lost = _lost_errors()
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                item, tries = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except lost as error:
                    reason = _first_line(error) or type(error).__name__
                    if tries >= TRIES:
                        raise AtlasError(f"{work.describe(item)} was lost with its Ray worker {tries} times "
                                         f"({reason}). Check the cluster's nodes, then build again: "
                                         f"finished work is kept.") from None
                    log.warning("%s was lost with its Ray worker (%s); it runs again", work.describe(item), reason)
                    pending[task.remote(work.task, self.model, item)] = (item, tries + 1)
                    continue
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause
                    if isinstance(cause, AtlasError):
                        raise AtlasError(str(cause)) from None
                    raise AtlasError(f"{work.describe(item)} failed on the Ray cluster ({type(cause).__name__}: "
                                     f"{_first_line(cause)}).") from None
                except ray.exceptions.RayError as error:  # out of memory, unschedulable, code not shipped, ...
                    raise AtlasError(f"{work.describe(item)} could not run on the Ray cluster "
                                     f"({type(error).__name__}: {_first_line(error)}). Check the cluster "
                                     f"(`ray status`), then build again: finished work is kept.") from None
                yield item, result
                progress(work.size(item))
        finally:  # an error, Ctrl-C or SIGTERM: stop the work still running
            for ref in pending:
                ray.cancel(ref, force=True)


_WORKERS: dict[str, Worker] = {}  # on a Ray worker process: the build's model, by its object's id


def atlas_task(task: Callable[[Worker, Any], Any], model: list, item: Any) -> Any:
    """One job on a Ray worker, which fetches the model once and keeps what jobs derive from it."""
    ray = _ray()
    key = model[0].hex()
    if key not in _WORKERS:
        ensure_importable()  # the model's classes may import torchvision, as the build's loading did
        _WORKERS.clear()  # a worker serves one build at a time
        device = torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")
        _WORKERS[key] = Worker(ray.get(model[0]), device)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))
    return task(_WORKERS[key], item)
