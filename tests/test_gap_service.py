"""Process-level behaviour: the one-shot CLI, SIGTERM, daily jobs, the NOTIFY
listener's reconnect, and the outage records' merging."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from gap_handler.background import NotifyListener, run_daily_jobs
from gap_handler.cli import render_progress, run_backfill
from gap_handler.core.intervals import MinuteRange, history_start
from gap_handler.core.tracker import RangeTask
from gap_handler.store import record_unrecoverable
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.service.retry import jittered_backoff
from quaint.store.candles import fetch_candles
from quaint.store.pool import create_pool
from tests.support.gap_handler import settings_for
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for

T0 = 1_767_225_600_000  # 2026-01-01


async def _true(value: bool) -> bool:
    return value


# ---- CLI ---------------------------------------------------------------------------------


def test_progress_rendering() -> None:
    task = RangeTask("x", "BTCUSDT", MinuteRange(T0, T0 + 100 * MINUTE_MS), 0.0, datetime.now(UTC))
    task.start([MinuteRange(T0, T0 + 100 * MINUTE_MS)])
    task.progress(MinuteRange(T0, T0 + 100 * MINUTE_MS), 25)
    bar = render_progress(task, 5.0, tty=True)
    assert bar.startswith("\r[") and " 25.0% 25/100 min 5 min/s ETA 15s" in bar and "\n" not in bar
    line = render_progress(task, 5.0, tty=False)
    assert line == "progress symbol=BTCUSDT done=25 total=100 rate=5/s eta=15s\n"


async def test_cli_backfill_exit_codes(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_simulator(symbols=["BTCUSDT"], speed=0) as sim:
        now = sim.clock.now_ms()
        settings = settings_for(db_url, sim.rest_url, rate_limit_requests_per_sec=100)
        since = ms_to_datetime(history_start(now, 3)).isoformat()
        out = io.StringIO()
        code = await run_backfill(
            settings, ["--symbol", "btcusdt", "--since", since], out, now_ms=sim.clock.now_ms
        )
        assert code == 0, out.getvalue()
        text = out.getvalue()
        assert "progress symbol=BTCUSDT" in text and text.splitlines()[-1].startswith("complete: ")
        pool = await asyncpg.connect(db_url)
        try:
            stored = await fetch_candles(pool, "BTCUSDT", history_start(now, 3), now - now % MINUTE_MS)
        finally:
            await pool.close()
        assert stored == sim.truth("BTCUSDT", history_start(now, 3), now - now % MINUTE_MS)
        # A symbol the exchange does not list: exchangeInfo says so (-1121) before any
        # klines request or database connection -> one line, exit 2.
        klines_before = sim.stats.requests_by_path["/api/v3/klines"]
        out = io.StringIO()
        capsys.readouterr()
        code = await run_backfill(
            settings, ["--symbol", "FOOBAR", "--since", since], out, now_ms=sim.clock.now_ms
        )
        err = capsys.readouterr().err
        assert code == 2 and out.getvalue() == ""
        assert err.count("\n") == 1 and err.startswith("error: --symbol: FOOBAR is not listed"), err
        assert "Invalid symbol" in err
        assert sim.stats.requests_by_path["/api/v3/klines"] == klines_before
        # Bad arguments -> exit 2 before anything starts.
        for args in (
            ["--symbol", "BTCUSDT", "--since", "last tuesday"],
            ["--symbol", "B!", "--since", since],
        ):
            assert await run_backfill(settings, args, io.StringIO(), now_ms=sim.clock.now_ms) == 2


# ---- SIGTERM -----------------------------------------------------------------------------


async def test_sigterm_checkpoints_in_flight_work_and_exits_0(db_url: str) -> None:
    async with running_simulator(symbols=["BTCUSDT", "ETHUSDT"], speed=1, rest_latency_s=0.3) as sim:
        parts = urlsplit(db_url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "SYMBOLS", "ADMIN"))},
            "DB_HOST": parts.hostname or "",
            "DB_PORT": str(parts.port),
            "DB_USER": parts.username or "",
            "DB_PASSWORD": parts.password or "",
            "DB_NAME": parts.path.lstrip("/"),
            "SYMBOLS": "BTCUSDT,ETHUSDT",
            "BINANCE_REST_URL": sim.rest_url,
            "GAP_HANDLER_PORT": "0",
            "GAP_HANDLER_HOST": "127.0.0.1",
            "HISTORY_DAYS": "20",
            "LOG_FORMAT": "json",
            "RATE_LIMIT_REQUESTS_PER_SEC": "50",
            "SHUTDOWN_DEADLINE_S": "5",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gap_handler",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await sim.wait_for(lambda: sim.stats.total_requests >= 4, 30, "backfill requests")
            proc.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, output.decode()[-2000:]
        log = output.decode()
        # Units stopped at their next page boundary, well inside SHUTDOWN_DEADLINE_S: none
        # had to be cancelled at the deadline (how long the stop takes is not asserted).
        assert '"backfill_checkpointed"' in log and '"gap_handler_stopped"' in log
        assert '"backfill_cancelled_at_deadline"' not in log


# ---- daily jobs ----------------------------------------------------------------------------


class FakePool:
    def __init__(self) -> None:
        self.sql: list[str] = []

    async def fetchval(self, sql: str) -> int:
        self.sql.append(sql)
        return 0


@pytest.mark.parametrize(
    ("start", "expected"),
    [("01:59:59.900", "SELECT quaint_cleanup()"), ("02:59:59.900", "SELECT quaint_resolve_predictions()")],
)
async def test_daily_jobs_run_on_schedule(start: str, expected: str) -> None:
    base = datetime.fromisoformat(f"2026-01-01T{start}+00:00")
    t0 = time.monotonic()
    pool = FakePool()
    task = asyncio.create_task(run_daily_jobs(pool, lambda: base + timedelta(seconds=time.monotonic() - t0)))
    try:
        await wait_for(lambda: _true(bool(pool.sql)), 2, "the job")
        assert pool.sql == [expected]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---- listener ------------------------------------------------------------------------------


async def test_listener_reconnects_after_the_connection_is_killed(db_url: str) -> None:
    parts = urlsplit(db_url)
    kwargs: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port,
        "user": parts.username,
        "password": parts.password,
        "database": parts.path.lstrip("/"),
    }
    payloads: list[str] = []
    connects: list[int] = []
    listener = NotifyListener(
        kwargs, payloads.append, lambda: connects.append(1), lambda: jittered_backoff(0.05, 0.2)
    )
    task = asyncio.create_task(listener.run())
    admin = await asyncpg.connect(db_url)
    try:
        await wait_for(lambda: _true(listener.connected), 30, "listening")
        await admin.execute("SELECT pg_notify('quaint_gaps', 'one')")
        await wait_for(lambda: _true(payloads == ["one"]), 30, "first payload")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
        )
        await wait_for(lambda: _true(len(connects) == 2 and listener.connected), 10, "reconnect")
        await admin.execute("SELECT pg_notify('quaint_gaps', 'two')")
        await wait_for(lambda: _true(payloads == ["one", "two"]), 30, "payload after reconnect")
    finally:
        await admin.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---- outage records ------------------------------------------------------------------------


async def test_outage_pieces_merge_into_one_row(db_url: str) -> None:
    now = datetime.now(UTC)
    db_pool = await create_pool(settings_for(db_url, "http://127.0.0.1:1"))

    def m(a: int, b: int) -> MinuteRange:
        return MinuteRange(T0 + a * MINUTE_MS, T0 + b * MINUTE_MS)

    async with db_pool.acquire() as conn:
        assert await record_unrecoverable(conn, "BTCUSDT", m(10, 20), now, {}) is True
        assert await record_unrecoverable(conn, "BTCUSDT", m(12, 18), now, {}) is False  # inside
        assert await record_unrecoverable(conn, "BTCUSDT", m(30, 40), now, {}) is True  # separate
        assert await record_unrecoverable(conn, "BTCUSDT", m(20, 30), now, {}) is True  # bridges both
        assert await record_unrecoverable(conn, "ETHUSDT", m(10, 20), now, {}) is True  # other symbol
    rows = await db_pool.fetch(
        "SELECT symbol, gap_start, gap_end, candles_missing FROM data_quality_logs"
        " WHERE event_type = 'gap_unrecoverable' ORDER BY symbol"
    )
    assert [(r["symbol"], r["gap_start"], r["gap_end"], r["candles_missing"]) for r in rows] == [
        ("BTCUSDT", ms_to_datetime(T0 + 10 * MINUTE_MS), ms_to_datetime(T0 + 39 * MINUTE_MS), 30),
        ("ETHUSDT", ms_to_datetime(T0 + 10 * MINUTE_MS), ms_to_datetime(T0 + 19 * MINUTE_MS), 10),
    ]
    await db_pool.close()
