"""The REST client shell: typed results and typed errors, against the simulator and a
misbehaving local server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from quaint.binance.models import MINUTE_MS
from quaint.binance.rest_client import (
    ApiRejected,
    IpBanned,
    MalformedResponse,
    RateLimited,
    RestClient,
    ServerError,
    TransportError,
)
from quaint.service.runtime import bound_port, start_http
from tests.support.simulator import running_simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_klines_and_limits_against_the_simulator(session: aiohttp.ClientSession) -> None:
    async with running_simulator(symbols=["BTCUSDT"], speed=0, weight_limit=1234) as sim:
        client = RestClient(session, sim.rest_url)
        now = sim.clock.now_ms()
        start = now - now % MINUTE_MS - 100 * MINUTE_MS
        page = await client.klines("BTCUSDT", start, start + 10 * MINUTE_MS - 1, 1000)
        assert page.rows.open_times == [start + i * MINUTE_MS for i in range(10)]
        assert page.rows.candles() == sim.truth("BTCUSDT", start, start + 10 * MINUTE_MS)
        assert page.used_weight == 2
        probe = await client.klines("BTCUSDT", start, None, 1)
        assert len(probe.rows) == 1
        clock = await client.server_time()
        assert clock.server_ms == now and clock.used_weight == 2 + 2 + 1
        limits = await client.exchange_limits("BTCUSDT")
        # 2 + 2 + 1 + 20, unless the simulator's 1-minute window turned over in between.
        assert limits.weight_per_minute() == 1234 and limits.used_weight in (20, 21, 22, 23, 24, 25)
        with pytest.raises(ApiRejected) as rejected:
            await client.klines("NOPEUSDT", start, None, 10)
        assert rejected.value.code == -1121 and rejected.value.status == 400
        sim.faults.add_rest_fault(429, count=1, retry_after_s=7)
        with pytest.raises(RateLimited) as limited:
            await client.klines("BTCUSDT", start, None, 10)
        assert limited.value.retry_after == 7.0
        sim.faults.add_rest_fault(503, count=1)
        with pytest.raises(ServerError) as server:
            await client.klines("BTCUSDT", start, None, 10)
        assert server.value.status == 503


async def test_misbehaving_server(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        mode = request.query["symbol"]
        if mode == "BANNED":
            return web.json_response(
                {"code": -1003, "msg": "banned"}, status=418, headers={"Retry-After": "42"}
            )
        if mode == "NOTJSON":
            return web.Response(body=b"<html>", content_type="text/html")
        if mode == "BADROWS":
            return web.json_response([[1, 2, 3]])
        if mode == "TEAPOT4XX":
            return web.Response(status=404, body=b"not found")
        raise AssertionError(mode)

    async def bad_time(request: web.Request) -> web.Response:
        return web.json_response({"serverTime": "soon"})

    app = web.Application()
    app.router.add_get("/api/v3/klines", handler)
    app.router.add_get("/api/v3/time", bad_time)
    runner = await start_http(app, "127.0.0.1", 0)
    try:
        client = RestClient(session, f"http://127.0.0.1:{bound_port(runner)}")
        with pytest.raises(MalformedResponse, match="serverTime"):
            await client.server_time()
        with pytest.raises(IpBanned) as banned:
            await client.klines("BANNED", 0, None, 1)
        assert banned.value.retry_after == 42.0
        with pytest.raises(MalformedResponse):
            await client.klines("NOTJSON", 0, None, 1)
        with pytest.raises(MalformedResponse):
            await client.klines("BADROWS", 0, None, 1)
        with pytest.raises(ApiRejected) as rejected:
            await client.klines("TEAPOT4XX", 0, None, 1)
        assert rejected.value.code is None and rejected.value.status == 404
    finally:
        await runner.cleanup()
    # Nothing listens there any more: a connection failure is a TransportError.
    with pytest.raises(TransportError):
        await client.klines("BTCUSDT", 0, None, 1)


async def test_timeout_is_a_transport_error(session: aiohttp.ClientSession) -> None:
    async with running_simulator(symbols=["BTCUSDT"], speed=0, rest_latency_s=1.0) as sim:
        client = RestClient(session, sim.rest_url, timeout_s=0.1)
        with pytest.raises(TransportError):
            await client.klines("BTCUSDT", 0, None, 1)
