"""The services' clocks as plain callables, injected wherever time is read (tests pass their own)."""

from __future__ import annotations

import time
from collections.abc import Callable

NowMs = Callable[[], int]


def wall_ms() -> int:
    """Wall-clock time in ms since the epoch (what is stored: receipt times, outage bounds)."""
    return time.time_ns() // 1_000_000


def steady_clock() -> NowMs:
    """Wall-clock ms as of now, then advanced by the monotonic clock. Setting the host
    clock cannot move it, so an exchange offset measured against it stays a lower bound
    between two samples (see :mod:`gap_handler.core.exchange_clock`)."""
    wall0, mono0 = time.time_ns(), time.monotonic_ns()
    return lambda: (wall0 + time.monotonic_ns() - mono0) // 1_000_000
