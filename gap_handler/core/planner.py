"""Backfill of one work unit as a sans-I/O state machine.

The shell asks :meth:`UnitBackfill.next_request`, performs it, and feeds the open
times that came back to :meth:`on_page` / :meth:`on_probe`. The machine decides the
next page and classifies minutes:

* returned by REST -> recovered (the shell stores them);
* absent while REST returned a *later* minute -> the exchange does not have them:
  unrecoverable (proven, never asked for again);
* returned but not yet closed by the exchange's clock (the live edge): not stored, and
  everything from the first such minute on is left pending;
* absent at the end of a page: not yet proven. A probe (``startTime`` = first absent
  minute, no ``endTime``, ``limit=1``) returns the next minute the exchange has; the
  minutes before it are proven absent. A probe that returns nothing means the
  exchange has nothing after that minute yet (the live edge): left pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gap_handler.core.intervals import MinuteRange, merge
from quaint.binance.models import MINUTE_MS


@dataclass(frozen=True, slots=True)
class KlinesRequest:
    start: int  # startTime (ms)
    end: int | None  # endTime (ms, inclusive of that open time); None for a probe
    limit: int

    @property
    def probe(self) -> bool:
        return self.end is None


@dataclass(slots=True)
class UnitOutcome:
    unit: MinuteRange
    recovered: int = 0  # candles REST returned inside the unit
    unrecoverable: list[MinuteRange] = field(default_factory=list)  # may reach past the unit
    pending: MinuteRange | None = None  # could not be decided (live edge)

    @property
    def complete(self) -> bool:
        return self.pending is None

    @property
    def unrecoverable_minutes_in_unit(self) -> int:
        total = 0
        for r in self.unrecoverable:
            clipped = r.clip(self.unit.start, self.unit.end)
            total += clipped.minutes if clipped else 0
        return total


class UnitBackfill:
    def __init__(self, unit: MinuteRange, batch_size: int) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be within 1..1000")
        self.unit = unit
        self.batch_size = batch_size
        self.cursor = unit.start
        self.outcome = UnitOutcome(unit)
        self._probe_from: int | None = None
        self._page: KlinesRequest | None = None

    @property
    def done(self) -> bool:
        return self.cursor >= self.unit.end or self.outcome.pending is not None

    @property
    def minutes_done(self) -> int:
        """Minutes of the unit decided so far (stored, proven absent or skipped past)."""
        return (min(self.cursor, self.unit.end) - self.unit.start) // MINUTE_MS

    def next_request(self) -> KlinesRequest | None:
        if self.done:
            return None
        if self._probe_from is not None:
            return KlinesRequest(self._probe_from, None, 1)
        end = min(self.unit.end, self.cursor + self.batch_size * MINUTE_MS)
        self._page = KlinesRequest(self.cursor, end - 1, (end - self.cursor) // MINUTE_MS)
        return self._page

    def on_page(self, open_times: Sequence[int], *, open_from: int | None = None) -> list[int]:
        """Feed a page's open times; returns those inside the page (the ones to store).

        ``open_from``: the open time of the first row the exchange returned that had not
        closed when it answered (the live edge; ``open_times`` holds only rows before it).
        That minute proves nothing, so whatever the closed rows leave undecided stays
        pending, as after a probe that finds nothing."""
        page = self._page
        if page is None or page.end is None:
            raise RuntimeError("on_page without a page request")
        self._page = None
        page_end = page.end + 1
        kept = sorted(
            {
                t
                for t in open_times
                if page.start <= t < page_end and t % MINUTE_MS == 0 and (open_from is None or t < open_from)
            }
        )
        self.outcome.recovered += len(kept)
        absent: list[MinuteRange] = []
        expected = page.start
        for t in kept:
            if t > expected:
                absent.append(MinuteRange(expected, t))
            expected = t + MINUTE_MS
        self._add_unrecoverable(absent)
        if expected >= page_end:
            self.cursor = page_end
        elif open_from is not None:
            self.cursor = expected
            self.outcome.pending = MinuteRange(expected, self.unit.end)
        else:
            # The tail of the page is absent: not proven until something later exists.
            self.cursor = expected
            self._probe_from = expected
        return kept

    def on_probe(self, first_open: int | None, settled_end: int) -> bool:
        """Feed the probe's answer (open time of the next minute the exchange has, or
        None). Returns True when that candle lies inside the unit (the shell stores it).

        Only a minute before ``settled_end`` (closed a while ago) proves the minutes
        before it absent: a still-open minute at the live edge proves nothing yet."""
        start = self._probe_from
        if start is None:
            raise RuntimeError("on_probe without a probe request")
        self._probe_from = None
        if first_open is None or first_open >= settled_end:
            self.outcome.pending = MinuteRange(start, self.unit.end)
            return False
        first_open -= first_open % MINUTE_MS
        if first_open > start:
            self._add_unrecoverable([MinuteRange(start, first_open)])
        if first_open < start:  # an exchange answering out of range: do not loop on it
            first_open = start
        if first_open < self.unit.end:
            self.outcome.recovered += 1
            self.cursor = first_open + MINUTE_MS
            return True
        self.cursor = self.unit.end
        return False

    def _add_unrecoverable(self, ranges: list[MinuteRange]) -> None:
        if ranges:
            self.outcome.unrecoverable = merge([*self.outcome.unrecoverable, *ranges])
