"""Backfill one work unit: REST pages in, committed rows and outcome records out.

The DB is the checkpoint: every page is committed before the next is asked for, so
a crash loses at most the page in flight, and the next scan finds exactly what is
still missing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg
import structlog

from gap_handler import store
from gap_handler.core.exchange_clock import closed_prefix
from gap_handler.core.intervals import MinuteRange, closed_end
from gap_handler.core.planner import KlinesRequest, UnitBackfill, UnitOutcome
from gap_handler.fetcher import Fetcher
from gap_handler.metrics import GapMetrics
from gap_handler.timesync import TimeSync
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.service.retry import jittered_backoff
from quaint.store.candles import upsert_kline_columns
from quaint.store.errors import describe, retry_transient
from quaint.store.rollups import refresh_rollups

log = structlog.get_logger(__name__)
T = TypeVar("T")

# A probe answer proves the minutes before it absent only if that candle closed at
# least this long ago (the exchange's own live edge can lag a few seconds).
SETTLE_MS = MINUTE_MS

ProgressFn = Callable[[MinuteRange, int], None]
# A deadlock or serialization failure is a lost race: run the statement again soon. Ten
# tries span a few seconds; past that the unit ends and the hole waits for a later scan.
DB_RETRY_ATTEMPTS = 10


def default_db_retry_delays() -> Iterator[float]:
    return jittered_backoff(0.05, 2.0)


@dataclass(frozen=True, slots=True)
class UnitReport:
    outcome: UnitOutcome
    written: int  # rows new or changed in candles_1m
    new_outages: list[MinuteRange]
    duration_s: float


# A halt is seen at the first universe refresh after it began (UNIVERSE_REFRESH_S, at most an
# hour); an outage that ends within this of a halt's span is that halt's.
_HALT_SLACK_MS = 3_600_000


def halt_around(spans: list[tuple[int, int | None]], outage: MinuteRange) -> tuple[int, int | None] | None:
    for start, end in reversed(spans):
        if outage.end > start - _HALT_SLACK_MS and (end is None or outage.start <= end):
            return start, end
    return None


class Engine:
    def __init__(
        self,
        pool: asyncpg.Pool,
        fetcher: Fetcher,
        metrics: GapMetrics,
        *,
        batch_size: int,
        clock: TimeSync,
        db_retry_delays: Callable[[], Iterator[float]] = default_db_retry_delays,
    ) -> None:
        self.pool = pool
        self.fetcher = fetcher
        self.metrics = metrics
        self.batch_size = batch_size
        self.clock = clock
        self.now_ms = clock.now_ms
        self.db_retry_delays = db_retry_delays
        # Symbols seen halted (exchange ms, seen at each refresh; end None while halted), so that
        # the outage a halt leaves is recorded with its reason (gap_handler.universe).
        self.halts: dict[str, list[tuple[int, int | None]]] = {}

    def _now(self) -> datetime:
        return ms_to_datetime(self.now_ms())

    async def db(self, operation: str, symbol: str, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``op`` (one statement: safe to repeat) on a pooled connection; a transient
        error runs it again with backoff, counted by ``operation``. Any other database
        error propagates to the worker, which handles it by class."""

        async def once() -> T:
            async with self.pool.acquire() as conn:
                return await op(conn)

        def on_retry(exc: BaseException, delay: float) -> None:
            self.metrics.db_retries.labels(operation).inc()
            error = describe(exc)
            log.warning(
                "db_transient_error", symbol=symbol, operation=operation, error=error, retry_in_s=delay
            )

        return await retry_transient(
            once, self.db_retry_delays(), max_attempts=DB_RETRY_ATTEMPTS, on_retry=on_retry
        )

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
            known = set(machine.outcome.unrecoverable)
            written += await self._page(symbol, machine, req)
            for outage in machine.outcome.unrecoverable:
                if outage not in known:
                    await self._record_outage(symbol, outage)
                    outages.append(outage)
            if progress is not None:
                progress(unit, machine.minutes_done)
        duration = time.monotonic() - started
        outcome = machine.outcome
        if written:
            # Continuous aggregates (Community) only refresh the recent window themselves:
            # a repaired minute from last month reaches its 5m..1d rows here, not never.
            await self.db("refresh_rollups", symbol, lambda c: refresh_rollups(c, unit.start, unit.end))
        if outcome.complete:
            self.metrics.backfill_duration.observe(duration)
            if outcome.recovered:
                await self._record_backfilled(symbol, unit, written, outcome, duration)
        await self.db(
            "resolve_detected", symbol, lambda c: store.resolve_detected(c, symbol, unit.end, self._now())
        )
        bound.info(
            "backfill_unit_done",
            complete=outcome.complete,
            written=written,
            fetched=outcome.recovered,
            unrecoverable_minutes=outcome.unrecoverable_minutes_in_unit,
            duration_s=round(duration, 3),
        )
        return UnitReport(outcome, written, outages, duration)

    async def _page(self, symbol: str, machine: UnitBackfill, req: KlinesRequest) -> int:
        """One request: fetch, decide, store; returns rows new or changed. The page is
        dropped on return, before the next request is even sent (memory: see KlineColumns)."""
        await self.clock.ensure_synced()
        # Read before the request: the exchange had certainly reached this time when it
        # answered, so a row that had closed by then is final.
        asked_at = self.now_ms()
        rows = (await self.fetcher.klines(symbol, req)).rows
        final = closed_prefix(rows.open_times, rows.close_times, asked_at)
        if final < len(rows):
            self.metrics.rows_not_final.inc(symbol, len(rows) - final)
        if req.probe:
            first = rows.open_times[0] if final else None
            keep = machine.on_probe(first, closed_end(asked_at) - SETTLE_MS)
            to_store = rows.take([0]) if keep else None
        else:
            open_from = rows.open_times[final] if final < len(rows) else None
            kept = machine.on_page(rows.open_times[:final], open_from=open_from)
            if len(kept) == len(rows):
                to_store = rows  # the usual page: every row is kept, nothing is copied
            else:
                keep_set = set(kept)
                to_store = rows.take([i for i in range(final) if rows.open_times[i] in keep_set])
        if not to_store:
            return 0
        page = to_store
        n = await self.db("upsert_candles", symbol, lambda c: upsert_kline_columns(c, page, "rest"))
        self.metrics.candles_recovered.inc(symbol, n)
        return n

    async def _record_outage(self, symbol: str, outage: MinuteRange) -> None:
        details: dict[str, object] = {"detected_by": "gap_handler"}
        halt = halt_around(self.halts.get(symbol, []), outage)
        if halt is not None:
            details.update(reason="symbol_halted", halt_seen_from=halt[0], halt_seen_until=halt[1])
        added = await self.db(
            "record_unrecoverable",
            symbol,
            lambda c: store.record_unrecoverable(c, symbol, outage, self._now(), details),
        )
        if added:
            self.metrics.gaps_unrecoverable.inc(symbol)
            log.warning(
                "gap_unrecoverable",
                symbol=symbol,
                gap_start=outage.start,
                gap_end=outage.end,
                minutes=outage.minutes,
            )

    async def _record_backfilled(
        self, symbol: str, unit: MinuteRange, written: int, outcome: UnitOutcome, duration: float
    ) -> None:
        details = {
            "fetched": outcome.recovered,
            "unrecoverable_minutes": outcome.unrecoverable_minutes_in_unit,
            "duration_s": round(duration, 3),
        }
        await self.db(
            "record_backfilled",
            symbol,
            lambda c: store.record_backfilled(c, symbol, unit, written, self._now(), details),
        )
        self.metrics.gaps_backfilled.inc(symbol)
