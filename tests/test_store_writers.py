"""Writers against a real TimescaleDB: exact decimals, idempotent upserts, book ticks,
quality events, features, and the pool's start-up errors."""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import asyncpg
import pytest

from quaint.binance.models import BookTick, Candle
from quaint.service.settings import Settings, db_fields_from_url
from quaint.store.book import copy_book_ticks
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.features import FeatureRow, latest_features, upsert_features
from quaint.store.pool import DatabaseUnavailable, create_pool
from quaint.store.quality import log_event
from quaint.store.quality_event import QualityEvent
from tests.support.services import free_port

T0 = 1_763_985_600_000  # 2025-11-24T12:00:00Z, a minute boundary


def candle(minute: int = 0, close: str = "60719.27000000", symbol: str = "BTCUSDT") -> Candle:
    t = T0 + minute * 60_000
    return Candle(
        symbol=symbol,
        open_time=t,
        close_time=t + 59_999,
        open=Decimal("60685.22000000"),
        high=Decimal("99999999999.99999999"),
        low=Decimal("0.00000001"),
        close=Decimal(close),
        volume=Decimal("21.63272000"),
        quote_asset_volume=Decimal("1313200.01340410"),
        number_of_trades=617,
        taker_buy_base_asset_volume=Decimal("12.28492000"),
        taker_buy_quote_asset_volume=Decimal("745719.41022840"),
    )


async def test_decimal_round_trip_is_exact(db_pool: asyncpg.Pool) -> None:
    written = [candle(i, close=f"{60000 + i}.{i:08d}") for i in range(5)]
    async with db_pool.acquire() as conn:
        assert await upsert_candles(conn, written, "ws") == 5
        read = await fetch_candles(conn, "BTCUSDT", T0, T0 + 5 * 60_000)
    assert read == written
    # Trailing zeros survive too: NUMERIC keeps the exchange's scale.
    assert str(read[0].volume) == "21.63272000"


async def test_same_candle_twice_is_one_row(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        assert await upsert_candles(conn, [candle(0), candle(0), candle(1)], "ws") == 2
        assert await upsert_candles(conn, [candle(0), candle(1)], "rest") == 0  # identical: no-op
        assert await upsert_candles(conn, [candle(0, close="60000.00000000")], "rest") == 1  # correction
    rows = await db_pool.fetch("SELECT time, close, source FROM candles_1m ORDER BY time")
    assert [(r["close"], r["source"]) for r in rows] == [
        (Decimal("60000.00000000"), "rest"),
        (Decimal("60719.27000000"), "ws"),
    ]


async def test_invalid_candle_is_refused_by_the_schema(db_pool: asyncpg.Pool) -> None:
    bad = candle(0)
    bad = dataclasses.replace(bad, open_time=T0 + 1)
    async with db_pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await upsert_candles(conn, [bad], "ws")
        with pytest.raises(asyncpg.CheckViolationError):
            await upsert_candles(conn, [candle(0)], "binance")
        # The failed batch wrote nothing, and the connection is still usable.
        assert await upsert_candles(conn, [candle(2)], "ws") == 1


async def test_book_ticks_copy(db_pool: asyncpg.Pool) -> None:
    ticks = [
        BookTick(
            "BTCUSDT",
            800360982 + i,
            Decimal("0.33989000"),
            Decimal("1565.6"),
            Decimal("0.34012"),
            Decimal("703.00000000"),
            T0 + i,
        )
        for i in range(3)
    ]
    async with db_pool.acquire() as conn:
        assert await copy_book_ticks(conn, ticks) == 3
        assert await copy_book_ticks(conn, []) == 0
    rows = await db_pool.fetch("SELECT update_id, bid_price, ask_qty FROM book_ticker ORDER BY update_id")
    assert [r["update_id"] for r in rows] == [800360982, 800360983, 800360984]
    assert str(rows[0]["bid_price"]) == "0.33989000" and str(rows[0]["ask_qty"]) == "703.00000000"


async def test_quality_event_and_features(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        ident = await log_event(
            conn, QualityEvent("db_unavailable", details={"duration_s": 30.5}, source="feeder")
        )
        row = await conn.fetchrow(
            "SELECT event_type, details, resolved FROM data_quality_logs WHERE id=$1", ident
        )
        assert row is not None and dict(row) == {
            "event_type": "db_unavailable",
            "details": {"duration_s": 30.5},
            "resolved": False,
        }
        features = {"ret_1m": 0.001, "rsi_14": None, "warm": False}
        assert await upsert_features(conn, [FeatureRow("BTCUSDT", T0, features, "v1")]) == 1
        await upsert_features(conn, [FeatureRow("BTCUSDT", T0, {**features, "warm": True}, "v1")])
        latest = await latest_features(conn, "BTCUSDT", "v1")
    assert latest == FeatureRow("BTCUSDT", T0, {**features, "warm": True}, "v1")
    with pytest.raises(ValueError, match="unknown data quality event"):
        QualityEvent("oops")


async def test_unreachable_database_fails_clearly_after_the_deadline() -> None:
    settings = Settings(db_host="127.0.0.1", db_port=free_port(), db_connect_timeout_s=1.0)
    delays = iter([0.2] * 100)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"unreachable for 1s"):
        await create_pool(settings, delays=delays)
    assert time.monotonic() - started >= 1.0  # retried until the deadline ...
    assert 1 <= 100 - len(list(delays)) <= 5  # ... and then gave up: at most 1 s / 0.2 s waits


async def test_missing_database_fails_at_once(db_url: str) -> None:
    # The test server's host, port and user, with a database that does not exist.
    fields = {**db_fields_from_url(db_url), "db_name": "no_such_database"}
    settings = Settings(**fields, db_connect_timeout_s=30)
    delays = iter([0.2] * 100)
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        await create_pool(settings, delays=delays)
    assert len(list(delays)) == 100  # at once: not one retry
