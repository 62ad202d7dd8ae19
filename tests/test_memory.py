"""The build's memory: freed large blocks go back to the system (glibc), so one layer's arrays
do not stay resident while the next layer's are made."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# In a fresh process: one 8 MB block freed (glibc then keeps blocks of that size for reuse),
# then 40 more, every other one freed: how much resident memory that gives back.
FREED = """
import sys
import numpy as np
from generator import memory
def resident():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024
if sys.argv[1] == 'return':
    assert memory.return_large_blocks()
first = np.ones(2**20); del first
blocks = [np.ones(2**20) for _ in range(40)]
before = resident()
del blocks[::2]
print(before - resident())
"""


def _given_back_mb(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", FREED, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout)


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="glibc on Linux only")
def test_freed_large_blocks_go_back_to_the_system():
    assert _given_back_mb("keep") < 40  # glibc's default: the 20 freed blocks (160 MB) stay resident
    assert _given_back_mb("return") > 140


def test_objects_kept_for_the_build_leave_the_collector_until_it_is_over():
    import gc

    from generator import memory

    assert gc.get_freeze_count() == 0
    with memory.kept_for_the_build():
        assert not gc.isenabled()  # no collection while they are made
        kept = [[i] for i in range(1000)]
    try:
        assert gc.isenabled() and gc.get_freeze_count() >= len(kept)
    finally:
        memory.build_over()
    assert gc.get_freeze_count() == 0
