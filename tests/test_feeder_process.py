"""The feeder as a process and through a database outage.

* PostgreSQL stopped for 30 s mid-stream: the feeder keeps reading, buffers, reports
  degraded, then flushes everything in order: no closed candle lost. Stopping the
  server needs the private cluster started by the test harness (found through
  ``SHOW data_directory``, driven with ``scripts/pg_cluster.sh``); against an external
  server (``TEST_DATABASE_URL``) or a Docker one the test is skipped.
* ``python -m feeder``: /health and /metrics (checked by promtool when installed),
  and SIGTERM flushes the buffer and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from quaint.binance.models import MINUTE_MS
from quaint.service.settings import db_env_from_url
from tests.support.database import PgServer
from tests.support.feeder import (
    SIM_START,
    connect,
    metric_value,
    minute_of,
    quality_rows,
    sim_and_feeder,
    stored_candles,
    until_sim,
    wait_stored,
)
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for, wait_until

ROOT = Path(__file__).resolve().parents[1]
FIRST = minute_of(SIM_START)
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
OUTAGE_S = 30.0


async def cluster(command: str, datadir: str) -> None:
    args = [str(ROOT / "scripts" / "pg_cluster.sh"), command, "--dir", datadir]
    if command == "start":
        args.append("--fast")  # the harness's settings (the config is rewritten on each start)
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )  # not subprocess.run: the feeder under test shares this event loop and must keep reading
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.fixture
async def datadir(pg_server: PgServer) -> str:
    if pg_server.source != "local":
        pytest.skip(f"the PostgreSQL server is {pg_server.source}, not a private cluster this test may stop")
    conn = await asyncpg.connect(pg_server.url)
    try:
        return str(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_postgres_stopped_for_30_s_loses_no_closed_candle(db_url: str, datadir: str) -> None:
    async with sim_and_feeder(db_url, SYMBOLS, max_buffered_rows=50_000) as (s, f):
        await until_sim(s, FIRST + 2 * MINUTE_MS + 2_000)
        await wait_stored(db_url, s, SYMBOLS, FIRST, FIRST + 2 * MINUTE_MS)
        before = (await f.health())[1]["status"]
        stopped_at = time.monotonic()
        await cluster("stop", datadir)
        try:

            async def degraded() -> bool:
                status, body = await f.health()
                return status == 503 and body["database_status"] == "unavailable"

            await wait_for(degraded, 30, "health degraded")
            degraded_at = time.monotonic()  # the feeder's outage had begun by now
            _, during = await f.health()
            await wait_until(
                lambda: time.monotonic() - stopped_at >= OUTAGE_S and f.feeder.acc.candle_depth > 0,
                OUTAGE_S + 10,
                f"{OUTAGE_S:g} s of outage with candles buffered",
            )
            buffered = f.feeder.acc.candle_depth
        finally:
            await cluster("start", datadir)
        restarted_at = time.monotonic()  # the feeder's outage cannot have ended before now

        async def healthy() -> bool:
            status, body = await f.health()
            return status == 200 and body["database_status"] == "connected"

        await wait_for(healthy, 30, "health healthy again")
        healthy_at = time.monotonic()  # ... and had ended by now
        end = minute_of(s.clock.now_ms()) + MINUTE_MS
        await until_sim(s, end + 2_000)
        await wait_stored(db_url, s, SYMBOLS, FIRST, end)
    assert before == "healthy"
    assert during["status"] == "degraded" and during["websocket_connected"] is True
    assert buffered >= 2 * 20  # ~30 simulated minutes of two symbols waited in memory
    for sym in SYMBOLS:
        assert await stored_candles(db_url, sym, FIRST, end) == s.truth(sym, FIRST, end)
    assert await quality_rows(db_url, "gap_detected") == []
    assert await quality_rows(db_url, "data_dropped") == []
    outages = await quality_rows(db_url, "db_unavailable")
    assert len(outages) == 1
    # The recorded duration lies within what the test saw (1 s for wall vs monotonic clocks).
    recorded = outages[0]["details"]["duration_s"]
    assert restarted_at - degraded_at - 1 <= recorded <= healthy_at - stopped_at + 1


def feeder_env(db_url: str, ws_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "FEEDER_", "BATCH_"))}
    env.update(db_env_from_url(db_url))
    env.update(
        SYMBOLS="btcusdt,ETHUSDT",
        BINANCE_WS_URL=ws_url,
        FEEDER_HOST="127.0.0.1",
        FEEDER_PORT="0",
        LOG_FORMAT="json",
        BOOK_TICKER_MODE="all",
        BATCH_SIZE="100000",
        BATCH_MAX_ROWS="100000",
        BATCH_TIMEOUT_MS="600000",
        SHUTDOWN_FLUSH_TIMEOUT_S="10",
    )
    return env


@pytest.mark.slow
async def test_process_serves_health_and_metrics_and_flushes_on_sigterm(db_url: str) -> None:
    # Real time: no candle closes during the test, and book ticks wait for a batch
    # that never fills, so only the shutdown flush can write them.
    async with running_simulator(start=SIM_START, speed=1, symbols=SYMBOLS, book_rate=20) as s:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "feeder",
            env=feeder_env(db_url, s.ws_url),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        lines: list[dict[str, object]] = []
        try:
            async with asyncio.timeout(30):
                while not any(line.get("event") == "feeder_http_listening" for line in lines):
                    raw = await proc.stdout.readline()
                    assert raw, f"feeder exited early: {lines[-5:]}"
                    lines.append(orjson.loads(raw))
            port = next(int(str(x["port"])) for x in lines if x.get("event") == "feeder_http_listening")
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:

                async def ticks_seen() -> bool:
                    async with http.get(base + "/metrics") as resp:
                        text = await resp.text()
                    return (
                        metric_value(text, "feeder_messages_received_total", stream_type="bookTicker") >= 40
                    )

                await wait_for(ticks_seen, 30, "book ticks received")
                async with http.get(base + "/health") as resp:
                    health_status, health = resp.status, await resp.json()
                async with http.get(base + "/metrics") as resp:
                    exposition = await resp.text()
            written_before = await book_rows(db_url)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                rest = await proc.stdout.read()
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    events = [orjson.loads(x)["event"] for x in rest.splitlines() if x.startswith(b"{")]
    assert code == 0, events
    assert "feeder_stopped" in events
    assert written_before == 0  # nothing was flushed by size or time...
    assert await book_rows(db_url) >= 40  # ...so the shutdown flush wrote them
    assert health_status == 200 and health["status"] == "healthy"
    assert health["candles_processed"] == 0 and health["last_candle_time"] is None
    promtool = shutil.which("promtool")
    if promtool is not None:
        check = await asyncio.create_subprocess_exec(
            promtool,
            "check",
            "metrics",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        lint, _ = await check.communicate(exposition.encode())
        assert check.returncode == 0 and not lint.strip(), lint.decode()
    assert metric_value(exposition, "feeder_ws_connections_open") == 1


async def book_rows(db_url: str) -> int:
    conn = await connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM book_ticker"))
    finally:
        await conn.close()


async def test_bad_configuration_exits_2_with_one_line_per_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("BOOK_TICKER_MODE", "BATCH_SIZE")}
    env.update(BOOK_TICKER_MODE="sometimes", BATCH_SIZE="0", DB_PASSWORD="hunter2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "feeder", env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2
    assert sorted(line.split(":")[1].strip() for line in lines) == ["BATCH_SIZE", "BOOK_TICKER_MODE"]
    assert b"hunter2" not in out + err
