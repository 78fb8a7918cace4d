"""Progress of a requested range backfill (admin API, CLI) — sans-I/O.

A :class:`RangeTask` is the range someone asked for; the holes found in it are cut
into work units, and each unit reports the minutes it has decided. The caller passes
monotonic time for rate and ETA. A :class:`RequestRecord` is the same request as
stored in ``backfill_requests`` (the API's requests survive a restart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gap_handler.core.intervals import MinuteRange
from quaint.binance.models import ms_to_datetime

# queued: accepted, waiting to be (re)started; scanning: its holes are being looked
# up; running: units queued or in flight. The other three are final.
BACKFILL_STATES = ("queued", "scanning", "running", "complete", "incomplete", "failed")
FINISHED_STATES = frozenset({"complete", "incomplete", "failed"})


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One row of ``backfill_requests``: what outlives the process that ran it."""

    id: str
    symbol: str
    range: MinuteRange
    state: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    minutes_total: int
    minutes_done: int
    candles_recovered: int
    unrecoverable_minutes: int
    error: str | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def as_json(self, rate: float | None = None, eta_s: float | None = None) -> dict[str, Any]:
        """The API's shape of a request. A live task passes its rate and ETA; from the
        table the rate is the average from the first start to the end (a restart's
        downtime included), and the ETA is unknown while not running here."""
        if rate is None:
            rate = 0.0
            if self.finished_at is not None and self.started_at is not None:
                elapsed = (self.finished_at - self.started_at).total_seconds()
                rate = self.minutes_done / elapsed if elapsed > 0 else 0.0
            eta_s = 0.0 if self.finished else None
        return {
            "id": self.id,
            "symbol": self.symbol,
            "start": ms_to_datetime(self.range.start).isoformat(),
            "end": ms_to_datetime(self.range.end).isoformat(),
            "state": self.state,
            "minutes_total": self.minutes_total,
            "minutes_done": self.minutes_done,
            "candles_recovered": self.candles_recovered,
            "unrecoverable_minutes": self.unrecoverable_minutes,
            "rate_minutes_per_s": round(rate, 1),
            "eta_s": None if eta_s is None else round(eta_s, 1),
            "created_at": self.requested_at.isoformat(),
            "error": self.error,
        }


@dataclass(slots=True)
class RangeTask:
    id: str
    symbol: str
    range: MinuteRange
    created_mono: float  # when this process took the task up
    created_at: datetime  # when it was requested
    state: str = "scanning"  # see BACKFILL_STATES
    total_minutes: int = 0  # missing when the task first started
    recovered: int = 0
    unrecoverable_minutes: int = 0
    error: str | None = None
    finished_mono: float | None = None
    # Wall time at created_mono, when that is not created_at (a task resumed after a restart).
    taken_at: datetime | None = None
    _units: dict[MinuteRange, int] = field(default_factory=dict)  # unit -> minutes decided
    _open_units: int = 0
    _pending: bool = False
    _base_done: int = 0  # minutes decided before this process took the task up

    def start(self, units: list[MinuteRange]) -> None:
        self._units = dict.fromkeys(units, 0)
        self._open_units = len(units)
        self.total_minutes = sum(u.minutes for u in units)
        self.state = "running" if units else "complete"
        if not units:
            self.finished_mono = self.created_mono

    def resume(self, units: list[MinuteRange], *, total: int, recovered: int, unrecoverable: int) -> None:
        """Take up a request an earlier process started: ``units`` cover what is missing
        now, ``total``/``recovered``/``unrecoverable`` are what it had stored.

        The total stays the minutes missing at the first start (it grows only if more
        are missing now, e.g. rows deleted since), and whatever is no longer missing
        counts as done. Minutes filled but not yet counted (a unit cut short by a crash
        commits pages before it reports) count as recovered, so that
        done == recovered + unrecoverable still holds for a range nothing else fills."""
        self.start(units)
        remaining = self.total_minutes
        self.total_minutes = max(total, remaining)
        self._base_done = self.total_minutes - remaining
        self.unrecoverable_minutes = unrecoverable
        self.recovered = max(recovered, self._base_done - unrecoverable)

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

    def unit_stopped(self, unit: MinuteRange, *, recovered: int, unrecoverable: int) -> None:
        """The process is stopping and ``unit`` ended early: count what it did, but keep
        the task open (it is resumed at the next start, not reported incomplete)."""
        if unit in self._units:
            self.recovered += recovered
            self.unrecoverable_minutes += unrecoverable

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
        return self._base_done + sum(self._units.values())

    def rate_per_s(self, now: float) -> float:
        elapsed = (self.finished_mono or now) - self.created_mono
        return (self.minutes_done - self._base_done) / elapsed if elapsed > 0 else 0.0

    def eta_s(self, now: float) -> float | None:
        if self.done:
            return 0.0
        rate = self.rate_per_s(now)
        return (self.total_minutes - self.minutes_done) / rate if rate > 0 else None

    def record(self) -> RequestRecord:
        """What to store. A task starts (its range is scanned) before it is acknowledged,
        so ``started_at`` is the request's time; a resumed task keeps its stored one."""
        taken = self.taken_at or self.created_at
        finished = None
        if self.finished_mono is not None:
            finished = taken + timedelta(seconds=max(0.0, self.finished_mono - self.created_mono))
        return RequestRecord(
            id=self.id,
            symbol=self.symbol,
            range=self.range,
            state=self.state,
            requested_at=self.created_at,
            started_at=taken,
            finished_at=finished,
            minutes_total=self.total_minutes,
            minutes_done=self.minutes_done,
            candles_recovered=self.recovered,
            unrecoverable_minutes=self.unrecoverable_minutes,
            error=self.error,
        )

    def as_json(self, now: float) -> dict[str, Any]:
        return self.record().as_json(rate=self.rate_per_s(now), eta_s=self.eta_s(now))
