"""History from the simulator's archives over real HTTP into a real TimescaleDB: every minute
equals the truth, each file an archive cannot serve is one quality row and comes from REST
(checksum failing twice, a truncated file, a 404 month), and a re-run changes nothing."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest

from gap_handler.archive_fill import ArchiveStats
from gap_handler.bootstrap import render, run_bootstrap
from gap_handler.core.intervals import MinuteRange, due_end, history_start
from gap_handler.core.tracker import RangeTask
from gap_handler.service import spec
from quaint.binance.archive import ArchiveFile
from quaint.binance.models import MINUTE_MS
from quaint.store.candles import fetch_candles
from tests.support.gap_handler import idle, running_service, settings_for
from tests.support.services import served
from tests.support.simulator import SimHandle, running_simulator
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
START = "2025-03-10T12:00:00Z"  # frozen: 2025-01, 2025-02 monthly and 2025-03-01..09 daily published


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    async with running_simulator(symbols=SYMBOLS, speed=0, start=START, seed=11, history_days=120) as handle:
        yield handle


def archive_settings(db_url: str, sim: SimHandle, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "symbols": SYMBOLS,
        "archive_enabled": True,
        "archive_base_url": sim.rest_url,
        "history_days": 60,
        "rate_limit_requests_per_sec": 50.0,
        "backfill_check_interval_s": 3600.0,
    }
    values.update(overrides)
    return settings_for(db_url, sim.rest_url, **values)


async def assert_equals_truth(pool: asyncpg.Pool, sim: SimHandle, rng: MinuteRange) -> None:
    async with pool.acquire() as conn:
        for symbol in SYMBOLS:
            truth = sim.truth(symbol, rng.start, rng.end)
            stored = await fetch_candles(conn, symbol, rng.start, rng.end)
            assert len(stored) == len(truth) == rng.minutes, symbol
            assert stored == truth, symbol


async def archive_events(pool: asyncpg.Pool) -> list[tuple[str, str, int, int, int]]:
    rows = await pool.fetch(
        """SELECT symbol, event_type AS kind, gap_start, gap_end, candles_missing
           FROM data_quality_logs WHERE source = 'archive' AND event_type LIKE 'archive%'
           ORDER BY symbol, kind"""
    )
    return [
        (
            r["symbol"],
            r["kind"],
            int(r["gap_start"].timestamp() * 1000),
            int(r["gap_end"].timestamp() * 1000) + MINUTE_MS,
            r["candles_missing"],
        )
        for r in rows
    ]


async def test_history_from_archives_with_fallbacks_equals_truth(db_url: str, sim: SimHandle) -> None:
    feb = ArchiveFile.parse("BTCUSDT", "2025-02")
    jan = ArchiveFile.parse("ETHUSDT", "2025-01")
    day = ArchiveFile.parse("ETHUSDT", "2025-03-03")
    faults = sim.faults.archive
    faults.add("checksum", feb, count=2)  # wrong on both attempts: REST for the month
    faults.add("missing", jan)  # 404: its daily files instead
    faults.add("truncated", day, rows=100)  # the rest of the day from REST
    settings = archive_settings(db_url, sim)
    now = sim.clock.now_ms()
    rng = MinuteRange(history_start(now, 60), due_end(now, 70))
    async with running_service(settings, now_ms=sim.clock.now_ms) as handler:
        await wait_for(idle(handler), 120, "history filled")
        pool = handler.pool
        await assert_equals_truth(pool, sim, rng)
        events = await archive_events(pool)
        truncated_from = day.start_ms + 100 * MINUTE_MS
        assert events == [
            ("BTCUSDT", "archive_checksum_mismatch", feb.start_ms, feb.end_ms, feb.minutes),
            ("ETHUSDT", "archive_missing", rng.start, jan.end_ms, (jan.end_ms - rng.start) // MINUTE_MS),
            (
                "ETHUSDT",
                "archive_short",
                truncated_from,
                day.end_ms,
                (day.end_ms - truncated_from) // MINUTE_MS,
            ),
        ]
        sources = {
            r["source"]: r["n"]
            for r in await pool.fetch("SELECT source, count(*) AS n FROM candles_1m GROUP BY source")
        }
        # Archives served most of it; REST the faulted files, the lag days and the cross-checks.
        assert sources["archive"] > sources["rest"] > feb.minutes
        stats = handler.backfills.archive.stats if handler.backfills.archive else None
        assert stats is not None and stats.mismatches == 0 and stats.cross_checks >= 1

        # Idempotent: importing the same minutes again writes nothing and logs nothing new.
        assert handler.backfills.archive is not None
        written, left = await handler.backfills.archive.fill(
            "ETHUSDT", [MinuteRange(ArchiveFile.parse("ETHUSDT", "2025-02").start_ms, day.start_ms)]
        )
        assert (written, left) == (0, [])
        assert await archive_events(pool) == events


async def test_bootstrap_cli_against_the_simulator(db_url: str, sim: SimHandle) -> None:
    settings = archive_settings(db_url, sim)
    since, until = "2025-02-20", "2025-03-10T06:00:00Z"
    argv = ["--symbols", "btcusdt,ETHUSDT", "--since", since, "--until", until]
    out = io.StringIO()
    assert await run_bootstrap(settings, argv, out, now_ms=sim.clock.now_ms) == 0, out.getvalue()
    text = out.getvalue()
    assert "bootstrap_progress files=" in text  # not a terminal: log lines, no bar
    assert "BTCUSDT: complete" in text and "ETHUSDT: complete" in text
    # February 20..28 from the monthly file, March 1..7 daily files, both symbols.
    assert "archives: 16 files" in text and "0 mismatches" in text, text
    rng = MinuteRange(ms_of("2025-02-20T00:00:00Z"), ms_of(until))
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        await assert_equals_truth(pool, sim, rng)
        before = await pool.fetchval("SELECT count(*) FROM data_quality_logs")
        out = io.StringIO()
        # A re-run finds nothing missing: no file is fetched, nothing is written or logged.
        assert await run_bootstrap(settings, argv, out, now_ms=sim.clock.now_ms) == 0
        assert "archives: 0 files" in out.getvalue() and "0 candles stored" in out.getvalue()
        assert await pool.fetchval("SELECT count(*) FROM data_quality_logs") == before
    finally:
        await pool.close()
    for bad in (["--symbols", ",", "--since", since], ["--symbols", "BTCUSDT", "--since", "soon"]):
        assert await run_bootstrap(settings, bad, io.StringIO(), now_ms=sim.clock.now_ms) == 2


def test_bootstrap_progress_rendering() -> None:
    task = RangeTask("x", "BTCUSDT", MinuteRange(0, 100 * MINUTE_MS), 0.0, datetime.now(UTC))
    task.start([MinuteRange(0, 100 * MINUTE_MS)])
    task.progress(MinuteRange(0, 100 * MINUTE_MS), 25)
    stats = ArchiveStats(files=3, bytes=2_500_000)
    bar = render([task], stats, 0.0, 5.0, tty=True)
    assert bar.startswith("\r") and "\n" not in bar
    assert " 25.0% files 3 candles 25/100 2.5 MB 5 min/s ETA 15s" in bar
    assert render([task], stats, 0.0, 5.0, tty=False) == (
        "bootstrap_progress files=3 minutes=25/100 mb=2.5 eta=15s\n"
    )


def ms_of(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# 1.1 million candles imported and each compared with the truth: minutes of work on a slow, busy
# machine (the fill's own deadline below is 900 s), past the suite's default 120 s.
@pytest.mark.timeout(1200)
async def test_thirteen_months_of_two_symbols_equal_the_truth(db_url: str) -> None:
    """The archive path at full size: 13 months x 2 symbols, REST only for the lag days and the
    cross-checks; every minute compared with the simulator's truth, a month at a time."""
    sim_args: dict[str, Any] = {"speed": 0, "start": START, "seed": 5, "history_days": 420}
    async with running_simulator(symbols=SYMBOLS, **sim_args) as sim:
        settings = archive_settings(db_url, sim, history_days=400, rate_limit_requests_per_sec=10.0)
        now = sim.clock.now_ms()
        rng = MinuteRange(history_start(now, 400), due_end(now, 70))
        async with running_service(settings, now_ms=sim.clock.now_ms) as handler:
            await wait_for(idle(handler), 900, "13 months filled")
            archive = handler.backfills.archive
            assert archive is not None and archive.stats.fallbacks == 0 and archive.stats.mismatches == 0
            # Monthly files for every whole past month of both symbols (and this month's days).
            assert archive.stats.files >= 2 * 13
            start = rng.start
            while start < rng.end:
                end = min(rng.end, start + 31 * 1440 * MINUTE_MS)
                await assert_equals_truth(handler.pool, sim, MinuteRange(start, end))
                start = end
            rest = await handler.pool.fetchval("SELECT count(*) FROM candles_1m WHERE source = 'rest'")
            assert 0 < rest < 2 * 3 * 1440  # the lag days and today only


