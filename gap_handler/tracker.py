"""Progress of a requested range backfill (admin API, CLI) — sans-I/O.

A :class:`RangeTask` is the range someone asked for; the holes found in it are cut
into work units, and each unit reports the minutes it has decided. The caller passes
monotonic time for rate and ETA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gap_handler.intervals import MinuteRange
from quaint.binance.models import ms_to_datetime


@dataclass(slots=True)
class RangeTask:
    id: str
    symbol: str
    range: MinuteRange
    created_mono: float
    created_at: datetime
    state: str = "scanning"  # scanning | running | complete | incomplete | failed
    total_minutes: int = 0  # missing when the task started
    recovered: int = 0
    unrecoverable_minutes: int = 0
    error: str | None = None
    finished_mono: float | None = None
    _units: dict[MinuteRange, int] = field(default_factory=dict)  # unit -> minutes decided
    _open_units: int = 0
    _pending: bool = False

    def start(self, units: list[MinuteRange]) -> None:
        self._units = dict.fromkeys(units, 0)
        self._open_units = len(units)
        self.total_minutes = sum(u.minutes for u in units)
        self.state = "running" if units else "complete"

    def progress(self, unit: MinuteRange, minutes_done: int) -> None:
        if unit in self._units:
            self._units[unit] = min(unit.minutes, max(self._units[unit], minutes_done))

    def unit_finished(
        self, unit: MinuteRange, *, recovered: int, unrecoverable: int, complete: bool, now: float
    ) -> None:
        if unit not in self._units:
            return
        self._units[unit] = unit.minutes if complete else self._units[unit]
        self.recovered += recovered
        self.unrecoverable_minutes += unrecoverable
        self._pending = self._pending or not complete
        self._open_units -= 1
        if self._open_units <= 0:
            self.finish(now, "incomplete" if self._pending else "complete")

    def fail(self, message: str, now: float) -> None:
        self.error = message
        self.finish(now, "failed")

    def finish(self, now: float, state: str) -> None:
        if self.finished_mono is None:
            self.state = state
            self.finished_mono = now

    @property
    def done(self) -> bool:
        return self.finished_mono is not None

    @property
    def minutes_done(self) -> int:
        return sum(self._units.values())

    def rate_per_s(self, now: float) -> float:
        elapsed = (self.finished_mono or now) - self.created_mono
        return self.minutes_done / elapsed if elapsed > 0 else 0.0

    def eta_s(self, now: float) -> float | None:
        if self.done:
            return 0.0
        rate = self.rate_per_s(now)
        return (self.total_minutes - self.minutes_done) / rate if rate > 0 else None

    def as_json(self, now: float) -> dict[str, Any]:
        eta = self.eta_s(now)
        return {
            "id": self.id,
            "symbol": self.symbol,
            "start": ms_to_datetime(self.range.start).isoformat(),
            "end": ms_to_datetime(self.range.end).isoformat(),
            "state": self.state,
            "minutes_total": self.total_minutes,
            "minutes_done": self.minutes_done,
            "candles_recovered": self.recovered,
            "unrecoverable_minutes": self.unrecoverable_minutes,
            "rate_minutes_per_s": round(self.rate_per_s(now), 1),
            "eta_s": None if eta is None else round(eta, 1),
            "created_at": self.created_at.isoformat(),
            "error": self.error,
        }
