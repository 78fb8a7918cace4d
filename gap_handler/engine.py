"""Backfill one work unit: REST pages in, committed rows and outcome records out.

The DB is the checkpoint: every page is committed before the next is asked for, so
a crash loses at most the page in flight, and the next scan finds exactly what is
still missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from gap_handler import store
from gap_handler.fetcher import Fetcher
from gap_handler.intervals import MinuteRange, closed_end
from gap_handler.metrics import GapMetrics
from gap_handler.planner import UnitBackfill, UnitOutcome
from quaint.binance.models import MINUTE_MS, Candle
from quaint.store.candles import upsert_candles

log = structlog.get_logger(__name__)

# A probe answer proves the minutes before it absent only if that candle closed at
# least this long ago (the exchange's own live edge can lag a few seconds).
SETTLE_MS = MINUTE_MS

ProgressFn = Callable[[MinuteRange, int], None]


@dataclass(frozen=True, slots=True)
class UnitReport:
    outcome: UnitOutcome
    written: int  # rows new or changed in candles_1m
    new_outages: list[MinuteRange]
    duration_s: float


class Engine:
    def __init__(
        self,
        pool: asyncpg.Pool,
        fetcher: Fetcher,
        metrics: GapMetrics,
        *,
        batch_size: int,
        now_ms: Callable[[], int],
    ) -> None:
        self.pool = pool
        self.fetcher = fetcher
        self.metrics = metrics
        self.batch_size = batch_size
        self.now_ms = now_ms

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    async def run_unit(
        self,
        symbol: str,
        unit: MinuteRange,
        *,
        stopping: Callable[[], bool] = lambda: False,
        progress: ProgressFn | None = None,
    ) -> UnitReport:
        """Backfill ``unit``; returns early (outcome pending) when ``stopping()`` turns true
        between pages. REST errors that are permanent propagate (ApiRejected), as do
        RetriesExhausted and lost database connections: the hole stays for a later scan."""
        started = time.monotonic()
        machine = UnitBackfill(unit, self.batch_size)
        written = 0
        outages: list[MinuteRange] = []
        bound = log.bind(symbol=symbol, unit_start=unit.start, unit_end=unit.end)
        while (req := machine.next_request()) is not None:
            if stopping():
                machine.outcome.pending = MinuteRange(machine.cursor, unit.end)
                bound.info("backfill_checkpointed", minutes_done=machine.minutes_done)
                break
            page = await self.fetcher.klines(symbol, req)
            known = set(machine.outcome.unrecoverable)
            if req.probe:
                first: Candle | None = page.candles[0] if page.candles else None
                settled = closed_end(self.now_ms()) - SETTLE_MS
                keep = machine.on_probe(first.open_time if first else None, settled)
                to_store = [first] if keep and first is not None else []
            else:
                kept = set(machine.on_page([c.open_time for c in page.candles]))
                to_store = [c for c in page.candles if c.open_time in kept]
            if to_store:
                async with self.pool.acquire() as conn:
                    n = await upsert_candles(conn, to_store, "rest")
                written += n
                self.metrics.candles_recovered.labels(symbol).inc(n)
            for outage in machine.outcome.unrecoverable:
                if outage not in known:
                    await self._record_outage(symbol, outage)
                    outages.append(outage)
            if progress is not None:
                progress(unit, machine.minutes_done)
        duration = time.monotonic() - started
        outcome = machine.outcome
        if outcome.complete:
            self.metrics.backfill_duration.observe(duration)
            if outcome.recovered:
                await self._record_backfilled(symbol, unit, written, outcome, duration)
        async with self.pool.acquire() as conn:
            await store.resolve_detected(conn, symbol, unit.end, self._now())
        bound.info(
            "backfill_unit_done", complete=outcome.complete, written=written, fetched=outcome.recovered,
            unrecoverable_minutes=outcome.unrecoverable_minutes_in_unit, duration_s=round(duration, 3),
        )  # fmt: skip
        return UnitReport(outcome, written, outages, duration)

    async def _record_outage(self, symbol: str, outage: MinuteRange) -> None:
        async with self.pool.acquire() as conn:
            added = await store.record_unrecoverable(
                conn, symbol, outage, self._now(), {"detected_by": "gap_handler"}
            )
        if added:
            self.metrics.gaps_unrecoverable.labels(symbol).inc()
            log.warning(
                "gap_unrecoverable", symbol=symbol, gap_start=outage.start, gap_end=outage.end,
                minutes=outage.minutes,
            )  # fmt: skip

    async def _record_backfilled(
        self, symbol: str, unit: MinuteRange, written: int, outcome: UnitOutcome, duration: float
    ) -> None:
        details = {
            "fetched": outcome.recovered,
            "unrecoverable_minutes": outcome.unrecoverable_minutes_in_unit,
            "duration_s": round(duration, 3),
        }
        async with self.pool.acquire() as conn:
            await store.record_backfilled(conn, symbol, unit, written, self._now(), details)
        self.metrics.gaps_backfilled.labels(symbol).inc()
