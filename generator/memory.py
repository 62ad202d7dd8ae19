"""The build's peak memory, stage by stage.

On Linux the kernel keeps a process's peak resident memory (``VmHWM`` in
``/proc/self/status``) and lets the process reset it (writing 5 to
``/proc/self/clear_refs``), so each stage's own peak can be measured. Elsewhere only the
peak since the process started is known (``getrusage``), and each stage reports that.
Worker processes (feature visualisation, unit pages) are not counted: this is the
build's own memory, the part that grows with the model.

The build holds large arrays one layer at a time, and frees them before the next layer's.
The C library's allocator (glibc) would keep freed blocks of up to 32 MB for reuse, where
the next layer's arrays, of other sizes, fit badly: the process would grow layer by layer.
:func:`return_large_blocks` has it give every block from ``LARGE_BLOCK`` up back to the
system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from contextlib import contextmanager
from pathlib import Path

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
LARGE_BLOCK = 4 * 2**20  # bytes
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter: blocks from this size up are mapped apart, unmapped when freed


def return_large_blocks() -> bool:
    """Have freed blocks of ``LARGE_BLOCK`` bytes and more go back to the system at once (glibc;
    elsewhere nothing changes and this returns False)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK))
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False


def reset_peak() -> bool:
    """Start a new peak at the current resident memory; False where the system cannot."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """The peak resident memory, in MB, since the last :func:`reset_peak` (or the start)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


@contextmanager
def kept_for_the_build():
    """For objects made in the block and kept until the build ends (the ranked connections, some
    hundred thousand): Python's cyclic collector does not run while they are made (each run
    would walk all of them) and afterwards leaves them out of its walks (``gc.freeze``), in
    this process and in the page writers forked from it, until :func:`build_over`."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def build_over() -> None:
    """The objects :func:`kept_for_the_build` set aside are the collector's again."""
    gc.unfreeze()
