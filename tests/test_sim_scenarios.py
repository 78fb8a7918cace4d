"""Scenarios other services' tests rely on: replaying an archive CSV, driving the
simulated clock from a test, and the periodic faults of the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from quaint.binance.models import MINUTE_MS, Candle, KlineEvent
from quaint.binance.parse import decode_frame, parse_rest_klines
from simulator.replay import load_csv
from tests.support.simulator import running_simulator

MINUTE0 = 1_735_689_600_000  # 2025-01-01T00:00Z: spot archives use µs from here on


def _archive_rows(count: int) -> str:
    """A small data.binance.vision-style CSV (µs timestamps), prices walking up."""
    lines = []
    for i in range(count):
        t = (MINUTE0 + i * MINUTE_MS) * 1000
        o = 93_000 + i
        lines.append(
            f"{t},{o}.00000000,{o + 2}.50000000,{o - 1}.25000000,{o + 1}.00000000,2.50000000,"
            f"{t + 59_999_999},{(o + 1) * 2.5:.8f},{40 + i},1.00000000,{o + 1}.00000000,0"
        )
    return "\n".join(lines) + "\n"


async def test_replayed_archive_is_served_and_streamed(tmp_path: Path) -> None:
    csv = tmp_path / "BTCUSDT-1m-2025-01-01.csv"
    csv.write_text(_archive_rows(5))
    rows = load_csv(csv, "BTCUSDT")
    # No --start: the clock starts at the file's first minute, so the stream plays it.
    async with running_simulator(speed=600, replay_csv=csv, replay_symbol="BTCUSDT", book_rate=0) as sim:
        assert "BTCUSDT" in sim.state.settings.symbols
        async with connect(sim.ws_url + "/ws/btcusdt@kline_1m", proxy=None) as ws, asyncio.timeout(10):
            finals: list[Candle] = []
            while len(finals) < 3:
                event = decode_frame(await ws.recv(), 0).event
                if isinstance(event, KlineEvent) and event.is_closed:
                    finals.append(event.candle)
        assert finals == [rows[MINUTE0 + i * MINUTE_MS] for i in range(3)]
        await sim.wait_for(lambda: sim.clock.now_ms() > MINUTE0 + 6 * MINUTE_MS)
        params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": str(MINUTE0 - 10 * MINUTE_MS)}
        async with (
            aiohttp.ClientSession() as http,
            http.get(sim.rest_url + "/api/v3/klines", params=params) as r,
        ):
            served = parse_rest_klines(await r.json(loads=orjson.loads), "BTCUSDT")
        assert served == list(rows.values())  # exactly the file: nothing before, nothing after


async def test_tests_can_drive_the_clock() -> None:
    # A frozen clock (speed 0) advanced by the test: each skipped minute's final
    # kline is still streamed, in order, exactly once.
    async with running_simulator(speed=0, start=MINUTE0 + 5_000, symbols=["ETHUSDT"], book_rate=0) as sim:
        async with connect(sim.ws_url + "/ws/ethusdt@kline_1m", proxy=None) as ws:
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
            assert orjson.loads(await ws.recv()) == {"result": ["ethusdt@kline_1m"], "id": 1}
            sim.clock.set(advance_ms=3 * MINUTE_MS)
            finals: list[int] = []
            async with asyncio.timeout(5):
                while len(finals) < 3:
                    event = decode_frame(await ws.recv(), 0).event
                    if isinstance(event, KlineEvent) and event.is_closed:
                        finals.append(event.candle.open_time)
        assert finals == [MINUTE0, MINUTE0 + MINUTE_MS, MINUTE0 + 2 * MINUTE_MS]
        assert sim.clock.now_ms() == MINUTE0 + 5_000 + 3 * MINUTE_MS


async def _drain(ws: ClientConnection) -> None:
    async with asyncio.timeout(5):
        while True:
            await ws.recv()


async def test_periodic_drop_from_the_cli_settings() -> None:
    async with running_simulator(speed=60, start=MINUTE0, drop_every_s=0.2) as sim:
        for _ in range(2):  # dropped, reconnect, dropped again
            async with connect(sim.ws_url + "/ws/btcusdt@bookTicker", proxy=None) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await _drain(ws)
                assert info.value.rcvd is None
        await sim.wait_for(lambda: sim.stats.ws_closed_by_reason["dropped"] == 2)
