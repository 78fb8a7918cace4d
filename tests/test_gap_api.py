"""The HTTP API end to end: real app on a port, real database, simulator behind it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gap_handler.api import GAP_HANDLER_KEY
from gap_handler.core.intervals import DAY_MS, closed_end, due_end, history_start
from gap_handler.service import GapHandler
from tests.support.gap_handler import served_api, settings_for
from tests.support.simulator import SimHandle, running_simulator
from tests.support.waiting import wait_for

TOKEN = "s3cret-token-for-tests"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@dataclass
class Api:
    base: str
    http: aiohttp.ClientSession
    c: GapHandler
    sim: SimHandle

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


async def _serve(db_url: str, token: str | None) -> AsyncIterator[Api]:
    async with running_simulator(symbols=SYMBOLS, speed=0) as sim:
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=SYMBOLS,
            history_days=2,
            admin_token=token,
            rate_limit_requests_per_sec=100,
        )
        async with served_api(settings, sim.clock.now_ms) as (base, app), aiohttp.ClientSession() as http:
            yield Api(base, http, app[GAP_HANDLER_KEY], sim)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async for a in _serve(db_url, TOKEN):
        yield a


async def test_health_and_metrics(api: Api) -> None:
    status, body = await api.call("GET", "/health")
    assert status == 200, body
    assert body["status"] == "healthy" and body["database_status"] == "connected"
    now = api.sim.clock.now_ms()
    minutes = (due_end(now, 70) - history_start(now, 2)) // 60_000
    assert body["backfills_completed"] >= 2 and body["candles_recovered"] == 2 * minutes
    assert body["rate_limit"]["state"] == "ok" and body["listener"] == "connected"
    # What the database says runs the daily jobs: the service here on Apache without pg_cron,
    # TimescaleDB's scheduler on Community.
    assert body["automation"] == await api.c.pool.fetchval("SELECT quaint_automation_mode()")
    status, text = await api.call("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "quaint_gap_handler_rest_requests",
        "quaint_gap_handler_rest_used_weight",
        "quaint_gap_handler_throttle_waits",
        "quaint_gap_handler_gaps_found",
        "quaint_gap_handler_gaps_backfilled",
        "quaint_gap_handler_gaps_unrecoverable",
        "quaint_gap_handler_candles_recovered",
        "quaint_gap_handler_backfill_duration_seconds",
        "quaint_gap_handler_candles_missing_24h",
    ):
        assert name in families, name
    recovered = {
        s.labels["symbol"]: s.value
        for s in families["quaint_gap_handler_candles_recovered"].samples
        if s.name.endswith("_total")
    }
    assert recovered == {"BTCUSDT": minutes, "ETHUSDT": minutes}
    promtool = shutil.which("promtool")
    if promtool is not None:  # Debian package "prometheus"; the parser above runs regardless
        proc = await asyncio.create_subprocess_exec(
            promtool,
            "check",
            "metrics",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        lint, _ = await proc.communicate(text.encode())
        assert proc.returncode == 0, lint.decode()


async def test_health_is_503_when_the_database_is_gone(api: Api) -> None:
    await api.c.pool.close()
    status, body = await api.call("GET", "/health")
    assert status == 503 and body["status"] == "degraded" and body["database_status"] == "unavailable"


async def test_gaps_current_and_recent(api: Api) -> None:
    now = api.sim.clock.now_ms()
    start = history_start(now, 2) + DAY_MS
    await api.c.pool.execute(
        "DELETE FROM candles_1m WHERE symbol = 'BTCUSDT' AND time >= to_timestamp($1 / 1000.0)"
        " AND time < to_timestamp($1 / 1000.0) + interval '10 minutes'",
        start,
    )
    api.c.backfills.stopping = True  # hold the workers: the hole stays visible
    api.c.backfills.request_scan()

    # Listed by the requested scan: not by one already under way before the DELETE (the count
    # of scans done would say "scanned" without the hole: seen under --stress).
    async def listed() -> bool:
        status, body = await api.call("GET", "/gaps?symbol=btcusdt&status=open")
        return status == 200 and bool(body["current"])

    await wait_for(listed, 60, "the hole listed by a scan")
    status, body = await api.call("GET", "/gaps?symbol=btcusdt&status=open")
    assert status == 200 and body["recent"] == []
    assert [(g["symbol"], g["minutes"]) for g in body["current"]] == [("BTCUSDT", 10)]
    status, body = await api.call("GET", "/gaps?status=backfilled")
    assert status == 200 and body["current"] == []
    assert {r["symbol"] for r in body["recent"]} == set(SYMBOLS)
    assert all(r["event_type"] == "gap_backfilled" for r in body["recent"])
    for query, field in (("status=weird", "status"), ("symbol=BAD-1", "symbol"), ("limit=0", "limit")):
        status, body = await api.call("GET", f"/gaps?{query}")
        assert status == 400 and body["field"] == field
    status, body = await api.call("GET", "/gaps?symbol=DOGEUSDT")
    assert status == 404 and body["field"] == "symbol"


async def test_coverage(api: Api) -> None:
    status, body = await api.call("GET", "/coverage?symbol=ETHUSDT&days=3")
    assert status == 200 and len(body["days"]) == 3
    now = api.sim.clock.now_ms()
    oldest, middle, today = body["days"]
    # The service keeps 2 days: the oldest day is covered from that point on only.
    assert oldest["stored"] == 1440 - (history_start(now, 2) % DAY_MS) // 60_000
    assert middle == {**middle, "expected": 1440, "stored": 1440, "missing": 0, "completeness": 1.0}
    assert today["expected"] == (closed_end(now) % DAY_MS) // 60_000
    assert today["stored"] == (due_end(now, 70) % DAY_MS) // 60_000 and today["missing"] <= 1
    for query, field, code in (
        ("days=3", "symbol", 400),
        ("symbol=ETHUSDT&days=0", "days", 400),
        ("symbol=ETHUSDT&days=x", "days", 400),
        ("symbol=ETHUSDT&days=100000", "days", 400),
        ("symbol=NOPEUSDT", "symbol", 404),
    ):
        status, body = await api.call("GET", f"/coverage?{query}")
        assert (status, body.get("field")) == (code, field), query


async def test_post_backfill_runs_and_reports_progress(api: Api) -> None:
    now = api.sim.clock.now_ms()
    start = history_start(now, 2) - DAY_MS  # a day before the service's own window
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"symbol": "ETHUSDT", "start": start, "end": start + DAY_MS}
    status, out = await api.call("POST", "/backfills", json=body, headers=auth)
    assert status == 202, out
    assert out["minutes_total"] == 1440 and out["id"]
    ident = out["id"]

    async def finished() -> bool:
        _, got = await api.call("GET", f"/backfills/{ident}")
        return bool(got["state"] == "complete")

    await wait_for(finished, 30, "requested backfill")
    status, out = await api.call("GET", f"/backfills/{ident}")
    assert status == 200
    assert out["minutes_done"] == 1440 and out["candles_recovered"] == 1440 and out["eta_s"] == 0.0
    assert out["rate_minutes_per_s"] > 0
    status, out = await api.call("GET", "/backfills/does-not-exist")
    assert (status, out["field"]) == (400, "id")
    status, out = await api.call("GET", "/backfills/0123456789abcdef")
    assert (status, out["field"]) == (404, "id")


async def test_post_backfill_rejects_bad_input_and_bad_tokens(api: Api) -> None:
    url = "/backfills"
    good = {"symbol": "BTCUSDT", "start": "2020-01-01"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, out = await api.call("POST", url, json=good, headers=headers)
        assert status == 401 and "error" in out
    auth = {"Authorization": f"Bearer {TOKEN}"}
    now = api.sim.clock.now_ms()
    cases: list[tuple[Any, str, int]] = [
        (b"not json", "body", 400),
        ([1, 2], "body", 400),
        ({"symbol": "BTCUSDT"}, "start", 400),
        ({"symbol": "BTCUSDT", "start": "2025-02-30"}, "start", 400),  # bad date
        ({"symbol": "BTCUSDT", "start": now - 60_000, "end": now - 3_600_000}, "end", 400),  # start > end
        ({"symbol": "BTCUSDT", "start": now - 500 * DAY_MS}, "start", 400),  # oversized
        ({"symbol": "BTCUSDT", "start": now - 60_000, "end": now + DAY_MS}, "end", 400),  # future
        ({"symbol": "NOPEUSDT", "start": now - 60_000}, "symbol", 404),
        ({"symbol": "BTCUSDT", "start": now - 60_000, "force": True}, "force", 400),
    ]
    for body, field, code in cases:
        kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        status, out = await api.call("POST", url, headers=auth, **kw)
        assert (status, out.get("field")) == (code, field), body
    status, out = await api.call("POST", url, headers=auth, data=b"x" * 20_000)
    assert status == 413
    assert api.c.backfills.tasks == {}


async def test_backfills_disabled_without_a_token(db_url: str) -> None:
    async for api in _serve(db_url, None):
        status, out = await api.call("POST", "/backfills", json={}, headers={"Authorization": "Bearer x"})
        assert status == 403 and "ADMIN_TOKEN" in out["error"]
        status, out = await api.call("GET", "/nope")
        assert status == 404 and "error" in out
