"""Reconnecting: fatal answers stop a connection slot (and the feeder, when nothing can
ever work), 429 waits out Retry-After, 5xx and network errors back off, and the first
reconnect after a drop comes within a second.

The refusals are real HTTP answers to the WebSocket handshake, from a small aiohttp
server on a free port; the answers that let a connection through come from the
simulator. A connector (injected like the production one) decides which server a
connection attempt goes to.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, InvalidURI

from feeder.core.reconnect import OpenAction, classify_open_failure, reconnect_delays
from feeder.service import default_reconnect_delays
from feeder.settings import FeederSettings
from feeder.stream import open_verdict
from tests.support.feeder import SIM_START, running_feeder, settings_for
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_until


def test_answers_are_classified_by_status() -> None:
    for status in (451, 403, 404):
        verdict = classify_open_failure(status=status)
        assert verdict.fatal and str(status) in verdict.reason
    assert classify_open_failure(malformed_url=True, error="bad port").fatal
    limited = classify_open_failure(status=429, retry_after="7")
    assert limited.action is OpenAction.RETRY_AFTER and limited.retry_after_s == 7.0
    assert classify_open_failure(status=418, retry_after="x").retry_after_s == 0.0  # unparsable: none
    for status in (500, 502, 503, 400, 408):
        assert classify_open_failure(status=status).action is OpenAction.BACKOFF
    assert classify_open_failure(error="ConnectionRefusedError").action is OpenAction.BACKOFF


def test_the_feeders_default_policy_reconnects_within_a_second_first() -> None:
    policy = default_reconnect_delays(
        FeederSettings(websocket_reconnect_interval_s=5, websocket_reconnect_max_s=60)
    )
    for _ in range(50):
        delays = policy()
        assert 0.0 <= next(delays) <= 1.0 and next(delays) >= 2.5


def test_the_first_reconnect_is_within_a_second_then_backs_off() -> None:
    for seed in range(200):
        delays = reconnect_delays(5.0, 60.0, rng=random.Random(seed))
        first, second, third = next(delays), next(delays), next(delays)
        assert 0.0 <= first <= 1.0
        assert 2.5 <= second <= 5.0 and 2.5 <= third <= 10.0
        assert all(2.5 <= next(delays) <= 60.0 for _ in range(10))
    short = reconnect_delays(0.2, 1.0, rng=random.Random(1))
    assert next(short) <= 0.2  # never later than the backoff itself would start


class Refusing:
    """An HTTP server that refuses every WebSocket handshake with ``status``."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.requests: list[float] = []  # monotonic arrival times
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(time.monotonic())
        return web.Response(status=self.status, headers=self.headers, text="refused")


@asynccontextmanager
async def refusing(status: int, headers: dict[str, str] | None = None) -> AsyncIterator[Refusing]:
    server = Refusing(status, headers)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"ws://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_open_errors_are_classified_from_the_real_exceptions() -> None:
    async with refusing(451) as server:
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.url + "/stream?streams=btcusdt@kline_1m", proxy=None)
    assert open_verdict(refused.value).fatal
    with pytest.raises(InvalidURI) as bad_uri:
        await connect("wss://", proxy=None)
    assert open_verdict(bad_uri.value).fatal
    with pytest.raises(ValueError, match="Port out of range") as bad_port:
        await connect("ws://127.0.0.1:99999/stream", proxy=None)
    assert open_verdict(bad_port.value).fatal
    assert open_verdict(ConnectionRefusedError(111, "refused")).action is OpenAction.BACKOFF


@pytest.mark.slow
async def test_a_region_refusal_stops_the_feeder_with_one_clear_line(db_url: str) -> None:
    async with refusing(451) as server:
        settings = settings_for(db_url, server.url, symbols=["BTCUSDT", "ETHUSDT"], streams_per_connection=2)
        with capture_logs() as logs:
            async with running_feeder(settings) as f:
                code = await f.task  # it stops by itself
    assert code == 1
    refused = [e for e in logs if e["event"] == "ws_refused_for_good"]
    assert len(refused) == 2 and all("HTTP 451" in e["reason"] for e in refused)  # one line per connection
    assert [e for e in logs if e["event"] == "feeder_cannot_run"]
    assert len(server.requests) == 2  # each connection asked once, never again
    assert f.feeder.fatal is not None and "451" in f.feeder.fatal


@pytest.mark.slow
async def test_a_fatal_answer_for_one_connection_leaves_the_others_running(db_url: str) -> None:
    async with (
        running_simulator(start=SIM_START, speed=60, symbols=["BTCUSDT", "ETHUSDT"]) as sim,
        refusing(404) as server,
    ):
        # One connection per symbol; ETHUSDT's stream path is "not found".
        settings = settings_for(db_url, sim.ws_url, symbols=["BTCUSDT", "ETHUSDT"], streams_per_connection=2)

        def choose(url: str) -> Any:
            return connect(url.replace(sim.ws_url, server.url) if "ethusdt" in url else url, proxy=None)

        async with running_feeder(settings, connector=choose) as f:
            await wait_until(lambda: f.feeder.slots[1].state.fatal is not None, 30, "the refusal")
            await wait_until(lambda: f.feeder.slots[0].state.connected, 30, "the other connection")
            status, health = await f.health()
            assert not f.task.done()  # still serving
    assert status == 503 and health["status"] == "degraded"
    assert health["problems"] == ["connection 1: no such stream path (HTTP 404): check BINANCE_WS_URL"]
    assert health["symbols"]["BTCUSDT"]["websocket_connected"] is True
    assert health["symbols"]["ETHUSDT"]["websocket_connected"] is False
    assert len(server.requests) == 1


@pytest.mark.slow
async def test_429_waits_out_retry_after_and_5xx_backs_off(db_url: str) -> None:
    drawn: list[float] = []

    def policy() -> Any:
        while True:
            drawn.append(0.05)
            yield 0.05

    async with (
        running_simulator(start=SIM_START, speed=60, symbols=["BTCUSDT"]) as sim,
        refusing(503) as unavailable,
        refusing(429, {"Retry-After": "2"}) as limited,
    ):
        attempts: list[float] = []  # monotonic start of each attempt

        def choose(url: str) -> Any:
            # 503, 503, then 429 (Retry-After 2 s), then the simulator.
            targets = [unavailable.url, unavailable.url, limited.url]
            target = targets[len(attempts)] if len(attempts) < len(targets) else sim.ws_url
            attempts.append(time.monotonic())
            return connect(url.replace(sim.ws_url, target), proxy=None)

        settings = settings_for(db_url, sim.ws_url, symbols=["BTCUSDT"])
        async with running_feeder(settings, connector=choose, reconnect_delays=policy) as f:
            await wait_until(lambda: f.feeder.slots[0].state.connected, 30, "connected after the refusals")
            opened = f.feeder.slots[0].state.connections_opened
    assert len(unavailable.requests) == 2 and len(limited.requests) == 1 and len(attempts) == 4
    assert len(drawn) >= 3  # one injected delay per refusal: 503s back off as the policy says
    assert attempts[3] - limited.requests[0] >= 2.0  # ... the 429 waited at least Retry-After
    assert opened == 1 and f.feeder.fatal is None