async def test_cross_check_stores_rest_rows_where_an_archive_differs(db_url: str, sim: SimHandle) -> None:
    """Archives from another exchange (a simulator with another seed): the one REST page per
    file differs, is logged as archive_mismatch, and REST's rows are what is stored there."""
    async with running_simulator(symbols=SYMBOLS, speed=0, start=START, seed=99, history_days=120) as other:
        settings = archive_settings(db_url, sim, archive_base_url=other.rest_url)
        argv = ["--symbols", "BTCUSDT", "--since", "2025-03-01", "--until", "2025-03-03"]
        out = io.StringIO()
        assert await run_bootstrap(settings, argv, out, now_ms=sim.clock.now_ms) == 0, out.getvalue()
        assert "archives: 2 files" in out.getvalue() and "2 mismatches" in out.getvalue()
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        try:
            rows = await pool.fetch(
                """SELECT gap_start, gap_end, details->>'file' AS file FROM data_quality_logs
                   WHERE details->>'kind' = 'archive_mismatch' ORDER BY gap_start"""
            )
            assert [r["file"].rsplit("/", 1)[1] for r in rows] == [
                "BTCUSDT-1m-2025-03-01.zip",
                "BTCUSDT-1m-2025-03-02.zip",
            ]
            async with pool.acquire() as conn:
                for r in rows:
                    lo = int(r["gap_start"].timestamp() * 1000)
                    hi = int(r["gap_end"].timestamp() * 1000) + MINUTE_MS
                    assert (hi - lo) // MINUTE_MS == 1000
                    assert await fetch_candles(conn, "BTCUSDT", lo, hi) == sim.truth("BTCUSDT", lo, hi)
                    # Outside the checked page the (other) archive's rows stand.
                    before = await fetch_candles(conn, "BTCUSDT", lo - 10 * MINUTE_MS, lo)
                    assert (
                        before
                        == other.truth("BTCUSDT", lo - 10 * MINUTE_MS, lo)
                        != sim.truth("BTCUSDT", lo - 10 * MINUTE_MS, lo)
                    )
        finally:
            await pool.close()


