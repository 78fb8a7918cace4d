"""Redundant feeders (issue 18): two ``python -m feeder`` processes stream the same symbols
into one database, the gap handler not running; one of them is SIGKILLed and restarted again
and again. Every closed candle is stored (once: one row per symbol and minute), no book tick
is stored twice (one writer per symbol: the book lock), and no ``gap_detected`` row appears,
since the other feeder had every minute the killed one missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from feeder.book_owner import BookOwnership
from feeder.core.accumulator import Accumulator
from feeder.core.events import gap_event
from feeder.core.gaps import Gap
from feeder.metrics import FeederMetrics
from feeder.writer import Sender
from quaint.binance.models import MINUTE_MS, CandleRow, ms_to_datetime
from quaint.store.book import copy_book_ticks
from quaint.store.candles import upsert_candles
from quaint.store.pool import prepare_connection
from tests.support.feeder import (
    SIM_START,
    T0,
    candle,
    connect,
    minute_of,
    quality_rows,
    stored_candles,
    tick,
    until_sim,
)
from tests.support.ha import HttpProcess, db_env, duplicate_ticks, healthy, newest_update_id, ticks_after
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.ha

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KILLS = 5


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_two_feeders_one_killed_again_and_again_store_everything_once(
    db_url: str, tmp_path: Path
) -> None:
    async with running_simulator(start=SIM_START, speed=60, symbols=SYMBOLS, history_days=1) as sim:
        env = db_env(
            db_url,
            SYMBOLS=",".join(SYMBOLS),
            BINANCE_WS_URL=sim.ws_url,
            BINANCE_REST_URL=sim.rest_url,
            BOOK_TICKER_MODE="all",
            BATCH_TIMEOUT_MS="100",
            WEBSOCKET_RECONNECT_INTERVAL_S="0.2",
            WEBSOCKET_RECONNECT_MAX_S="1",
            DB_RETRY_INTERVAL_S="0.2",
            DB_RETRY_MAX_S="1",
            BOOK_TAKEOVER_S="2",
        )
        a = HttpProcess("feeder-a", "feeder", env, tmp_path, "FEEDER_PORT")
        b = HttpProcess("feeder-b", "feeder", env, tmp_path, "FEEDER_PORT")
        first = minute_of(sim.clock.now_ms()) + MINUTE_MS  # the first minute both stream from its start
        try:
            await a.proc.start()
            await b.proc.start()
            for p in (a, b):
                await wait_for(functools.partial(healthy, p), 60, f"{p.proc.name} healthy", interval=0.1)
            for _ in range(KILLS):
                await until_sim(sim, sim.clock.now_ms() + 2 * MINUTE_MS)
                await a.proc.kill()
                # Written after the kill: by the survivor (the owner all along, or taking over).
                mark = {s: await newest_update_id(db_url, s) for s in SYMBOLS}
                for s in SYMBOLS:
                    after = functools.partial(ticks_after, db_url, s, mark[s])
                    await wait_for(after, 60, f"{s} book ticks after the kill")
                await until_sim(sim, sim.clock.now_ms() + 2 * MINUTE_MS)
                await a.proc.start()
                await wait_for(lambda: healthy(a), 60, "feeder-a healthy again", interval=0.1)
            end = minute_of(sim.clock.now_ms()) - MINUTE_MS
            await until_sim(sim, end + 2 * MINUTE_MS)

            async def all_stored() -> bool:
                for s in SYMBOLS:
                    if len(await stored_candles(db_url, s, first, end)) < len(sim.truth(s, first, end)):
                        return False
                return True

            await wait_for(all_stored, 60, "every closed candle of the window stored")
        finally:
            await a.proc.close()
            await b.proc.close()
    assert a.proc.unexpected == [] and b.proc.unexpected == []
    assert a.proc.kills == KILLS
    for s in SYMBOLS:
        assert await stored_candles(db_url, s, first, end) == sim.truth(s, first, end)
    assert await duplicate_ticks(db_url) == 0
    assert await quality_rows(db_url, "gap_detected") == []


def row(minute: int) -> CandleRow:
    return CandleRow.of(candle(minute))


async def test_a_gap_reports_only_the_minutes_nobody_stored(db_url: str) -> None:
    # Minutes 0..9 of a gap this feeder saw; "the other feeder" stored 0..2 and 5..9: only 3..4
    # are reported. A gap the other feeder filled entirely is not reported at all.
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2, init=prepare_connection)
    try:
        async with pool.acquire() as conn:
            await upsert_candles(conn, [row(m) for m in (0, 1, 2, 5, 6, 7, 8, 9, 20, 21)], "ws")
        acc = Accumulator(
            batch_size=10, linger_s=0.05, max_batch_rows=1000, max_buffered=1000, signal=asyncio.Event
        )
        sender = Sender(
            pool, acc, FeederMetrics.create(CollectorRegistry()), retry_delays=lambda: itertools.repeat(0.02)
        )
        task = asyncio.create_task(sender.run())
        acc.add_event(gap_event(Gap("BTCUSDT", T0, T0 + 9 * MINUTE_MS, "reconnect")), 0.0)
        acc.add_event(gap_event(Gap("BTCUSDT", T0 + 20 * MINUTE_MS, T0 + 21 * MINUTE_MS, "reconnect")), 0.0)
        acc.close()
        await asyncio.wait_for(task, 30)
    finally:
        await pool.close()
    rows = await quality_rows(db_url, "gap_detected")
    assert [(r["gap_start"], r["gap_end"], r["candles_missing"]) for r in rows] == [
        (ms_to_datetime(T0 + 3 * MINUTE_MS), ms_to_datetime(T0 + 4 * MINUTE_MS), 2)
    ]


async def test_a_takeover_writes_only_ticks_past_what_the_previous_owner_stored(db_url: str) -> None:
    # The previous owner stored updates 1..10 and is gone; this feeder's buffer holds 5..15
    # (received while the other still wrote them): once it owns the symbol, only 11..15 pass.
    conn = await connect(db_url)
    try:
        await copy_book_ticks(conn, [tick(u, T0 + u) for u in range(1, 11)])
    finally:
        await conn.close()
    books = BookOwnership({"dsn": db_url}, 2, lambda: itertools.repeat(0.05))
    task = asyncio.create_task(books.run())
    try:
        await wait_until(lambda: books.connected, 30, "the book lock connection")
        kept = await books.owned_ticks([tick(u, T0 + 100 + u) for u in range(5, 16)])
        assert [t.update_id for t in kept] == list(range(11, 16))
        assert [t.update_id for t in await books.owned_ticks([tick(16), tick(3, symbol="ETHUSDT")])] == [
            16,
            3,
        ]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
