"""Small measurements for the health message: percentiles of recent timings, this process's memory."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` rounded to 3 decimals, or None when there are none."""
    arr = np.fromiter(values, dtype=float)
    return round(float(np.percentile(arr, q)), 3) if arr.size else None


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc), MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")
