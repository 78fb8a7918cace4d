"""REST and control API over real sockets (in-process simulator on port 0)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from quaint.binance.encode import rest_kline_row
from quaint.binance.models import MINUTE_MS
from quaint.binance.parse import parse_api_error, parse_rest_klines
from tests.support.simulator import SimHandle, running_simulator

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
START = 1_700_000_000_000  # 2023-11-14T22:13:20Z, 20 s into a minute


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    # Frozen clock: REST answers are then exactly predictable.
    async with running_simulator(speed=0, start=START, seed=7, history_days=1) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _get(http: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any, Any]:
    async with http.get(url, params=params) as resp:
        return resp.status, await resp.json(loads=orjson.loads), resp.headers


async def test_ping_time_and_weight_header(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    status, body, headers = await _get(http, sim.rest_url + "/api/v3/ping")
    assert (status, body, headers["X-MBX-USED-WEIGHT-1M"]) == (200, {}, "1")
    status, body, headers = await _get(http, sim.rest_url + "/api/v3/time")
    assert body == {"serverTime": START} and headers["X-MBX-USED-WEIGHT-1M"] == "2"
    assert headers["Content-Type"].startswith("application/json")


async def test_klines_page_matches_truth_and_real_shape(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    first = START - START % MINUTE_MS - 999 * MINUTE_MS
    status, rows, headers = await _get(
        http, sim.rest_url + "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=first, limit=1000
    )
    assert status == 200 and len(rows) == 1000 and headers["X-MBX-USED-WEIGHT-1M"] == "2"
    candles = parse_rest_klines(rows, "BTCUSDT")
    truth = sim.truth("BTCUSDT", first, START)
    assert candles[:-1] == truth  # 999 closed minutes, exactly
    # The last row is the still-open minute, 20 s in: partial values, as Binance shows.
    assert candles[-1].open_time == START - START % MINUTE_MS
    assert candles[-1].close == sim.exchange.market.partial("BTCUSDT", candles[-1].open_time, 10)[0].close  # type: ignore[index]
    # Same keys/types as a real captured response, position by position.
    real = json.loads((FIXTURES / "rest_api_v3_klines_response.json").read_text())
    assert [type(v) for v in rows[0]] == [type(v) for v in real[0]]
    assert rows[0][11] == real[0][11] == "0"


async def test_klines_default_limit_end_time_and_micros(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    status, rows, _ = await _get(http, sim.rest_url + "/api/v3/klines", symbol="ETHUSDT", interval="1m")
    assert status == 200 and len(rows) == 500 and rows[-1][0] == START - START % MINUTE_MS
    end = START - 100 * MINUTE_MS
    _, rows, _ = await _get(
        http, sim.rest_url + "/api/v3/klines", symbol="ETHUSDT", interval="1m", endTime=end, limit=3
    )
    assert [r[0] for r in rows] == [end - end % MINUTE_MS - i * MINUTE_MS for i in (2, 1, 0)]
    async with http.get(
        sim.rest_url + "/api/v3/klines",
        params={"symbol": "ETHUSDT", "interval": "1m", "startTime": str(end * 1000), "limit": "1"},
        headers={"X-MBX-TIME-UNIT": "MICROSECOND"},
    ) as resp:
        micro = await resp.json()
    assert micro[0][0] == (end - end % MINUTE_MS + MINUTE_MS) * 1000
    assert micro[0][6] == micro[0][0] + 59_999_999
    assert len(parse_rest_klines(micro, "ETHUSDT")) == 1  # the project parser reads µs too
    # Nothing before the history depth (1 day here) and nothing after now.
    _, old, _ = await _get(
        http, sim.rest_url + "/api/v3/klines", symbol="ETHUSDT", interval="1m", endTime=START - 2 * 86_400_000
    )
    _, future, _ = await _get(
        http, sim.rest_url + "/api/v3/klines", symbol="ETHUSDT", interval="1m", startTime=START + MINUTE_MS
    )
    assert old == [] and future == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "2m"}, -1120),
        ({"symbol": "btc$", "interval": "1m"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "5000"}, -1130),
    ],
)
async def test_klines_errors_are_binance_shaped(
    sim: SimHandle, http: aiohttp.ClientSession, params: dict[str, str], code: int
) -> None:
    status, body, _ = await _get(http, sim.rest_url + "/api/v3/klines", **params)
    assert status == 400 and parse_api_error(body).code == code
    real = json.loads((FIXTURES / "rest_error_response.json").read_text())
    assert set(body) == set(real) and [type(body[k]) for k in real] == [type(v) for v in real.values()]


async def test_exchange_info_is_modelled_on_the_capture(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    status, body, headers = await _get(http, sim.rest_url + "/api/v3/exchangeInfo")
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "20"
    real = json.loads((FIXTURES / "cryptofeed_binance_exchangeInfo_BTCUSDT_2021-10-12.json").read_text())
    assert set(real) <= set(body)
    assert body["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    }
    entry = next(s for s in body["symbols"] if s["symbol"] == "BTCUSDT")
    for key, value in real["symbols"][0].items():
        assert key in entry and type(entry[key]) is type(value), key
    price_filter = next(f for f in entry["filters"] if f["filterType"] == "PRICE_FILTER")
    assert price_filter["tickSize"] == "0.01000000"
    _, one, _ = await _get(http, sim.rest_url + "/api/v3/exchangeInfo", symbol="ETHUSDT")
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    status, err, _ = await _get(http, sim.rest_url + "/api/v3/exchangeInfo", symbols='["ETHUSDT","XXXUSDT"]')
    assert status == 400 and err["code"] == -1121


async def test_weight_limit_429_then_418() -> None:
    async with (
        running_simulator(speed=0, start=START, weight_limit=6, ban_after=1, ban_s=30) as sim,
        aiohttp.ClientSession() as http,
    ):
        statuses = []
        for _ in range(6):
            status, body, headers = await _get(
                http, sim.rest_url + "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1
            )
            statuses.append(status)
            if status == 429:
                assert int(headers["Retry-After"]) >= 1 and body["code"] == -1003
            if status == 418:
                assert headers["Retry-After"] == "30" and "banned until" in body["msg"]
        assert statuses == [200, 200, 200, 429, 418, 418]
        assert sim.stats.requests_by_status[418] == 2


async def test_injected_rest_failures_and_latency(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(
        sim.rest_url + "/_sim/rest_errors", json={"status": 429, "count": 2, "retry_after_s": 3}
    ) as r:
        assert r.status == 200
    async with http.post(sim.rest_url + "/_sim/rest_errors", json={"status": 502, "count": 1}) as r:
        assert r.status == 200
    results = [await _get(http, sim.rest_url + "/api/v3/ping") for _ in range(4)]
    assert [s for s, _, _ in results] == [429, 429, 502, 200]
    assert results[0][2]["Retry-After"] == "3"
    async with http.post(sim.rest_url + "/_sim/rest_latency", json={"seconds": 0.3}) as r:
        assert r.status == 200
    started = time.monotonic()
    assert (await _get(http, sim.rest_url + "/api/v3/ping"))[0] == 200
    assert time.monotonic() - started >= 0.3


async def test_truth_stats_clock_and_control_errors(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    minute = START - START % MINUTE_MS
    status, rows, _ = await _get(
        http,
        sim.rest_url + "/_sim/truth",
        symbol="BTCUSDT",
        start=minute - 3 * MINUTE_MS,
        end=minute + MINUTE_MS,
    )
    assert status == 200 and len(rows) == 3  # the open minute is not in the truth yet
    assert rows == [rest_kline_row(c) for c in sim.truth("BTCUSDT", minute - 3 * MINUTE_MS, minute)]
    _, clock, _ = await _get(http, sim.rest_url + "/_sim/clock")
    assert clock == {"now": START, "speed": 0.0}
    async with http.post(sim.rest_url + "/_sim/clock", json={"advance_ms": 120_000, "speed": 1}) as r:
        assert (await r.json())["now"] >= START + 120_000
    for _ in range(3):
        await _get(http, sim.rest_url + "/api/v3/ping")
    _, stats, _ = await _get(http, sim.rest_url + "/_sim/stats")
    assert stats["total_requests"] == 3 and stats["max_requests_1s"] == 3
    assert sum(n for _, n in stats["requests_per_second"]) == 3
    for path, body in [
        ("/_sim/stall", {"seconds": "long"}),
        ("/_sim/feed_gap", {"start": 10, "end": 5}),
        ("/_sim/outage", {"start": "a", "end": 5}),
        ("/_sim/duplicate", {"count": -3}),
        ("/_sim/rest_errors", {"status": 200, "count": 1}),
        ("/_sim/clock", {"advance_ms": -5}),
        ("/_sim/drop", {"mode": "gently"}),
    ]:
        async with http.post(sim.rest_url + path, json=body) as r:
            assert r.status == 400 and "error" in await r.json(), path
    async with http.post(sim.rest_url + "/_sim/stall", data=b"not json") as r:
        assert r.status == 400
    status, err, _ = await _get(http, sim.rest_url + "/_sim/truth", symbol="BTCUSDT", start="x", end=1)
    assert status == 400 and "error" in err


async def test_outage_via_control_api_removes_minutes_from_rest(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    minute = START - START % MINUTE_MS
    gap = (minute - 10 * MINUTE_MS, minute - 7 * MINUTE_MS)
    async with http.post(sim.rest_url + "/_sim/outage", json={"start": gap[0], "end": gap[1]}) as r:
        assert r.status == 200
    _, rows, _ = await _get(
        http,
        sim.rest_url + "/api/v3/klines",
        symbol="BTCUSDT",
        interval="1m",
        startTime=gap[0] - MINUTE_MS,
        limit=3,
    )
    assert [r[0] for r in rows] == [gap[0] - MINUTE_MS, gap[1], gap[1] + MINUTE_MS]
    _, faults, _ = await _get(http, sim.rest_url + "/_sim/faults")
    assert faults["outages"] == [{"start": gap[0], "end": gap[1], "symbol": None}]
    async with http.post(sim.rest_url + "/_sim/reset") as r:
        assert r.status == 200
    _, rows, _ = await _get(
        http, sim.rest_url + "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=gap[0], limit=1
    )
    assert rows[0][0] == gap[0]
