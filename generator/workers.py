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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

MAX_WORKERS = 4  # more copies of a large build cost more memory than they save time

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
        with multiprocessing.get_context("fork").Pool(workers, initializer=worker_started,
                                                      initargs=(os.getpid(),)) as pool:
            yield from pool.imap(_run, range(len(items)))
    finally:
        _WORK = None


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