async def test_a_requested_backfill_takes_archives_first(db_url: str, sim: SimHandle) -> None:
    token = "t" * 32
    settings = archive_settings(db_url, sim, history_days=1, admin_token=token)
    day = ArchiveFile.parse("ETHUSDT", "2025-03-02")
    rng = MinuteRange(day.start_ms - 1440 * MINUTE_MS, day.end_ms)  # March 1st and 2nd
    async with (
        served(spec(settings, now_ms=sim.clock.now_ms)) as handle,
        aiohttp.ClientSession() as http,
    ):
        await wait_for(idle(handle.service), 30, "the first scan's work")
        async with http.post(
            handle.url + "/backfills",
            json={"symbol": "ETHUSDT", "start": rng.start, "end": rng.end},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 202, await resp.text()
            ident = (await resp.json())["id"]

        async def complete() -> bool:
            async with http.get(f"{handle.url}/backfills/{ident}") as resp:
                return bool((await resp.json())["state"] == "complete")

        await wait_for(complete, 60, "the request complete")
        pool = handle.service.pool
        async with pool.acquire() as conn:
            assert await fetch_candles(conn, "ETHUSDT", rng.start, rng.end) == sim.truth(
                "ETHUSDT", rng.start, rng.end
            )
        sources = await pool.fetch(
            """SELECT source, count(*) AS n FROM candles_1m WHERE symbol = 'ETHUSDT'
               AND time >= to_timestamp($1 / 1000.0) AND time < to_timestamp($2 / 1000.0) GROUP BY 1""",
            rng.start,
            rng.end,
        )
        assert {r["source"]: r["n"] for r in sources} == {"archive": rng.minutes}
