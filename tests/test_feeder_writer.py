"""The sender against a real TimescaleDB: rejected rows isolated, outages buffered and
reported, gaps written once, backpressure. A wrapper pool fakes the outage (the real
server is stopped in test_feeder_process)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from feeder.core.accumulator import Accumulator
from feeder.core.events import gap_event
from feeder.core.gaps import Gap
from feeder.metrics import FeederMetrics
from feeder.writer import Sender, lanes_for
from quaint.binance.models import MINUTE_MS, CandleRow
from quaint.store.candles import upsert_candles
from quaint.store.pool import prepare_connection
from tests.support.feeder import T0, candle, quality_rows, stored_candles, tick
from tests.support.waiting import wait_for, wait_until


def row(minute: int) -> CandleRow:
    """A closed candle as the router hands it over (the exchange's strings)."""
    return CandleRow.of(candle(minute))


class FlakyPool:
    """Delegates to a real pool, or fails like an unreachable server while ``down``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.down = False
        self.refused = 0

    def acquire(self) -> Any:
        if self.down:
            self.refused += 1
            raise ConnectionRefusedError(111, "Connect call failed")
        return self.pool.acquire()

    async def release(self, conn: Any) -> None:
        await self.pool.release(conn)

    def get_max_size(self) -> int:
        size: int = self.pool.get_max_size()
        return size


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[FlakyPool]:
    real = await asyncpg.create_pool(db_url, min_size=1, max_size=2, init=prepare_connection)
    try:
        yield FlakyPool(real)
    finally:
        await real.close()


def make_sender(pool: FlakyPool, bound: int = 1000) -> tuple[Sender, Accumulator, CollectorRegistry]:
    acc = Accumulator(
        batch_size=10, linger_s=0.05, max_batch_rows=1000, max_buffered=bound, signal=asyncio.Event
    )
    registry = CollectorRegistry()
    metrics = FeederMetrics.create(registry)
    sender = Sender(
        cast(asyncpg.Pool, pool),
        acc,
        metrics,
        retry_delays=lambda: itertools.repeat(0.02),
        write_timeout_s=10,
    )
    return sender, acc, registry


async def drained(sender: Sender, task: asyncio.Task[None]) -> None:
    sender.acc.close()
    await asyncio.wait_for(task, 10)


async def test_a_rejected_row_is_isolated_and_the_rest_committed(pool: FlakyPool, db_url: str) -> None:
    sender, acc, registry = make_sender(pool)
    bad = replace(row(2), low="500")  # low above high: the database refuses it
    for i in range(5):
        acc.add_candle(bad if i == 2 else row(i), 0.0)
        acc.add_tick(tick(i), 0.0)
    await drained(sender, asyncio.create_task(sender.run()))
    got = await stored_candles(db_url, "BTCUSDT", T0, T0 + 5 * MINUTE_MS)
    assert [(c.open_time - T0) // MINUTE_MS for c in got] == [0, 1, 3, 4]
    assert registry.get_sample_value("feeder_rows_rejected_total", {"table": "candles_1m"}) == 1
    assert registry.get_sample_value("feeder_rows_written_total", {"table": "candles_1m"}) == 4
    assert await pool.pool.fetchval("SELECT count(*) FROM book_ticker") == 5
    assert sender.candles_written == 4 and sender.last_candle_written == T0 + 4 * MINUTE_MS


async def test_outage_buffers_sheds_ticks_first_and_reports_on_recovery(pool: FlakyPool, db_url: str) -> None:
    sender, acc, _ = make_sender(pool, bound=6)
    pool.down = True
    task = asyncio.create_task(sender.run())
    acc.add_candle(row(0), 0.0)
    await wait_until(lambda: not sender.connected, 30, "outage noticed")
    assert acc.shedding and not acc.over_limit  # readers keep reading
    for i in range(4):
        acc.add_tick(tick(i), 0.0)
    for i in range(1, 5):
        acc.add_candle(row(i), 0.0)  # evicts 3 ticks to make room
    acc.add_candle(row(5), 0.0)  # evicts the last tick
    acc.add_candle(row(6), 0.0)  # buffer is all candles: dropped (backfill recovers it)
    assert (acc.candle_depth, acc.tick_depth, acc.dropped_ticks, acc.dropped_candles) == (6, 0, 4, 1)
    pool.down = False
    await wait_until(lambda: sender.connected, 30, "recovery")
    await drained(sender, task)
    got = await stored_candles(db_url, "BTCUSDT", T0, T0 + 10 * MINUTE_MS)
    assert [(c.open_time - T0) // MINUTE_MS for c in got] == [0, 1, 2, 3, 4, 5]  # in order, nothing lost
    outage = await quality_rows(db_url, "db_unavailable")
    assert len(outage) == 1 and outage[0]["details"]["duration_s"] >= 0
    dropped = await quality_rows(db_url, "data_dropped")
    assert len(dropped) == 1 and dropped[0]["details"]["book_ticks"] == {"BTCUSDT": 4}
    gaps = await quality_rows(db_url, "gap_detected")
    assert [(g["candles_missing"], g["details"]["reason"]) for g in gaps] == [(1, "dropped")]
    assert pool.refused >= 1


async def test_the_same_gap_is_written_once(pool: FlakyPool, db_url: str) -> None:
    sender, acc, _ = make_sender(pool)
    task = asyncio.create_task(sender.run())
    gap = gap_event(Gap("BTCUSDT", T0, T0 + 2 * MINUTE_MS, "reconnect"))
    acc.add_event(gap, 0.0)
    await wait_until(lambda: len(acc) == 0, 30, "first write")
    acc.add_event(gap, 0.0)  # e.g. a retried batch whose first commit had landed
    acc.add_event(gap_event(Gap("ETHUSDT", T0, T0 + 2 * MINUTE_MS, "reconnect")), 0.0)
    await drained(sender, task)
    rows = await quality_rows(db_url, "gap_detected")
    assert [(r["symbol"], r["candles_missing"]) for r in rows] == [("BTCUSDT", 3), ("ETHUSDT", 3)]


async def test_readers_wait_while_the_buffer_is_full(pool: FlakyPool) -> None:
    sender, acc, _ = make_sender(pool, bound=3)
    for i in range(3):
        acc.add_tick(tick(i), 0.0)
    waiter = asyncio.ensure_future(acc.space_free.wait())  # where a reader parks
    await asyncio.sleep(0)  # let it park (not a synchronisation: checked just below)
    assert not waiter.done()
    task = asyncio.create_task(sender.run())
    await asyncio.wait_for(waiter, 5)
    await drained(sender, task)
    assert await pool.pool.fetchval("SELECT count(*) FROM book_ticker") == 3


async def test_a_lock_timeout_is_retried_soon_without_declaring_an_outage(db_url: str) -> None:
    """A transient error (55P03: the candle's key is held by an uncommitted insert elsewhere)
    is not an outage: the batch is written again after a short delay, the database stays
    "up", no db_unavailable row is written, and the candle lands once the lock is gone."""
    real = await asyncpg.create_pool(
        db_url, min_size=1, max_size=2, init=prepare_connection, server_settings={"lock_timeout": "100ms"}
    )
    holder = await asyncpg.connect(db_url)
    try:
        sender, acc, registry = make_sender(FlakyPool(real))
        sender.transient_delays = lambda: itertools.repeat(0.02)
        tx = holder.transaction()
        await tx.start()
        await upsert_candles(holder, [candle(0)], "rest")
        task = asyncio.create_task(sender.run())
        acc.add_candle(row(0), 0.0)

        def transient_failures() -> float:
            return registry.get_sample_value("feeder_db_write_errors_total", {"kind": "transient"}) or 0

        await wait_until(lambda: transient_failures() >= 2, 30, "two transient write failures")
        assert sender.connected and not acc.shedding
        await tx.rollback()
        await drained(sender, task)
        assert await stored_candles(db_url, "BTCUSDT", T0, T0 + MINUTE_MS) == [candle(0)]
        assert await real.fetchval("SELECT source FROM candles_1m") == "ws"
        assert await quality_rows(db_url, "db_unavailable") == []
        assert registry.get_sample_value("feeder_db_write_errors_total", {"kind": "connection_lost"}) is None
    finally:
        await holder.close()
        await real.close()


async def test_a_closed_candle_is_committed_while_a_book_tick_copy_is_blocked(db_url: str) -> None:
    """The express lane: the main lane's COPY waits on a lock held elsewhere, and a candle
    that arrives meanwhile commits on a connection of its own instead of queueing."""
    real = await asyncpg.create_pool(db_url, min_size=1, max_size=4, init=prepare_connection)
    holder = await asyncpg.connect(db_url)
    try:
        sender, acc, _ = make_sender(FlakyPool(real))
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE book_ticker IN ACCESS EXCLUSIVE MODE")
        task = asyncio.create_task(sender.run())
        for i in range(10):  # batch_size: the main lane takes them at once, and blocks
            acc.add_tick(tick(i), 0.0)

        async def copy_waiting() -> bool:
            return bool(
                await real.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'COPY%book_ticker%'"
                )
            )

        await wait_for(copy_waiting, 30, "the tick COPY blocked on the lock")
        acc.add_candle(row(0), 0.0)
        await wait_until(lambda: sender.candles_written == 1, 30, "the candle committed")
        assert await stored_candles(db_url, "BTCUSDT", T0, T0 + MINUTE_MS) == [candle(0)]
        assert await copy_waiting()  # ... while the COPY still waits
        await tx.rollback()
        await drained(sender, task)
        assert await real.fetchval("SELECT count(*) FROM book_ticker") == 10
    finally:
        await holder.close()
        await real.close()


def test_express_lanes_never_take_the_connections_the_main_lane_needs() -> None:
    # Each express lane keeps a connection: a pool too small for them gets fewer, never a
    # main lane waiting for ever on a pool the lanes hold.
    assert [lanes_for(size) for size in (1, 2, 3, 4, 5, 100)] == [0, 0, 1, 2, 2, 2]
    assert lanes_for(10, wanted=0) == 0
