"""The gap handler's Binance-compatible read API over real HTTP: /api/v3/klines at every
stored interval equals the stored rows (1m) and the rollups, in Binance's exact shape;
missing minutes stay missing; Binance's error JSON for bad input; exchangeInfo, time,
ping; the per-client rate limit (429, -1003, Retry-After). The request rules also unit-tested."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from gap_handler.api import GAP_HANDLER_KEY
from gap_handler.core.klines import ClientBuckets, parse_klines_request
from gap_handler.service import GapHandler
from quaint.binance.encode import rest_kline_row
from quaint.binance.models import MINUTE_MS, ApiError, Candle, datetime_to_ms
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.rollups import fetch_bars, refresh_rollups
from tests.support.gap_handler import served_api, settings_for
from tests.support.simulator import SimHandle, running_simulator

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
# A symbol the gap handler does not watch: its hole is never repaired behind the test's back.
HOLEY = "XRPUSDT"
HOLEY_START = datetime_to_ms(datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
HOLE = range(30, 95)
LATER = 253_402_300_799_999  # the largest time the API reads (year 9999)  # minutes missing: 00:30..01:34


@dataclass
class Api:
    base: str
    http: aiohttp.ClientSession
    c: GapHandler
    sim: SimHandle

    async def get(self, path: str, **params: Any) -> tuple[int, Any, CIMultiDictProxy[str]]:
        async with self.http.get(self.base + path, params=params) as resp:
            return resp.status, await resp.json(), resp.headers


def holey_candles() -> list[Candle]:
    out = []
    for i in range(180):
        if i in HOLE:
            continue
        p = Decimal(100 + i) + Decimal("0.12345678")
        t = HOLEY_START + i * MINUTE_MS
        out.append(
            Candle(
                HOLEY,
                t,
                t + MINUTE_MS - 1,
                p,
                p + 1,
                p - 1,
                p,
                Decimal("1.5"),
                Decimal("150.25"),
                7,
                Decimal("0.5"),
                Decimal("50.125"),
            )
        )
    return out


async def serve(db_url: str, **overrides: Any) -> AsyncIterator[Api]:
    async with running_simulator(symbols=SYMBOLS, speed=0) as sim:
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=SYMBOLS,
            history_days=1,
            rate_limit_requests_per_sec=100,
            **overrides,
        )
        async with served_api(settings, sim.clock.now_ms) as (base, app), aiohttp.ClientSession() as http:
            handler = app[GAP_HANDLER_KEY]
            async with handler.pool.acquire() as conn:
                await upsert_candles(conn, holey_candles(), "archive")
                # As every writer of past minutes must (the gap handler does after each unit): on
                # Community the aggregates show minutes below their watermark only once refreshed.
                await refresh_rollups(conn, HOLEY_START, HOLEY_START + 180 * MINUTE_MS)
            yield Api(base, http, handler, sim)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async for a in serve(db_url, klines_api_rate_per_s=1000, klines_api_burst=1000):
        yield a


async def test_klines_equal_the_stored_rows_in_binances_shape(api: Api) -> None:
    async with api.c.pool.acquire() as conn:
        stored = await fetch_candles(conn, "BTCUSDT", 0, LATER)
        assert len(stored) > 1000
        start = stored[10].open_time
        status, body, _ = await api.get(
            "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=start, limit=7
        )
        assert status == 200
        assert body == [rest_kline_row(c) for c in stored[10:17]]
        row = body[0]
        assert [type(v) for v in row] == [int, str, str, str, str, str, int, str, int, str, str, str]
        # Without startTime: the newest `limit` rows, oldest first; default limit 500.
        _, newest, _ = await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=3)
        assert newest == [rest_kline_row(c) for c in stored[-3:]]
        _, default, _ = await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=0)
        assert len(default) == 500 and default[0] == rest_kline_row(stored[0])
        _, far, _ = await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime="9" * 20)
        assert far == []
        _, cap, _ = await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=0, limit=1000)
        assert len(cap) == 1000
        # Every rollup interval: the rows of the rollup relation (tests/test_rollups.py checks those).
        for interval, width in (("5m", 5), ("15m", 15), ("1h", 60), ("4h", 240), ("1d", 1440)):
            bars = await fetch_bars(conn, "BTCUSDT", interval, 0, LATER, 1000)
            _, got, _ = await api.get("/api/v3/klines", symbol="BTCUSDT", interval=interval, startTime=0)
            assert [r[0] for r in got] == [b.open_time for b in bars], interval
            assert all(r[6] - r[0] == width * MINUTE_MS - 1 for r in got)
            first = [
                c for c in stored if bars[0].open_time <= c.open_time < bars[0].open_time + width * MINUTE_MS
            ]
            assert got[0][1] == f"{first[0].open:.8f}" and got[0][4] == f"{first[-1].close:.8f}"
            assert got[0][5] == f"{sum((c.volume for c in first), Decimal(0)):.8f}"
            assert got[0][8] == sum(c.number_of_trades for c in first)


async def test_missing_minutes_are_missing(api: Api) -> None:
    end = HOLEY_START + 179 * MINUTE_MS
    _, minutes, _ = await api.get(
        "/api/v3/klines", symbol=HOLEY, interval="1m", startTime=HOLEY_START, endTime=end
    )
    assert [r[0] for r in minutes] == [HOLEY_START + i * MINUTE_MS for i in range(180) if i not in HOLE]
    _, hours, _ = await api.get(
        "/api/v3/klines", symbol=HOLEY, interval="1h", startTime=HOLEY_START, endTime=end
    )
    # 00:00 holds 30 minutes, 01:00 the 25 after the hole, 02:00 all 60: volume says so.
    assert [r[0] for r in hours] == [HOLEY_START + h * 3_600_000 for h in range(3)]
    assert [r[5] for r in hours] == ["45.00000000", "37.50000000", "90.00000000"]
    assert [r[8] for r in hours] == [7 * 30, 7 * 25, 7 * 60]
    _, none, _ = await api.get(
        "/api/v3/klines",
        symbol=HOLEY,
        interval="5m",
        startTime=HOLEY_START + 35 * MINUTE_MS,
        endTime=HOLEY_START + 85 * MINUTE_MS,
    )
    assert none == []


async def test_bad_input_gets_binances_error_json(api: Api) -> None:
    cases = [
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "3m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "2x"}, -1120),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "btc usdt", "interval": "1m"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "yesterday"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "1001"}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "0"}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "5", "endTime": "4"}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1h", "timeZone": "8"}, -1130),
    ]
    for params, code in cases:
        status, body, _ = await api.get("/api/v3/klines", **params)
        assert status == 400 and body["code"] == code and body["msg"], (params, body)


async def test_exchange_info_time_and_ping(api: Api) -> None:
    status, info, _ = await api.get("/api/v3/exchangeInfo")
    assert status == 200
    assert sorted(s["symbol"] for s in info["symbols"]) == sorted([*SYMBOLS, HOLEY])
    xrp = next(s for s in info["symbols"] if s["symbol"] == HOLEY)
    assert (xrp["baseAsset"], xrp["quoteAsset"], xrp["status"]) == ("XRP", "USDT", "TRADING")
    _, one, _ = await api.get("/api/v3/exchangeInfo", symbol="ETHUSDT")
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    status, bad, _ = await api.get("/api/v3/exchangeInfo", symbol="NOPEUSDT")
    assert status == 400 and bad["code"] == -1121
    _, t, _ = await api.get("/api/v3/time")
    assert abs(t["serverTime"] - api.sim.clock.now_ms()) < 60_000
    assert (await api.get("/api/v3/ping"))[:2] == (200, {})


async def test_a_client_over_its_rate_gets_429_with_retry_after(db_url: str) -> None:
    async for a in serve(db_url, klines_api_rate_per_s=0.001, klines_api_burst=3):
        statuses = [(await a.get("/api/v3/ping"))[0] for _ in range(3)]
        assert statuses == [200, 200, 200]
        status, body, headers = await a.get("/api/v3/klines", symbol="BTCUSDT", interval="1m")
        assert status == 429 and body["code"] == -1003
        assert int(headers["Retry-After"]) >= 1


def test_request_rules() -> None:
    symbols = frozenset({"BTCUSDT"})
    q = parse_klines_request(
        {"symbol": "BTCUSDT", "interval": "4h", "startTime": "1700000000000000"}, symbols
    )
    assert not isinstance(q, ApiError)
    assert (q.interval, q.start_ms, q.end_ms, q.limit) == ("4h", 1_700_000_000_000, None, 500)
    assert q.window(9) == (1_700_000_000_000, 9, False)
    far = parse_klines_request({"symbol": "BTCUSDT", "interval": "1m", "endTime": "9" * 20}, symbols)
    assert not isinstance(far, ApiError) and far.end_ms == LATER
    err = parse_klines_request({"symbol": "BTCUSDT", "interval": "1m"}, symbols, "NANOSECOND")
    assert isinstance(err, ApiError) and err.code == -1194
    buckets = ClientBuckets(rate=1.0, burst=2, max_clients=2)
    assert [buckets.charge("a", 0.0).allowed for _ in range(3)] == [True, True, False]
    assert buckets.charge("a", 0.0).retry_after_s == 1
    assert buckets.charge("b", 0.0).allowed and buckets.charge("a", 1.0).allowed
    buckets.charge("c", 1.0)  # forgets the least recently seen ("b")
    assert buckets.charge("b", 1.0).allowed and buckets.charge("b", 1.0).allowed
