"""Acceptance: ten simulated minutes at speed 60 (about ten wall seconds) deliver
exactly ten closed candles per symbol, equal to /_sim/truth and to REST klines."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect

from quaint.binance.models import MINUTE_MS, Candle, KlineEvent
from quaint.binance.parse import decode_frame, parse_rest_klines
from tests.support.simulator import running_simulator

MINUTE0 = 1_700_000_040_000
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.mark.slow
async def test_ten_minutes_of_stream_equal_truth_and_rest() -> None:
    # Start 2 s into MINUTE0: past the previous minute's final, so the first closed
    # candle streamed is MINUTE0's, and the tenth is MINUTE0 + 9's.
    async with running_simulator(
        speed=60, start=MINUTE0 + 2_000, symbols=SYMBOLS, seed=7, book_rate=0
    ) as sim:
        last = MINUTE0 + 9 * MINUTE_MS
        closed: dict[str, list[Candle]] = {s: [] for s in SYMBOLS}
        url = sim.ws_url + "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        async with connect(url, proxy=None) as ws:
            async with asyncio.timeout(30):
                while not all(c and c[-1].open_time >= last for c in closed.values()):
                    event = decode_frame(await ws.recv(), 0).event
                    assert isinstance(event, KlineEvent)
                    if event.is_closed:
                        closed[event.symbol].append(event.candle)
        async with aiohttp.ClientSession() as http:
            for symbol in SYMBOLS:
                candles = closed[symbol]
                assert [c.open_time for c in candles] == [MINUTE0 + i * MINUTE_MS for i in range(10)]
                params: dict[str, str | int] = {
                    "symbol": symbol,
                    "start": MINUTE0,
                    "end": MINUTE0 + 10 * MINUTE_MS,
                }
                async with http.get(sim.rest_url + "/_sim/truth", params=params) as resp:
                    truth = parse_rest_klines(await resp.json(loads=orjson.loads), symbol)
                params = {"symbol": symbol, "interval": "1m", "startTime": MINUTE0, "limit": 10}
                async with http.get(sim.rest_url + "/api/v3/klines", params=params) as resp:
                    rest = parse_rest_klines(await resp.json(loads=orjson.loads), symbol)
                assert candles == truth == rest
