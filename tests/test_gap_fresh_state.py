"""Gap state is fresh when a work unit finishes, not only at the next scan (issue 16):
``GET /gaps?status=open`` no longer lists a filled range, and the 24 h gauge that
``CandlesMissing`` reads drops to what is still missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gap_handler.api import GAP_HANDLER_KEY, ROUTES
from gap_handler.core.intervals import MinuteRange, due_end, history_start
from gap_handler.service import GapHandler
from quaint.binance.models import MINUTE_MS
from quaint.store.candles import upsert_candles
from tests.support.gap_handler import idle, running_service, settings_for
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for

SYMBOL = "BTCUSDT"
GAUGE = "quaint_gap_handler_candles_missing_24h"
pytestmark = pytest.mark.slow


@asynccontextmanager
async def gaps_api(c: GapHandler) -> AsyncIterator[str]:
    """The gap handler's routes on a real socket, over a handler whose scan loop is not
    running: nothing but a finished unit can change what they answer."""
    app = web.Application()
    app[GAP_HANDLER_KEY] = c
    app.add_routes(ROUTES)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def open_gaps(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/gaps?status=open") as resp:
        assert resp.status == 200
        body = await resp.json()
    return list(body["current"])


async def test_a_finished_unit_updates_open_gaps_and_the_24h_gauge(db_url: str) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0) as sim:
        now = sim.clock.now_ms()
        rng = MinuteRange(history_start(now, 1), due_end(now, 70))
        hole = MinuteRange(rng.end - 300 * MINUTE_MS, rng.end - 210 * MINUTE_MS)
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=[SYMBOL],
            history_days=1,
            backfill_check_interval_s=3600,
            full_scan_interval_s=3600,
        )
        registry = CollectorRegistry()
        async with running_service(settings, now_ms=sim.clock.now_ms, registry=registry, loops=False) as c:
            truth = sim.truth(SYMBOL, rng.start, rng.end)
            rows = [k for k in truth if not hole.start <= k.open_time < hole.end]
            async with c.pool.acquire() as conn:
                await upsert_candles(conn, rows, "ws")
            async with gaps_api(c) as base:
                # The one scan of this test: it sees the hole and queues it.
                assert await c.backfills.scan() == 1
                assert registry.get_sample_value(GAUGE, {"symbol": SYMBOL}) == hole.minutes
                await wait_for(idle(c), 30, "the hole backfilled")

                async def fresh() -> bool:
                    gauge = registry.get_sample_value(GAUGE, {"symbol": SYMBOL})
                    return await open_gaps(base) == [] and gauge == 0

                # The unit's end updates both (a moment after it leaves `running`); with the
                # scan loop stopped, nothing else could.
                await wait_for(fresh, 30, "GET /gaps and the 24 h gauge updated by the finished unit")
                assert c.backfills.scans == 1
