"""End to end against the simulator and a real TimescaleDB: completeness, rollover,
malformed frames.

Time. The simulator runs at speed 60: one simulated minute per wall second. Candle
times (and GAP_DETECTION_THRESHOLD_S = 70) are exchange time and stay as in production;
the feeder's wall-time knobs are shrunk to match (``tests.support.feeder.settings_for``:
STALE_STREAM_TIMEOUT_S 2.5 = 2.5 simulated minutes, reconnect backoff 0.2..1 s, age
limits of a few seconds). Each test starts the simulator frozen, waits for the feeder to
connect, then lets time run (``sim_and_feeder``), so no minute is lost to start-up.
"""

from __future__ import annotations

from typing import Any

import pytest

from feeder.core.features import CANDLE_FEATURES
from quaint.binance.models import MINUTE_MS, datetime_to_ms
from tests.support.feeder import (
    HISTORY_MINUTES,
    SIM_START,
    connect,
    metric_value,
    minute_of,
    quality_rows,
    sim_and_feeder,
    stored_candles,
    until_sim,
    wait_stored,
)
from tests.support.waiting import wait_for

FIRST = minute_of(SIM_START)  # the first live minute
SEED_HEALTH_FIELDS = {
    "status",
    "websocket_connected",
    "candles_processed",
    "database_status",
    "last_candle_time",
    "uptime_seconds",
}


