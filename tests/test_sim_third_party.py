"""Fidelity: an unmodified third-party Binance client (python-binance, PyPI) pointed at
the simulator fetches klines, loads exchangeInfo and receives kline and bookTicker
events over both of its WebSocket paths (/stream?streams= and /ws/<stream>)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quaint.binance.models import MINUTE_MS
from tests.support.simulator import SimHandle, running_simulator

binance = pytest.importorskip("binance", reason="python-binance is a test extra")
from binance import AsyncClient, BinanceSocketManager  # noqa: E402
from binance.exceptions import BinanceAPIException  # noqa: E402

START = 1_700_000_040_000 + 2_000


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    async with running_simulator(speed=60, start=START, seed=3, book_rate=20) as handle:
        yield handle


async def _client(sim: SimHandle) -> AsyncClient:
    # The documented way to point python-binance elsewhere: a subclass with API_URL.
    class SimClient(AsyncClient):  # type: ignore[misc]  # python-binance ships no types
        API_URL = sim.rest_url + "/api"

    client: AsyncClient = await SimClient.create()  # pings and reads the server time
    return client


async def test_python_binance_rest_klines_and_exchange_info(sim: SimHandle) -> None:
    client = await _client(sim)
    try:
        klines: list[list[Any]] = await client.get_klines(symbol="BTCUSDT", interval="1m", limit=5)
        assert len(klines) == 5 and klines[-1][0] == START - START % MINUTE_MS
        truth = sim.truth("BTCUSDT", klines[0][0], klines[-1][0])
        assert [k[1:6] for k in klines[:-1]] == [
            [f"{c.open:.8f}", f"{c.high:.8f}", f"{c.low:.8f}", f"{c.close:.8f}", f"{c.volume:.8f}"]
            for c in truth
        ]
        history = await client.get_historical_klines(
            "ETHUSDT", "1m", START - 1500 * MINUTE_MS, START - 100 * MINUTE_MS
        )
        assert len(history) == 1400  # paged through 1000-row requests; open times in [start, end]
        info = await client.get_symbol_info("ETHUSDT")
        assert info is not None and info["quoteAsset"] == "USDT"
        assert (await client.get_server_time())["serverTime"] >= START
        with pytest.raises(BinanceAPIException) as err:
            await client.get_klines(symbol="NOPEUSDT", interval="1m")
        assert err.value.code == -1121
    finally:
        await client.close_connection()


async def test_python_binance_websockets(sim: SimHandle) -> None:
    client = await _client(sim)
    manager = BinanceSocketManager(client)
    manager.STREAM_URL = sim.ws_url + "/"  # the documented override for the stream base
    try:
        async with manager.multiplex_socket(["btcusdt@kline_1m", "ethusdt@bookTicker"]) as stream:
            seen: set[str] = set()
            async with asyncio.timeout(10):
                while not {"kline", "bookTicker"} <= seen:
                    msg = await stream.recv()
                    data = msg["data"]
                    seen.add("kline" if data.get("e") == "kline" else "bookTicker")
                    if "k" in data:
                        assert msg["stream"] == "btcusdt@kline_1m" and data["k"]["i"] == "1m"
                    else:
                        assert msg["stream"] == "ethusdt@bookTicker" and float(data["b"]) < float(data["a"])
        async with manager.kline_socket("ETHUSDT") as stream:
            async with asyncio.timeout(10):
                msg = await stream.recv()
            assert msg["e"] == "kline" and msg["s"] == "ETHUSDT"
        async with manager.symbol_book_ticker_socket("BTCUSDT") as stream:
            async with asyncio.timeout(10):
                msg = await stream.recv()
            assert msg["s"] == "BTCUSDT" and int(msg["u"]) > 0
    finally:
        await client.close_connection()
