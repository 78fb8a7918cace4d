"""Per-symbol gap detection on closed candles (sans-I/O).

One marker per symbol, ``last``: the newest closed minute seen (or stored, at
start-up). Every path that can reveal a gap goes through :meth:`GapDetector.on_closed`
and moves the marker, so a gap is reported exactly once whichever path saw it:

* steady state: the new candle's open time is more than the threshold after ``last``;
* after a reconnect, and at start-up (``last`` seeded from the newest stored candle):
  any missing minute counts, whatever the threshold ("compare the last stored minute
  with the first new one").

Closed candles at or before ``last`` are duplicates (the same minute twice, e.g. two
connections overlapping during a rollover) or late arrivals; neither moves the
marker, so neither can open or re-open a gap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from quaint.binance.models import MINUTE_MS


class Verdict(IntEnum):
    NEW = 0  # the newest minute so far: store it
    DUPLICATE = 1  # exactly the newest minute again: drop it
    LATE = 2  # older than the newest: store it (idempotent), it may fill a hole


@dataclass(frozen=True, slots=True)
class Gap:
    symbol: str
    start: int  # open time (ms) of the first missing minute
    end: int  # open time (ms) of the last missing minute
    reason: str  # threshold | reconnect | startup | dropped

    @property
    def missing(self) -> int:
        return (self.end - self.start) // MINUTE_MS + 1


def minute_ranges(open_times: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted open times -> inclusive (first, last) runs of consecutive minutes."""
    ranges: list[tuple[int, int]] = []
    for t in open_times:
        if ranges and t == ranges[-1][1] + MINUTE_MS:
            ranges[-1] = (ranges[-1][0], t)
        elif not ranges or t > ranges[-1][1]:
            ranges.append((t, t))
    return ranges


class GapDetector:
    def __init__(self, threshold_s: float) -> None:
        if threshold_s < 60:
            raise ValueError("the gap threshold must be at least one minute")
        self.threshold_ms = int(threshold_s * 1000)
        self._last: dict[str, int] = {}
        # symbol -> reason, while the next closed candle is compared strictly.
        self._resuming: dict[str, str] = {}

    def seed(self, symbol: str, last_stored: int | None) -> None:
        """Start-up: the newest stored minute (``None``: nothing stored, no baseline)."""
        if last_stored is None:
            return
        if last_stored > self._last.get(symbol, -1):
            self._last[symbol] = last_stored
        self._resuming[symbol] = "startup"

    def mark_reconnect(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            if symbol in self._last:
                self._resuming.setdefault(symbol, "reconnect")

    def last(self, symbol: str) -> int | None:
        return self._last.get(symbol)

    def on_closed(self, symbol: str, open_time: int) -> tuple[Verdict, Gap | None]:
        last = self._last.get(symbol)
        if last is None:
            self._last[symbol] = open_time
            self._resuming.pop(symbol, None)
            return Verdict.NEW, None
        if open_time == last:
            return Verdict.DUPLICATE, None
        if open_time < last:
            return Verdict.LATE, None
        reason = self._resuming.pop(symbol, None)
        limit = MINUTE_MS if reason is not None else self.threshold_ms
        self._last[symbol] = open_time
        if open_time - last > limit:
            return Verdict.NEW, Gap(symbol, last + MINUTE_MS, open_time - MINUTE_MS, reason or "threshold")
        return Verdict.NEW, None
