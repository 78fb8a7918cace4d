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
from datetime import datetime

import asyncpg
import structlog

from feeder.core.features import LOOKBACK_MINUTES, compute_features
from feeder.core.router import FrameRouter
from feeder.metrics import FeederMetrics
from quaint.binance.models import MINUTE_MS, BookTick, datetime_to_ms, ms_to_datetime
from quaint.service.logging import LogThrottle
from quaint.store.candles import fetch_candles
from quaint.store.errors import DB_ERRORS, DbErrorClass, classify_db_error, describe
from quaint.store.features import FeatureRow, upsert_features

log = structlog.get_logger(__name__)

PENDING_MINUTES = """
WITH newest AS (
    SELECT s.symbol, (SELECT max(time) FROM candles_1m c WHERE c.symbol = s.symbol) AS t
    FROM unnest($1::text[]) AS s(symbol)
)
SELECT c.symbol, c.time
FROM newest n
JOIN candles_1m c ON c.symbol = n.symbol AND c.time > n.t - make_interval(mins => $3)
LEFT JOIN LATERAL (
    SELECT (f.features_json ->> 'window_minutes')::int AS window_minutes FROM feature_cache f
    WHERE f.symbol = c.symbol AND f.time = c.time AND f.version = $2
) f ON true
WHERE f.window_minutes IS NULL  -- no row yet
   OR (f.window_minutes < $5 AND EXISTS (  -- stale: the minute before its window is now stored
        SELECT 1 FROM candles_1m p
        WHERE p.symbol = c.symbol AND p.time = c.time - make_interval(mins => f.window_minutes)))
ORDER BY c.symbol, c.time
LIMIT $4
"""

# The last tick received during each target minute [t, t + 60 s): receipt time never
# after the candle's close, so no look-ahead.
BOOK_AT = """
SELECT t.target, b.update_id, b.bid_price, b.bid_qty, b.ask_price, b.ask_qty, b.time
FROM unnest($2::timestamptz[]) AS t(target)
JOIN LATERAL (
    SELECT update_id, bid_price, bid_qty, ask_price, ask_qty, time FROM book_ticker
    WHERE symbol = $1 AND time >= t.target AND time < t.target + interval '1 minute'
    ORDER BY time DESC LIMIT 1
) b ON true
"""


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
            pending = await conn.fetch(
                PENDING_MINUTES,
                self.symbols,
                self.version,
                self.horizon_minutes,
                self.max_rows,
                LOOKBACK_MINUTES,
            )
            targets: dict[str, list[int]] = defaultdict(list)
            for row in pending:
                targets[row["symbol"]].append(datetime_to_ms(row["time"]))
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
            books.update(await self._books_from_db(conn, symbol, missing))
        out = []
        for t in times:
            features = compute_features(candles, t, books.get(t))
            if features is not None:
                out.append(FeatureRow(symbol=symbol, time=t, features=features, version=self.version))
        return out

    async def _books_from_db(
        self, conn: asyncpg.Connection, symbol: str, times: list[int]
    ) -> dict[int, BookTick]:
        rows = await conn.fetch(BOOK_AT, symbol, [ms_to_datetime(t) for t in times])
        out = {}
        for r in rows:
            received: datetime = r["time"]
            out[datetime_to_ms(r["target"])] = BookTick(
                symbol=symbol,
                update_id=r["update_id"],
                bid_price=r["bid_price"],
                bid_qty=r["bid_qty"],
                ask_price=r["ask_price"],
                ask_qty=r["ask_qty"],
                received_at=datetime_to_ms(received),
            )
        return out
