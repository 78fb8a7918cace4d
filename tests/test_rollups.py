"""The rollups (candles_5m ... candles_1d) against an independent aggregation in Python of
the candles_1m rows: random ranges, buckets cut by holes, and the same buckets after a
backfill repaired them (with refresh_rollups, as the gap handler calls it)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from quaint.binance.models import MINUTE_MS, Candle, datetime_to_ms
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.rollups import ROLLUPS, bucket_span, fetch_bars, refresh_rollups

SYMBOL = "BTCUSDT"
# Not on a day boundary, so the first and last 1d/4h buckets are partial.
START = datetime_to_ms(datetime(2026, 3, 1, 7, 13, tzinfo=UTC))
MINUTES = 3 * 24 * 60 + 211


def _candle(rng: random.Random, t: int) -> Candle:
    # Mixed scales: exactness of the sums is part of what is checked.
    o, c = (Decimal(rng.randint(1, 10**9)) / 10 ** rng.randint(0, 8) for _ in range(2))
    return Candle(
        symbol=SYMBOL,
        open_time=t,
        close_time=t + MINUTE_MS - 1,
        open=o,
        high=max(o, c) + Decimal(rng.randint(0, 999)) / 1000,
        low=min(o, c) - Decimal(rng.randint(0, 999)) / 10**9,
        close=c,
        volume=Decimal(rng.randint(0, 10**12)) / 10**8,
        quote_asset_volume=Decimal(rng.randint(0, 10**12)) / 10**6,
        number_of_trades=rng.randint(0, 5000),
        taker_buy_base_asset_volume=Decimal(rng.randint(0, 10**10)) / 10**8,
        taker_buy_quote_asset_volume=Decimal(rng.randint(0, 10**10)) / 10**7,
    )


def _expected(candles: list[Candle], width_ms: int, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """Independent aggregation: buckets of width_ms (epoch-aligned, as time_bucket's
    default origin is for these widths) with open time in [lo, hi]."""
    buckets: dict[int, list[Candle]] = {}
    for c in sorted(candles, key=lambda c: c.open_time):
        buckets.setdefault(c.open_time // width_ms * width_ms, []).append(c)
    out = []
    for t in sorted(buckets):
        if not lo <= t <= hi:
            continue
        cs = buckets[t]
        out.append(
            (
                t,
                t + width_ms - 1,
                cs[0].open,
                max(c.high for c in cs),
                min(c.low for c in cs),
                cs[-1].close,
                sum((c.volume for c in cs), Decimal(0)),
                sum((c.quote_asset_volume for c in cs), Decimal(0)),
                sum(c.number_of_trades for c in cs),
                sum((c.taker_buy_base_asset_volume for c in cs), Decimal(0)),
                sum((c.taker_buy_quote_asset_volume for c in cs), Decimal(0)),
                len(cs),
            )
        )
    return out


async def _check(conn: asyncpg.Connection, rng: random.Random, ranges: int) -> None:
    stored = await fetch_candles(
        conn, SYMBOL, START - 10 * 24 * 60 * MINUTE_MS, START + 10 * 24 * 60 * MINUTE_MS
    )
    for interval, (_, width) in ROLLUPS.items():
        w = int(width.total_seconds() * 1000)
        spans = [(START - 2 * 24 * 3600_000, START + 5 * 24 * 3600_000)]  # everything
        for _ in range(ranges):
            a = START + rng.randrange(-60, MINUTES + 60) * MINUTE_MS
            b = a + rng.randrange(0, MINUTES) * MINUTE_MS
            spans.append((a, b))
        for lo, hi in spans:
            bars = await fetch_bars(conn, SYMBOL, interval, lo, hi, 100_000)
            got = [
                (
                    b.open_time,
                    b.close_time,
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.quote_asset_volume,
                    b.number_of_trades,
                    b.taker_buy_base_asset_volume,
                    b.taker_buy_quote_asset_volume,
                    b.minutes,
                )
                for b in bars
            ]
            assert got == _expected(stored, w, lo, hi), (interval, lo, hi)


async def test_rollups_equal_an_independent_aggregation_before_and_after_a_repair(
    db_pool: asyncpg.Pool,
) -> None:
    rng = random.Random(20261204)
    every = [_candle(rng, START + i * MINUTE_MS) for i in range(MINUTES)]
    # Holes: a single minute, a run cutting a 5m and a 1h bucket, one that empties whole
    # hours and cuts a 4h and a 1d bucket.
    holes = {7, 8, 9} | set(range(100, 117)) | set(range(1500, 1500 + 390)) | {MINUTES - 1}
    async with db_pool.acquire() as conn:
        await upsert_candles(conn, [c for i, c in enumerate(every) if i not in holes], "ws")
        # Bars are what the relations say before any refresh (real-time on Community).
        await refresh_rollups(conn, START, START + MINUTES * MINUTE_MS)
        await _check(conn, rng, 6)
        # Open times from 07:13: the 08:00 bar (minutes 47..106, holes 100..106), the 09:00
        # bar (107..166, holes 107..116), then a complete one.
        hour = [b.minutes for b in await fetch_bars(conn, SYMBOL, "1h", START, START + 3 * 3600_000, 10)]
        assert hour == [60 - 7, 60 - 10, 60]

        # The backfill repairs the holes (and corrects one stored minute); the refresh covers
        # exactly the touched buckets, as the gap handler does after each unit.
        repaired = [c for i, c in enumerate(every) if i in holes]
        changed = _candle(rng, every[300].open_time)
        written = await upsert_candles(conn, [*repaired, changed], "rest")
        assert written == len(repaired) + 1
        for i in [*sorted(holes), 300]:
            await refresh_rollups(conn, every[i].open_time, every[i].open_time + MINUTE_MS)
        await _check(conn, rng, 6)
        day = await fetch_bars(conn, SYMBOL, "1d", START - 86_400_000, START + 5 * 86_400_000, 10)
        assert [b.minutes for b in day] == [1440 - 433, 1440, 1440, MINUTES - 1007 - 2880]
        assert sum(b.minutes for b in day) == MINUTES


def test_bucket_span_covers_whole_buckets() -> None:
    h = ROLLUPS["1h"][1]
    assert bucket_span(3600_000, 7200_000, h) == (3600_000, 7200_000)
    assert bucket_span(3600_001, 7200_001, h) == (3600_000, 10800_000)
    assert bucket_span(0, 1, ROLLUPS["1d"][1]) == (0, 86_400_000)
