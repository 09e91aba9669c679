"""What the benchmarks share: a settable clock, timing, peak memory, number formatting."""

from __future__ import annotations

import gc
import resource
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any


class Clock:
    """A clock the bench sets by hand (``clock.now = ...``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def n(value: float) -> str:
    return f"{value:,.0f}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` took (after a garbage collection), and what it returned."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