async def feature_count(db_url: str, start: int, end: int) -> int:
    conn = await connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM feature_cache WHERE version = 'v1'"
                " AND time >= to_timestamp($1 / 1000.0) AND time < to_timestamp($2 / 1000.0)",
                start,
                end,
            )
        )
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_three_symbols_fifteen_minutes_match_the_truth(db_url: str) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    end = FIRST + 15 * MINUTE_MS
    async with sim_and_feeder(db_url, symbols) as (s, f):
        await until_sim(s, end + 2_000)  # the 15th minute's final has been sent
        await wait_stored(db_url, s, symbols, FIRST, end)
        status, health = await f.health()

        async def all_features() -> bool:
            return await feature_count(db_url, FIRST, end) == 45

        await wait_for(all_features, 30, "features of every live minute")
        _, text = await f.get("/metrics")
    history = FIRST - HISTORY_MINUTES * MINUTE_MS
    for sym in symbols:
        truth = s.truth(sym, history, end)
        assert len(truth) == HISTORY_MINUTES + 15
        # every closed minute, exactly the exchange's values, once (primary key)
        assert await stored_candles(db_url, sym, history, end) == truth
    conn = await connect(db_url)
    try:
        sources = await conn.fetch(
            "SELECT source, count(*) AS n FROM candles_1m WHERE time >= to_timestamp($1 / 1000.0)"
            " AND time < to_timestamp($2 / 1000.0) GROUP BY source",
            FIRST,
            end,
        )
        ticks = await conn.fetch("SELECT symbol, count(*) AS n FROM book_ticker GROUP BY symbol")
        dup = await conn.fetchval("SELECT count(*) - count(DISTINCT (symbol, update_id)) FROM book_ticker")
        per_second = await conn.fetchval(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM book_ticker"
            " GROUP BY symbol, date_trunc('second', time)) x"
        )
        feats = await conn.fetch(
            "SELECT symbol, time, features_json FROM feature_cache WHERE version = 'v1'"
            " AND time >= to_timestamp($1 / 1000.0) AND time < to_timestamp($2 / 1000.0)",
            FIRST,
            end,
        )
    finally:
        await conn.close()
    assert {r["source"]: r["n"] for r in sources} == {"ws": 45}
    assert {r["symbol"] for r in ticks} == set(symbols) and min(r["n"] for r in ticks) >= 10
    assert dup == 0
    assert per_second == 1  # sampled mode: the last tick per symbol per second
    by_key = {(r["symbol"], datetime_to_ms(r["time"])): r["features_json"] for r in feats}
    for sym in symbols:
        for t in range(FIRST, end, MINUTE_MS):
            doc = by_key[(sym, t)]
            assert doc["warm"] is True, (sym, t)
            assert all(isinstance(doc[k], float) for k in CANDLE_FEATURES)
            assert doc["has_book"] is True and doc["spread_bps"] > 0
    assert await quality_rows(db_url, "gap_detected") == []
    assert status == 200 and health["status"] == "healthy"
    assert set(health) == SEED_HEALTH_FIELDS | {"symbols", "symbol_states", "stalest"}
    assert health["candles_processed"] == 45 and health["database_status"] == "connected"
    assert health["websocket_connected"] is True
    last = s.truth("BTCUSDT", end - MINUTE_MS, end)[0]
    assert health["last_candle_time"] == "2025-11-24T12:14:00Z" and last.open_time == end - MINUTE_MS
    assert set(health["symbols"]) == set(symbols)
    exposition = text.decode()
    assert metric_value(exposition, "feeder_rows_written_total", table="candles_1m") == 45
    assert metric_value(exposition, "feeder_messages_received_total", stream_type="bookTicker") > 0
    assert metric_value(exposition, "feeder_bad_frames_total", reason="malformed") == 0
    assert metric_value(exposition, "feeder_seconds_since_last_closed_candle", symbol="ETHUSDT") < 5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("feeder", "sim", "reason"),
    [
        # The feeder replaces its connections (one per symbol here: 2 streams each) before
        # the server's age limit cuts them.
        ({"ws_max_connection_age_s": 2.0, "streams_per_connection": 2}, {"max_connection_age_s": 3.0}, "age"),
        # The server announces its shutdown first: the feeder rolls over on the notice.
        (
            {"ws_max_connection_age_s": 60.0},
            {"max_connection_age_s": 2.0, "shutdown_notice": True, "shutdown_grace_s": 1.0},
            "server_shutdown",
        ),
    ],
)
async def test_rollover_loses_no_minute(
    db_url: str, feeder: dict[str, Any], sim: dict[str, Any], reason: str
) -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]
    end = FIRST + 9 * MINUTE_MS
    async with sim_and_feeder(db_url, symbols, sim=sim, **feeder) as (s, f):
        await until_sim(s, end + 2_000)
        await wait_stored(db_url, s, symbols, FIRST, end)
        _, text = await f.get("/metrics")
        slots = f.feeder.slots
    exposition = text.decode()
    assert len(slots) == (2 if "streams_per_connection" in feeder else 1)
    assert metric_value(exposition, "feeder_ws_rollovers_total", reason=reason) >= 3 * len(slots)
    assert all(slot.state.reconnects == 0 for slot in slots)  # every replacement was planned
    for sym in symbols:
        assert await stored_candles(db_url, sym, FIRST, end) == s.truth(sym, FIRST, end)
    assert await quality_rows(db_url, "gap_detected") == []


@pytest.mark.slow
async def test_a_thousand_malformed_frames_are_counted_and_survived(db_url: str) -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]
    async with sim_and_feeder(db_url, symbols, sim={"book_rate": 400}) as (s, f):
        await until_sim(s, FIRST + MINUTE_MS)
        s.faults.set_message_fault("malformed", {"count": 1000})
        await s.wait_for(lambda: s.faults.malformed.count == 0, 30, "1000 malformed frames sent")
        end = minute_of(s.clock.now_ms()) + 2 * MINUTE_MS
        await until_sim(s, end + 2_000)
        await wait_stored(db_url, s, symbols, FIRST, end)
        status, health = await f.health()
        _, text = await f.get("/metrics")
        assert not f.task.done()  # still serving
    exposition = text.decode()
    assert metric_value(exposition, "feeder_bad_frames_total", reason="malformed") == 1000
    assert status == 200 and health["status"] == "healthy"
    for sym in symbols:
        assert await stored_candles(db_url, sym, FIRST, end) == s.truth(sym, FIRST, end)
    assert await quality_rows(db_url, "gap_detected") == []
