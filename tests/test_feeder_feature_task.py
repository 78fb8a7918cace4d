"""The feature pass against a real database: which minutes it (re)computes.

A missing minute cuts the window of the features after it; once the gap handler
stores that minute, those rows must be recomputed (else a model sees different
features for the same minute depending on when they were computed), and nothing
else may be recomputed again and again.
"""

from __future__ import annotations

import asyncio

import asyncpg
from prometheus_client import CollectorRegistry

from feeder.core.accumulator import Accumulator
from feeder.core.features import LOOKBACK_MINUTES, compute_features
from feeder.core.gaps import GapDetector
from feeder.core.router import FrameRouter
from feeder.core.watchdog import StaleWatchdog
from feeder.feature_task import FeatureTask
from feeder.metrics import FeederMetrics
from quaint.binance.models import MINUTE_MS, Candle, datetime_to_ms
from quaint.store.candles import upsert_candles
from tests.support.feeder import T0, candle

SYMBOL = "BTCUSDT"
HOLE = 150


def _task(pool: asyncpg.Pool) -> FeatureTask:
    acc = Accumulator(
        batch_size=10, linger_s=1.0, max_batch_rows=100, max_buffered=1000, signal=asyncio.Event
    )
    router = FrameRouter([SYMBOL], "all", acc, GapDetector(70), StaleWatchdog(60))
    return FeatureTask(pool, [SYMBOL], "v1", 60.0, 180, router, FeederMetrics.create(CollectorRegistry()))


def _series(minutes: range) -> list[Candle]:
    # A wiggly price so every indicator depends on the whole window.
    return [
        candle(m, 100 + (m * 7919) % 13 - 6 + m / 10, volume=1 + m % 5, trades=5 + m % 7) for m in minutes
    ]


async def _stored(pool: asyncpg.Pool) -> dict[int, dict[str, object]]:
    rows = await pool.fetch("SELECT time, features_json FROM feature_cache WHERE symbol = $1", SYMBOL)
    return {(datetime_to_ms(r["time"]) - T0) // MINUTE_MS: r["features_json"] for r in rows}


async def test_filling_a_hole_recomputes_exactly_the_rows_whose_window_it_cut(db_pool: asyncpg.Pool) -> None:
    everything = _series(range(200))
    async with db_pool.acquire() as conn:
        await upsert_candles(conn, [c for c in everything if c.open_time != T0 + HOLE * MINUTE_MS], "ws")
    task = _task(db_pool)

    first = await task.run_once()
    assert first == 179  # minutes 20..199 (the 180-minute horizon) minus the hole
    before = await _stored(db_pool)
    assert before[HOLE + 20]["window_minutes"] == 20  # cut by the hole
    assert before[HOLE - 1]["window_minutes"] == LOOKBACK_MINUTES
    assert await task.run_once() == 0  # a hole still open recomputes nothing

    async with db_pool.acquire() as conn:  # the gap handler fills the hole
        await upsert_candles(conn, [everything[HOLE]], "rest")
    assert await task.run_once() == 200 - HOLE  # the hole's own row and the 49 after it
    after = await _stored(db_pool)
    for minute in range(20, 200):
        t = T0 + minute * MINUTE_MS
        assert after[minute] == compute_features(everything, t, None), minute
    assert after[HOLE + 20]["window_minutes"] == LOOKBACK_MINUTES
    assert after[HOLE - 1] == before[HOLE - 1]
    assert await task.run_once() == 0  # and nothing churns afterwards
