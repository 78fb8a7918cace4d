"""Unmodified third-party Binance clients (ccxt, python-binance, binance-sdk-spot, PyPI)
pointed at the gap handler's read API read the stored history: values equal the rows in
candles_1m and its rollups. Endpoint overrides as in ../shared/recipes/README.md section 6
(and tests/test_sim_third_party.py, which points python-binance at the simulator)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quaint.binance.encode import rest_kline_row
from quaint.binance.models import MINUTE_MS
from quaint.store.candles import fetch_candles
from quaint.store.rollups import fetch_bars
from tests.test_klines_api import LATER, Api, serve

binance = pytest.importorskip("binance", reason="python-binance is a test extra")
ccxt = pytest.importorskip("ccxt.async_support", reason="ccxt is a test extra")
sdk = pytest.importorskip("binance_sdk_spot.spot", reason="binance-sdk-spot is a test extra")
from binance import AsyncClient  # noqa: E402
from binance.exceptions import BinanceAPIException  # noqa: E402
from binance_common.configuration import ConfigurationRestAPI  # noqa: E402
from binance_sdk_spot.rest_api.models import KlinesIntervalEnum  # noqa: E402


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async for a in serve(db_url, klines_api_rate_per_s=1000, klines_api_burst=1000):
        yield a


async def _stored_rows(api: Api, symbol: str) -> list[list[Any]]:
    async with api.c.pool.acquire() as conn:
        return [rest_kline_row(c) for c in await fetch_candles(conn, symbol, 0, LATER)]


async def test_python_binance_reads_the_local_history(api: Api) -> None:
    class LocalClient(AsyncClient):  # type: ignore[misc]  # python-binance ships no types
        API_URL = api.base + "/api"

    client: AsyncClient = await LocalClient.create()  # pings and reads the server time
    try:
        stored = await _stored_rows(api, "ETHUSDT")
        got = await client.get_klines(symbol="ETHUSDT", interval="1m", startTime=stored[5][0], limit=20)
        assert got == stored[5:25]
        # Paged through 1000-row requests on its own.
        history = await client.get_historical_klines("ETHUSDT", "1m", stored[0][0], stored[-1][0])
        assert history == stored
        async with api.c.pool.acquire() as conn:
            hours = await fetch_bars(conn, "ETHUSDT", "1h", 0, LATER, 1000)
        got_h = await client.get_klines(symbol="ETHUSDT", interval="1h", startTime=0)
        assert [(r[0], r[1], r[4], r[5]) for r in got_h] == [
            (b.open_time, f"{b.open:.8f}", f"{b.close:.8f}", f"{b.volume:.8f}") for b in hours
        ]
        info = await client.get_symbol_info("ETHUSDT")
        assert info is not None and info["quoteAsset"] == "USDT"
        with pytest.raises(BinanceAPIException) as err:
            await client.get_klines(symbol="NOPEUSDT", interval="1m")
        assert err.value.code == -1121
    finally:
        await client.close_connection()


async def test_ccxt_reads_the_local_history(api: Api) -> None:
    ex = ccxt.binance({"options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}}})
    ex.urls["api"]["public"] = api.base + "/api/v3"
    try:
        stored = await _stored_rows(api, "BTCUSDT")
        ohlcv = await ex.fetch_ohlcv("BTC/USDT", "1m", since=stored[3][0], limit=50)
        # ccxt gives floats: the stored exact values, as floats.
        assert ohlcv == [[r[0], *(float(v) for v in r[1:6])] for r in stored[3:53]]
        async with api.c.pool.acquire() as conn:
            bars = await fetch_bars(conn, "BTCUSDT", "15m", 0, LATER, 1000)
        q = await ex.fetch_ohlcv("BTC/USDT", "15m", since=0, limit=1000)
        f = float
        assert q == [[b.open_time, f(b.open), f(b.high), f(b.low), f(b.close), f(b.volume)] for b in bars]
        assert "ETH/USDT" in ex.markets and "XRP/USDT" in ex.markets
    finally:
        await ex.close()


def _plain(value: Any) -> Any:
    # The SDK wraps each array and each of its mixed-type items in a oneOf model.
    return getattr(value, "actual_instance", value)


async def test_binance_sdk_spot_reads_the_local_history(api: Api) -> None:
    client = sdk.Spot(config_rest_api=ConfigurationRestAPI(base_path=api.base))
    stored = await _stored_rows(api, "BTCUSDT")
    start = stored[100][0]

    def read() -> Any:
        resp = client.rest_api.klines(
            symbol="BTCUSDT", interval=KlinesIntervalEnum.INTERVAL_1m, start_time=start, limit=30
        )
        return resp.data()

    data = await asyncio.to_thread(read)  # the SDK's REST client is synchronous
    rows = [[_plain(v) for v in _plain(item)] for item in data]
    assert rows == stored[100:130]
    assert rows[0][0] == start and rows[0][6] == start + MINUTE_MS - 1
