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
