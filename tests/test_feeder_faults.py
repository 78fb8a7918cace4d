"""Stream faults against the simulator and a real TimescaleDB: each lost stretch of
minutes gives exactly one correct ``gap_detected`` row per symbol and one NOTIFY.

"Correct" is checked against the exchange: the row's bounds are exactly the minutes
the simulator has (``truth``) but the database does not. Timing: see test_feeder_stream.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from quaint.binance.models import MINUTE_MS, datetime_to_ms
from tests.support.feeder import (
    SIM_START,
    gap_notifications,
    metric_value,
    minute_of,
    quality_rows,
    sim_and_feeder,
    stored_candles,
    until_sim,
    wait_stored,
)
from tests.support.simulator import SimHandle
from tests.support.waiting import wait_until

FIRST = minute_of(SIM_START)
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


async def missing_minutes(db_url: str, s: SimHandle, symbol: str, start: int, end: int) -> list[int]:
    have = {c.open_time for c in await stored_candles(db_url, symbol, start, end)}
    return [c.open_time for c in s.truth(symbol, start, end) if c.open_time not in have]


async def assert_one_gap_per_symbol(
    db_url: str, s: SimHandle, notes: list[dict[str, Any]], end: int
) -> list[int]:
    """Every symbol lost the same contiguous minutes; one row and one NOTIFY each."""
    # A batch commits its candles before its events (feeder.writer): stored candles do not
    # mean their gap rows are committed yet.
    await wait_until(lambda: len(notes) >= len(SYMBOLS), 30, "NOTIFY quaint_gaps")
    rows = await quality_rows(db_url, "gap_detected")
    assert [r["symbol"] for r in rows] == sorted(SYMBOLS), rows
    lost: list[int] = []
    for row in rows:
        missing = await missing_minutes(db_url, s, row["symbol"], FIRST - 60 * MINUTE_MS, end)
        assert missing, "the fault lost no minute: the test proves nothing"
        assert missing == list(range(missing[0], missing[-1] + MINUTE_MS, MINUTE_MS))  # contiguous
        assert datetime_to_ms(row["gap_start"]) == missing[0]
        assert datetime_to_ms(row["gap_end"]) == missing[-1]
        assert row["candles_missing"] == len(missing)
        assert row["source"] == "feeder" and row["resolved"] is False
        lost = missing
    await wait_until(lambda: len(notes) >= len(SYMBOLS), 30, "NOTIFY quaint_gaps")
    assert sorted(n["symbol"] for n in notes) == sorted(SYMBOLS)
    return lost


@pytest.mark.slow
async def test_connection_drop_reconnects_within_the_backoff_and_reports_the_gap(db_url: str) -> None:
    # A deterministic policy: 1.5 wall s = 90 simulated s, so at least one final is lost.
    delay = 1.5
    drawn: list[float] = []

    def policy() -> Iterator[float]:
        for value in itertools.repeat(delay):
            drawn.append(value)
            yield value

    async with (
        gap_notifications(db_url) as notes,
        sim_and_feeder(db_url, SYMBOLS, feeder={"reconnect_delays": policy}) as (s, f),
    ):
        await until_sim(s, FIRST + 2 * MINUTE_MS + 2_000)
        slot = f.feeder.slots[0]
        opened = slot.state.connections_opened
        dropped_at = time.monotonic()
        drawn.clear()
        assert s.faults.drop_connections("abort") == 1
        await wait_until(lambda: slot.state.connections_opened > opened, 30, "reconnect")
        took = time.monotonic() - dropped_at
        _, health = await f.health()
        end = minute_of(s.clock.now_ms()) + 2 * MINUTE_MS
        await until_sim(s, end + 2_000)
        await wait_stored(db_url, s, SYMBOLS, end - MINUTE_MS, end)
        _, text = await f.get("/metrics")
        await assert_one_gap_per_symbol(db_url, s, notes, end)
    # The injected policy decided the wait: one delay drawn, and waited out before reconnecting.
    assert drawn == [delay] and took >= delay
    assert metric_value(text.decode(), "feeder_ws_reconnects_total", reason="error") == 1
    assert metric_value(text.decode(), "feeder_gaps_detected_total") == 2
    assert health["websocket_connected"] is True and set(health["symbols"]) == set(SYMBOLS)
    reconnects = await quality_rows(db_url, "ws_reconnect")
    assert len(reconnects) == 1


@pytest.mark.slow
async def test_stalled_stream_is_recycled_by_the_watchdog(db_url: str) -> None:
    async with gap_notifications(db_url) as notes, sim_and_feeder(db_url, SYMBOLS) as (s, f):
        await until_sim(s, FIRST + 2 * MINUTE_MS + 2_000)
        slot = f.feeder.slots[0]
        opened = slot.state.connections_opened
        s.faults.stall(4.0, s.clock.wall())  # 4 simulated minutes of silence, socket open
        await wait_until(lambda: slot.state.connections_opened > opened, 30, "stale reconnect")
        _, during = await f.health()
        await s.wait_for(lambda: not s.faults.stalled(s.clock.wall()), 10, "stall over")
        end = minute_of(s.clock.now_ms()) + 2 * MINUTE_MS
        await until_sim(s, end + 2_000)
        await wait_stored(db_url, s, SYMBOLS, end - MINUTE_MS, end)
        _, text = await f.get("/metrics")
        status, health = await f.health()
        lost = await assert_one_gap_per_symbol(db_url, s, notes, end)
    assert len(lost) >= 3  # 4 silent minutes, less the one whose final came before the stall
    assert metric_value(text.decode(), "feeder_ws_reconnects_total", reason="stale") >= 1
    # nothing flows for any symbol: unhealthy, not merely degraded
    assert during["status"] == "unhealthy" and all(v["stale"] for v in during["symbols"].values())
    assert status == 200 and health["status"] == "healthy"


@pytest.mark.slow
async def test_feed_gap_gives_exactly_the_missing_minutes(db_url: str) -> None:
    gap_start, gap_end = FIRST + 3 * MINUTE_MS, FIRST + 5 * MINUTE_MS  # minutes 3 and 4 never sent
    # The stream is silent for 3 simulated minutes (3 wall s): with the default 2.5 s the
    # watchdog would recycle the connection mid-gap, and a reconnect landing after minute
    # 5's final would lose it too (a race, not what this test is about).
    async with (
        gap_notifications(db_url) as notes,
        sim_and_feeder(db_url, SYMBOLS, stale_stream_timeout_s=10.0) as (s, f),
    ):
        s.faults.add_feed_gap(gap_start, gap_end)
        end = FIRST + 8 * MINUTE_MS
        await until_sim(s, end + 2_000)
        await wait_stored(db_url, s, SYMBOLS, end - MINUTE_MS, end)
        lost = await assert_one_gap_per_symbol(db_url, s, notes, end)
        assert f.feeder.router.gaps_detected == 2
    assert lost == [gap_start, gap_start + MINUTE_MS]
    assert [n["gap_start"][:19] for n in notes] == ["2025-11-24T12:03:00"] * 2


@pytest.mark.slow
async def test_start_up_reports_the_hole_since_the_newest_stored_candle(db_url: str) -> None:
    # The database stops 10 minutes before the first minute the stream will deliver.
    async with (
        gap_notifications(db_url) as notes,
        sim_and_feeder(db_url, SYMBOLS, unstored_minutes=10) as (s, f),
    ):
        await until_sim(s, FIRST + MINUTE_MS + 2_000)
        await wait_stored(db_url, s, SYMBOLS, FIRST, FIRST + MINUTE_MS)
        lost = await assert_one_gap_per_symbol(db_url, s, notes, FIRST + MINUTE_MS)
        assert f.feeder.router.gaps_detected == 2
    assert lost == list(range(FIRST - 10 * MINUTE_MS, FIRST, MINUTE_MS))
    rows = await quality_rows(db_url, "gap_detected")
    assert {r["details"]["reason"] for r in rows} == {"startup"}
