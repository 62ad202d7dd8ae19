"""The build's peak memory, stage by stage.

On Linux the kernel keeps a process's peak resident memory (``VmHWM`` in
``/proc/self/status``) and lets the process reset it (writing 5 to
``/proc/self/clear_refs``), so each stage's own peak can be measured. Elsewhere only the
peak since the process started is known (``getrusage``), and each stage reports that.
Worker processes (feature visualisation, unit pages) are not counted: this is the
build's own memory, the part that grows with the model.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


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
