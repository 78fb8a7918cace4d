"""Feature I/O shell: every ``FEATURE_CACHE_INTERVAL_S``, compute the features of
every minute that has a stored candle but no ``feature_cache`` row for this version.

The database is the source of truth for candles: the pass asks which minutes (within
``feature_horizon_minutes`` of each symbol's newest candle, in exchange time) lack
features, reads each symbol's window once, and upserts all rows in one statement.
Looking for missing rows, rather than remembering what was written, also covers a
restart and minutes the gap handler backfilled. Book state comes from the router's
snapshot taken when the minute's closed candle arrived, else from ``book_ticker``
(the last tick received during that minute).

A row is also recomputed when its window has become longer: a missing minute cuts a
window (``window_minutes`` < 120), and once the gap handler stores that minute, every
row whose window it cut would come out differently. Such a row is *stale* exactly when
the minute just before its window (``time - window_minutes``) now has a candle; a
minute the exchange never had stays missing, so nothing is recomputed twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

import asyncpg
import structlog

from feeder.core.features import LOOKBACK_MINUTES, compute_features
from feeder.core.router import FrameRouter
from feeder.metrics import FeederMetrics
from quaint.binance.models import MINUTE_MS, BookTick
from quaint.service.logging import LogThrottle
from quaint.store.book import last_ticks_of_minutes
from quaint.store.candles import fetch_candles
from quaint.store.errors import DB_ERRORS, DbErrorClass, classify_db_error, describe
from quaint.store.features import FeatureRow, minutes_without_features, upsert_features

log = structlog.get_logger(__name__)


class FeatureTask:
    def __init__(
        self,
        pool: asyncpg.Pool,
        symbols: list[str],
        version: str,
        interval_s: float,
        horizon_minutes: int,
        router: FrameRouter,
        metrics: FeederMetrics,
        *,
        max_rows_per_pass: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.symbols = symbols
        self.version = version
        self.interval_s = interval_s
        self.horizon_minutes = horizon_minutes
        self.router = router
        self.metrics = metrics
        self.max_rows = max_rows_per_pass
        self.clock = clock
        self._throttle = LogThrottle(interval_s=60.0, burst=2)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                # Down (the writer reports the outage), a lost race or refusing: the pass
                # is retried on the next tick (it is idempotent); only a server-side error
                # or refused rows are worth an error line.
                kind = classify_db_error(exc)
                allowed, suppressed = self._throttle.allow(kind, self.clock())
                if allowed:
                    serious = kind in (DbErrorClass.SERVER, DbErrorClass.REJECTED)
                    (log.error if serious else log.warning)(
                        "features_skipped", error=describe(exc), kind=str(kind), suppressed=suppressed
                    )

    async def run_once(self) -> int:
        started = self.clock()
        written = 0
        async with self.pool.acquire() as conn:
            pending = await minutes_without_features(
                conn,
                self.symbols,
                self.version,
                horizon_minutes=self.horizon_minutes,
                full_window=LOOKBACK_MINUTES,
                limit=self.max_rows,
            )
            targets: dict[str, list[int]] = defaultdict(list)
            for symbol, minute in pending:
                targets[symbol].append(minute)
            rows: list[FeatureRow] = []
            for symbol, times in targets.items():
                rows.extend(await self._symbol_rows(conn, symbol, times))
            if rows:
                written = await upsert_features(conn, rows)
        self.metrics.features_written.inc(written)
        self.metrics.feature_seconds.observe(self.clock() - started)
        return written

    async def _symbol_rows(self, conn: asyncpg.Connection, symbol: str, times: list[int]) -> list[FeatureRow]:
        first, last = times[0], times[-1]
        start = first - (LOOKBACK_MINUTES - 1) * MINUTE_MS
        candles = await fetch_candles(conn, symbol, start, last + MINUTE_MS)
        books: dict[int, BookTick | None] = {t: self.router.book_at_close(symbol, t) for t in times}
        missing = [t for t, b in books.items() if b is None]
        if missing:
            books.update(await last_ticks_of_minutes(conn, symbol, missing))
        out = []
        for t in times:
            features = compute_features(candles, t, books.get(t))
            if features is not None:
                out.append(FeatureRow(symbol=symbol, time=t, features=features, version=self.version))
            # A minute's features take a fraction of a millisecond; a backlog (a start, a filled
            # hole: hundreds of minutes) computed in one go held the event loop for tens of ms,
            # and the closed candles arriving meanwhile waited for it (bench latency: 53 ms).
            await asyncio.sleep(0)
        return out
