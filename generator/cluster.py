"""Work spread over a Ray cluster: many GPUs or machines, one build.

The build's process is Ray's driver. It joins a cluster (``featurevis.address``; else the
one Ray finds, through ``RAY_ADDRESS`` or ``ray start`` on this machine; else a private one
it starts for the build), puts the model in the cluster's object store once, and sends
work items as tasks that take one GPU each where the cluster has GPUs, one CPU each
otherwise. Results come back as tasks finish, in any order. A task whose worker or node
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
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .errors import AtlasError
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


class Cluster:
    """A connection to a Ray cluster holding one model; use as a context manager."""

    def __init__(self, address: str | None, model: nn.Module, device: str):
        _use_token(address)  # before Ray reads its settings, on import
        ray = _ray()
        self.started = not ray.is_initialized()  # else the caller's connection is used, and kept
        if self.started:
            _check_reachable(address or os.environ.get("RAY_ADDRESS"))
            handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                ray.init(address=address, runtime_env=_model_code(model), logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as error:
                raise AtlasError(
                    f"Could not join the Ray cluster{f' at {address}' if address else ''} "
                    f"({type(error).__name__}: {_first_line(error) or 'no details'}). "
                    f"Start one with `ray start --head`, or correct `featurevis.address`.") from None
            finally:  # Ray installs its own; the build's stop cleanly (Ctrl-C and SIGTERM alike)
                for number, handler in handlers.items():
                    signal.signal(number, handler)
        try:
            resources = ray.cluster_resources()
            self.gpus, self.cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
            if device.startswith("cuda") and not self.gpus:
                raise AtlasError(f"`featurevis.device` is {device}, but the Ray cluster has no GPU. "
                                 f"Set `featurevis.device: auto` (or cpu) to run on its CPUs.")
            self.use_gpus = self.gpus > 0 and device != "cpu"
            self.model = [ray.put(model)]  # in a list, so tasks get the reference and fetch it once
        except BaseException:
            self.close()
            raise

    @property
    def description(self) -> str:
        return (f"a Ray cluster, one task per GPU ({self.gpus} GPUs)" if self.use_gpus
                else f"a Ray cluster, one task per CPU ({self.cpus} CPUs)")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.started:
            self.started = False
            if _HELD["held"]:
                _HELD["started"] = True  # held() closes it
            else:
                _ray().shutdown()

    def run(self, function: Callable[[Shared, Item, torch.device], Any], items: Iterable[Item],
            describe: Callable[[Item], str]) -> Iterator[tuple[Item, Any]]:
        """``function(shared, item, device)`` of every item, run on the cluster, as each finishes.
        ``function`` is a module-level function (workers import it)."""
        ray = _ray()
        task = ray.remote(atlas_task).options(max_retries=0, **({"num_gpus": 1} if self.use_gpus else {"num_cpus": 1}))
        pending = {task.remote(function, self.model, item): (item, 1) for item in items}
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
                        raise AtlasError(f"{describe(item)} was lost with its Ray worker {tries} times "
                                         f"({reason}). Check the cluster's nodes, then build again: "
                                         f"finished work is kept.") from None
                    log.warning("%s was lost with its Ray worker (%s); it runs again", describe(item), reason)
                    pending[task.remote(function, self.model, item)] = (item, tries + 1)
                    continue
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause
                    if isinstance(cause, AtlasError):
                        raise AtlasError(str(cause)) from None
                    raise AtlasError(f"{describe(item)} failed on the Ray cluster ({type(cause).__name__}: "
                                     f"{_first_line(cause)}).") from None
                except ray.exceptions.RayError as error:  # out of memory, unschedulable, code not shipped, ...
                    raise AtlasError(f"{describe(item)} could not run on the Ray cluster ({type(error).__name__}: "
                                     f"{_first_line(error)}). Check the cluster (`ray status`), then build again: finished "
                                     f"work is kept.") from None
                yield item, result
        finally:  # an error, Ctrl-C or SIGTERM: stop the work still running
            for ref in pending:
                ray.cancel(ref, force=True)


_HELD = {"held": False, "started": False}  # see held()


@contextmanager
def held() -> Iterator[None]:
    """A build's stages share one connection: the first that joins a cluster keeps it open
    until the build ends. A build with nothing to send never connects."""
    _HELD["held"] = True
    try:
        yield
    finally:
        _HELD["held"] = False
        if _HELD["started"]:
            _HELD["started"] = False
            _ray().shutdown()


@dataclass
class Shared:
    """On a worker: the model, fetched once per worker process, and what tasks derive from it."""

    model: nn.Module
    memo: dict[Any, Any] = field(default_factory=dict)


_SHARED: dict[str, Shared] = {}


def atlas_task(function: Callable[[Shared, Any, torch.device], Any], model: list, item: Any) -> Any:
    ray = _ray()
    key = model[0].hex()
    if key not in _SHARED:
        ensure_importable()  # the model's classes may import torchvision, as the build's loading did
        _SHARED.clear()  # a worker serves one build at a time
        _SHARED[key] = Shared(ray.get(model[0]))
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))
    device = torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")
    return function(_SHARED[key], item, device)
