"""Concurrent candle writers against a real TimescaleDB: overlapping upserts while a chunk is created.

The deadlock seen in the chaos test under load (gap handler crashed with 40P01): TimescaleDB creates a
chunk under a ShareUpdateExclusiveLock on the hypertable, held until commit. A statement that created a
chunk and then waits for a key another transaction holds, while that transaction needs to create a chunk
itself, is a cycle. Inserting in time order (then symbol) breaks it: a statement has inserted every
older row before it creates a chunk, so whoever it waits for cannot be waiting for its chunk lock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from quaint.binance.models import MINUTE_MS, Candle, datetime_to_ms, ms_to_datetime
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.errors import DbErrorClass, classify_db_error, retry_transient
from tests.support.waiting import wait_for

LOCK_ROW = "SELECT 1 FROM candles_1m WHERE symbol = 'X' AND time = $1 FOR UPDATE"


def candle(symbol: str, open_ms: int, close: str = "100.5") -> Candle:
    price = Decimal(close)
    return Candle(
        symbol=symbol,
        open_time=open_ms,
        close_time=open_ms + MINUTE_MS - 1,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal("1.25"),
        quote_asset_volume=Decimal("125.625"),
        number_of_trades=3,
        taker_buy_base_asset_volume=Decimal("0.5"),
        taker_buy_quote_asset_volume=Decimal("50.25"),
    )


async def chunk_boundary(conn: asyncpg.Connection) -> int:
    """The end (ms) of an existing candles_1m chunk whose next chunk does not exist yet."""
    await upsert_candles(conn, [candle("SEED", datetime_to_ms(datetime(2025, 6, 4, tzinfo=UTC)))], "rest")
    end = await conn.fetchval(
        "SELECT max(range_end) FROM timescaledb_information.chunks WHERE hypertable_name = 'candles_1m'"
    )
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'candles_1m' AND range_start >= $1",
            end,
        )
        == 0
    )
    return datetime_to_ms(end)


async def waiting_on_lock(observer: asyncpg.Connection, pid: int) -> bool:
    kind = await observer.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(kind == "Lock")


async def test_overlapping_upserts_across_a_new_chunk_do_not_deadlock(db_url: str) -> None:
    """Writer A holds a row of the old chunk (uncommitted); writer B's one statement covers a new
    chunk's minute of one symbol and that same row of another; then A writes into the new chunk.
    Symbol order would make B create the chunk, then wait for A, while A waits for B's chunk lock."""
    a, b, observer = [await asyncpg.connect(db_url) for _ in range(3)]
    try:
        # A deadlock is reported after deadlock_timeout (1 s): wait less long for nothing.
        await a.execute("SET deadlock_timeout = '100ms'")
        await b.execute("SET deadlock_timeout = '100ms'")
        boundary = await chunk_boundary(observer)
        old_minute, new_minute = boundary - MINUTE_MS, boundary
        tx = a.transaction()
        await tx.start()
        await upsert_candles(a, [candle("BBB", old_minute, "1.0")], "ws")
        b_pid = b.get_server_pid()
        # In symbol order "AAA" at the new minute comes first: the chunk would be created first.
        b_write = asyncio.create_task(
            upsert_candles(b, [candle("AAA", new_minute), candle("BBB", old_minute, "2.0")], "rest")
        )
        await wait_for(lambda: waiting_on_lock(observer, b_pid), 30, "B waiting for A's row")
        await upsert_candles(a, [candle("BBB", new_minute, "1.0")], "ws")
        await tx.commit()
        assert await b_write == 2  # B's old-minute row updated A's, its new-minute row inserted
        stored = {
            (c.symbol, c.open_time): c.close
            for sym in ("AAA", "BBB")
            for c in await fetch_candles(observer, sym, old_minute, new_minute + MINUTE_MS)
        }
        assert stored == {
            ("BBB", old_minute): Decimal("2.0"),
            ("AAA", new_minute): Decimal("100.5"),
            ("BBB", new_minute): Decimal("1.0"),
        }
    finally:
        for conn in (a, b, observer):
            await conn.close()


async def test_a_real_deadlock_is_classified_transient_and_retried(db_url: str) -> None:
    """Two transactions locking two rows in opposite orders: PostgreSQL kills one (40P01). The
    classification calls it transient, and retry_transient runs the victim's work again."""
    a, b = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        boundary = await chunk_boundary(a)
        first, second = boundary - 2 * MINUTE_MS, boundary - MINUTE_MS
        await upsert_candles(a, [candle("X", first), candle("X", second)], "rest")
        for conn in (a, b):
            await conn.execute("SET deadlock_timeout = '100ms'")
        both_hold_one = asyncio.Barrier(2)
        retries: list[DbErrorClass] = []

        async def cross(conn: asyncpg.Connection, mine: int, theirs: int, close: str) -> None:
            async with conn.transaction():
                await conn.execute(LOCK_ROW, ms_to_datetime(mine))
                await both_hold_one.wait()
                await upsert_candles(conn, [candle("X", theirs, close)], "rest")

        async def with_retry(conn: asyncpg.Connection, mine: int, theirs: int, close: str) -> None:
            attempts = iter([0.0] * 5)

            async def once() -> None:
                if retries:  # the retry runs alone: the barrier is not awaited again
                    async with conn.transaction():
                        await upsert_candles(conn, [candle("X", theirs, close)], "rest")
                else:
                    await cross(conn, mine, theirs, close)

            await retry_transient(
                once,
                attempts,
                max_attempts=5,
                on_retry=lambda exc, _d: retries.append(classify_db_error(exc)),
            )

        await asyncio.gather(with_retry(a, first, second, "7.0"), with_retry(b, second, first, "8.0"))
        assert retries == [DbErrorClass.TRANSIENT]  # exactly one victim, retried once
        closes = {c.open_time: c.close for c in await fetch_candles(a, "X", first, second + MINUTE_MS)}
        assert closes == {first: Decimal("8.0"), second: Decimal("7.0")}
    finally:
        await a.close()
        await b.close()
