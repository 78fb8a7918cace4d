"""Minute-range maths (sans-I/O): holes, windows, subtraction, work units, pages.

A :class:`MinuteRange` is half-open ``[start, end)`` over candle open times in ms,
both multiples of a minute, so ``minutes == (end - start) / 60 000``. Every function
is pure: the caller passes the time it means.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from quaint.binance.models import MINUTE_MS

DAY_MS = 86_400_000
# Candles are kept 13 months (quaint_config 'candles_retention'); 13 * 31 days bounds
# every range the service is asked to scan or backfill.
RETENTION_DAYS = 403


def floor_minute(ms: int) -> int:
    return ms - ms % MINUTE_MS


@dataclass(frozen=True, slots=True, order=True)
class MinuteRange:
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start % MINUTE_MS or self.end % MINUTE_MS:
            raise ValueError("range bounds must be whole minutes")
        if self.end < self.start:
            raise ValueError("range end before start")

    @property
    def minutes(self) -> int:
        return (self.end - self.start) // MINUTE_MS

    @property
    def empty(self) -> bool:
        return self.end == self.start

    def overlaps(self, other: MinuteRange) -> bool:
        return self.start < other.end and other.start < self.end

    def clip(self, lo: int, hi: int) -> MinuteRange | None:
        start, end = max(self.start, lo), min(self.end, hi)
        return MinuteRange(start, end) if start < end else None


def due_end(now_ms: int, threshold_s: float) -> int:
    """Exclusive end of the minutes that should be stored by now: minute ``m`` is due
    once ``now - m >= threshold`` (threshold 70 s = the candle closed 10 s ago)."""
    return floor_minute(now_ms - int(threshold_s * 1000)) + MINUTE_MS


def closed_end(now_ms: int) -> int:
    """Exclusive end of the minutes that have closed (the current one has not)."""
    return floor_minute(now_ms)


def history_start(now_ms: int, days: int) -> int:
    """Oldest minute the service keeps complete: ``days`` before now, on a minute."""
    return floor_minute(now_ms - days * DAY_MS)


def merge(ranges: Iterable[MinuteRange]) -> list[MinuteRange]:
    """Sorted union; touching ranges join."""
    out: list[MinuteRange] = []
    for r in sorted(r for r in ranges if not r.empty):
        if out and r.start <= out[-1].end:
            if r.end > out[-1].end:
                out[-1] = MinuteRange(out[-1].start, r.end)
        else:
            out.append(r)
    return out


def subtract(ranges: Iterable[MinuteRange], cuts: Iterable[MinuteRange]) -> list[MinuteRange]:
    """``ranges`` minus ``cuts``, sorted and merged."""
    cut = merge(cuts)
    out: list[MinuteRange] = []
    for r in merge(ranges):
        start = r.start
        for c in cut:
            if c.end <= start or c.start >= r.end:
                continue
            if c.start > start:
                out.append(MinuteRange(start, c.start))
            start = max(start, c.end)
            if start >= r.end:
                break
        if start < r.end:
            out.append(MinuteRange(start, r.end))
    return out


def total_minutes(ranges: Iterable[MinuteRange]) -> int:
    return sum(r.minutes for r in merge(ranges))


def split_units(r: MinuteRange, minutes_per_unit: int) -> Iterator[MinuteRange]:
    """Cut a hole into work units of at most ``minutes_per_unit`` minutes, oldest first."""
    if minutes_per_unit < 1:
        raise ValueError("minutes_per_unit must be >= 1")
    step = minutes_per_unit * MINUTE_MS
    start = r.start
    while start < r.end:
        end = min(r.end, start + step)
        yield MinuteRange(start, end)
        start = end
