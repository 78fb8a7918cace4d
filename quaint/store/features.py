"""``feature_cache`` rows: one JSON document of features per (symbol, minute, version)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from quaint.binance.models import datetime_to_ms, ms_to_datetime


@dataclass(frozen=True, slots=True)
class FeatureRow:
    symbol: str
    time: int  # the minute the features describe (open time, ms)
    features: dict[str, Any]
    version: str


UPSERT_FEATURES = """
INSERT INTO feature_cache (symbol, time, features_json, version)
VALUES ($1, $2, $3, $4)
ON CONFLICT (symbol, time, version) DO UPDATE
SET features_json = EXCLUDED.features_json, created_at = now()
"""


async def upsert_features(conn: asyncpg.Connection, rows: Iterable[FeatureRow]) -> int:
    args = [(r.symbol, ms_to_datetime(r.time), r.features, r.version) for r in rows]
    if args:
        await conn.executemany(UPSERT_FEATURES, args)
    return len(args)


# Minutes with a candle but no features of this version, or whose row is stale (its window
# was cut by a missing minute that is now stored): see :mod:`feeder.feature_task`.
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


async def minutes_without_features(
    conn: asyncpg.Connection,
    symbols: list[str],
    version: str,
    *,
    horizon_minutes: int,
    full_window: int,
    limit: int,
) -> list[tuple[str, int]]:
    """(symbol, open time ms) of the minutes within ``horizon_minutes`` of each symbol's
    newest candle that have no ``version`` row, or a row whose window (shorter than
    ``full_window``) a now stored minute would lengthen; oldest first per symbol."""
    rows = await conn.fetch(PENDING_MINUTES, symbols, version, horizon_minutes, limit, full_window)
    return [(row["symbol"], datetime_to_ms(row["time"])) for row in rows]


async def latest_features(conn: asyncpg.Connection, symbol: str, version: str) -> FeatureRow | None:
    row = await conn.fetchrow(
        "SELECT time, features_json FROM feature_cache WHERE symbol = $1 AND version = $2"
        " ORDER BY time DESC LIMIT 1",
        symbol,
        version,
    )
    if row is None:
        return None
    return FeatureRow(symbol, datetime_to_ms(row["time"]), row["features_json"], version)
