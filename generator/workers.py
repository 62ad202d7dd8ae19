"""Work spread over forked processes, one per core.

A forked worker starts with a copy of the build's memory (copy-on-write), so the weights,
rankings and factors it reads are never pickled: only an item's index goes out, and only
its result comes back. Where fork is not available, the work runs here, in order.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .errors import AtlasError

MAX_WORKERS = 4  # more copies of a large build cost more memory than they save time
ENDING = 10.0  # seconds a broken pool's dead worker may take to be seen ended (a core dump takes a while)

_WORK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None  # what the forked workers run


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def forked_map(function: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """``function(item)`` for every item, in order, computed by forked workers."""
    global _WORK
    workers = min(cores(), MAX_WORKERS, len(items))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods() or _WORK is not None:
        yield from map(function, items)
        return
    _WORK = (function, items)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=worker_started,
                                 initargs=(os.getpid(),)) as pool:
            results = pool.map(_run, range(len(items)))
            processes = started(pool)
            try:
                yield from results
            except BrokenProcessPool:
                raise AtlasError(f"A worker process of the build died ({ended(processes)}); the build stopped. If the "
                                 f"machine ran out of memory, close other programs or build on a larger one."
                                 ) from None
    finally:
        _WORK = None


def started(pool: ProcessPoolExecutor) -> list:
    """The pool's worker processes (taken once work is submitted: a broken pool may forget them)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def ended(processes: list) -> str:
    """How a pool's dead workers (:func:`started`) ended, such as "killed by SIGKILL", for a message
    (the pool itself stops the others with SIGTERM, which is left out when there is more to say)."""
    how = set()
    deadline = time.monotonic() + ENDING  # until one of them is seen to have ended (the pool may see it first)
    while not any(process.exitcode for process in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes:
        process.join(0.2)
        code = process.exitcode
        if code is not None and code < 0:
            try:
                how.add(f"killed by {signal.Signals(-code).name}")
            except ValueError:
                how.add(f"killed by signal {-code}")
        elif code:
            how.add(f"exit status {code}")
    if len(how) > 1:
        how.discard("killed by SIGTERM")
    return ", ".join(sorted(how)) or "it ended unexpectedly"


def worker_started(build: int) -> None:
    """In a new worker process of the build process ``build``: leave Ctrl-C to the build (which
    stops its workers), end at SIGTERM, and on Linux die with the build even when it is killed
    outright."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != build:  # the build ended before this line
            os._exit(1)


def _run(index: int) -> Any:
    function, items = _WORK
    return function(items[index])
