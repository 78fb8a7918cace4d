"""The shared /health + /metrics app over a real socket."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from quaint.service.health import HealthReport
from quaint.service.http import create_service_app
from quaint.service.runtime import bound_port, start_http


async def test_health_and_metrics() -> None:
    registry = CollectorRegistry()
    frames = Counter("demo_frames", "Frames seen.", ["kind"], registry=registry)
    frames.labels("kline").inc(3)
    state = {"status": "healthy"}

    async def probe(query: Mapping[str, str]) -> HealthReport:
        return HealthReport(state["status"], {"database_status": "connected", **query})

    runner = await start_http(create_service_app(registry, probe), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "healthy", "database_status": "connected"}
            async with http.get(f"{base}/health?symbol=BTCUSDT") as resp:  # the query reaches the probe
                assert (await resp.json())["symbol"] == "BTCUSDT"
            state["status"] = "degraded"
            async with http.get(f"{base}/health") as resp:
                assert resp.status == 503
                assert (await resp.json())["status"] == "degraded"
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
            assert families["demo_frames"].samples[0].value == 3
            async with http.get(
                f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            ) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await resp.text()).endswith("# EOF\n")
            async with http.get(f"{base}/nope") as resp:
                assert resp.status == 404
                assert await resp.json() == {"error": "Not Found"}
            async with http.post(f"{base}/health") as resp:
                assert resp.status == 405
                assert (await resp.json())["error"] == "Method Not Allowed"
    finally:
        await runner.cleanup()
