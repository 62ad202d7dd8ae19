"""Progress of the pictures a build makes: how many, how fast, how long to go.

On a terminal, tqdm draws its bar. Where there is none (CI logs, a build run from a script),
a line is logged every ``every`` seconds instead, so a long stage is never silent:
``feature visualisation: 320 of 1,104 pictures (29%), 3.2 a second, about 4 min left``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tqdm import tqdm

log = logging.getLogger("weight_atlas")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts pictures made out of ``total``; use as a context manager, call :meth:`made`."""

    def __init__(self, total: int, every: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.every, self.clock = total, every, clock
        self.done = 0
        self.bar = tqdm(total=total, desc="feature visualisation", unit="picture", leave=False, disable=None)
        self.start = self.last = clock()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def line(self) -> str:
        """Pictures made, the rate so far, and the time left at that rate."""
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        left = f", about {_duration((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total \
            else ""
        return (f"feature visualisation: {self.done:,} of {self.total:,} pictures ({100 * self.done / self.total:.0f}%), "
                f"{rate:.2g} a second{left}")

    def summary(self) -> str:
        elapsed = self.clock() - self.start
        return (f"feature visualisation: {self.done:,} pictures made in {_duration(elapsed)} "
                f"({self.done / max(elapsed, 1e-9):.2g} a second)")

    def made(self, count: int) -> None:
        self.done += count
        self.bar.update(count)
        if self.bar.disable and self.clock() - self.last >= self.every:
            self.last = self.clock()
            log.info(self.line())
