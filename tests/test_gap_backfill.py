"""Backfilling against the simulator and a real TimescaleDB: exact rows, rate limits,
exchange outages, NOTIFY latency, restart safety."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from gap_handler.core.intervals import DAY_MS, MinuteRange, due_end, history_start
from gap_handler.service import GapHandler
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.pool import create_pool
from quaint.store.quality import log_event
from quaint.store.quality_event import QualityEvent
from tests.support.gap_handler import assembled, idle, running_service, settings_for
from tests.support.simulator import SimHandle, running_simulator
from tests.support.waiting import wait_for

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
pytestmark = pytest.mark.slow


@asynccontextmanager
async def frozen_sim(**overrides: Any) -> AsyncIterator[SimHandle]:
    # A frozen clock: nothing new becomes due while a test runs, so request counts
    # and row sets are exact.
    overrides.setdefault("symbols", SYMBOLS)
    async with running_simulator(speed=0, **overrides) as sim:
        yield sim


async def _true(value: bool) -> bool:
    return value


def window(sim: SimHandle, days: int) -> MinuteRange:
    now = sim.clock.now_ms()
    return MinuteRange(history_start(now, days), due_end(now, 70))


async def seed(db_url: str, sim: SimHandle, rng: MinuteRange, holes: dict[str, list[MinuteRange]]) -> None:
    """Store the truth for ``rng`` minus ``holes`` (as the feeder would have)."""
    pool = await create_pool(settings_for(db_url, sim.rest_url))
    try:
        async with pool.acquire() as conn:
            for symbol in SYMBOLS:
                cut = holes.get(symbol, [])
                rows = [
                    c
                    for c in sim.truth(symbol, rng.start, rng.end)
                    if not any(h.start <= c.open_time < h.end for h in cut)
                ]
                await upsert_candles(conn, rows, "ws")
    finally:
        await pool.close()


async def assert_equals_truth(pool: asyncpg.Pool, sim: SimHandle, rng: MinuteRange) -> None:
    async with pool.acquire() as conn:
        for symbol in SYMBOLS:
            truth = sim.truth(symbol, rng.start, rng.end)
            stored = await fetch_candles(conn, symbol, rng.start, rng.end)
            assert len(stored) == len(truth), symbol
            assert stored == truth, symbol
    dupes = await pool.fetchval("SELECT count(*) - count(DISTINCT (symbol, time)) FROM candles_1m")
    assert dupes == 0


def klines_requests(sim: SimHandle) -> int:
    """Klines requests the simulator answered (exchangeInfo and the clock samples aside)."""
    return sim.stats.requests_by_path["/api/v3/klines"]


class Recorder:
    """Arrival times (sim wall clock) of every REST request and of every 429/418 answer."""

    def __init__(self, sim: SimHandle) -> None:
        self.arrivals: list[float] = []
        self.answers: list[tuple[float, int]] = []
        stats, clock = sim.stats, sim.clock
        record_request, record_status = stats.record_request, stats.record_status

        def on_request(path: str, now: float) -> None:
            if path.startswith("/api/"):
                self.arrivals.append(now)
            record_request(path, now)

        def on_status(status: int) -> None:
            self.answers.append((clock.wall(), status))
            record_status(status)

        stats.record_request = on_request  # type: ignore[method-assign]
        stats.record_status = on_status  # type: ignore[method-assign]

    def silent_between(self, start: float, end: float) -> bool:
        return not any(start < t < end for t in self.arrivals)


async def test_bootstrap_30_days_at_the_configured_rate(db_url: str) -> None:
    rate = 15.0  # well below what this machine can process, so the limiter is what is measured
    async with frozen_sim() as sim:
        rec = Recorder(sim)
        settings = settings_for(db_url, sim.rest_url, symbols=SYMBOLS, rate_limit_requests_per_sec=rate)
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            await wait_for(idle(c), 60, "bootstrap of 30 days x 2 symbols")
            # From the first request to the last (start-up and schema are not rate-bound).
            span = rec.arrivals[-1] - rec.arrivals[0]
            await assert_equals_truth(c.pool, sim, window(sim, 30))
            stats = sim.stats.snapshot(sim.clock.wall())
            requests = stats["total_requests"]
            assert stats["max_requests_1s"] <= rate
            # 43,200 minutes / 1000 per page = 44 pages per symbol; exchangeInfo and the
            # exchange clock's sample(s) go through the same limiter.
            assert 88 <= klines_requests(sim) <= 90
            assert stats["requests_by_path"]["/api/v3/time"] >= 1
            # Never faster than the rate (a bound on any machine). How close to the rate it
            # gets is performance: `python -m bench backfill` reports it as a ratio to the cap.
            ideal = (requests - 1) / rate
            assert span >= ideal, (span, requests)
            backfilled = await c.pool.fetchval(
                "SELECT sum(candles_recovered) FROM data_quality_logs WHERE event_type = 'gap_backfilled'"
            )
            assert backfilled == c.backfills.candles_recovered == 2 * window(sim, 30).minutes


async def test_a_lock_timeout_is_a_transient_error_retried_not_a_crash(db_url: str) -> None:
    """The first page meets a lock timeout (55P03, transient like a deadlock) on a row another
    session inserted and has not committed: its write is run again with backoff and counted,
    the service keeps running, and once that session rolls back the history is exact."""
    admin = await asyncpg.connect(db_url)
    try:
        # New sessions of this database (the service's pool) give up on a lock after 100 ms.
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE {database} SET lock_timeout = '100ms'")
        async with frozen_sim(symbols=["BTCUSDT"]) as sim:
            rng = window(sim, 1)
            holder = admin.transaction()
            await holder.start()
            await upsert_candles(admin, sim.truth("BTCUSDT", rng.start, rng.start + MINUTE_MS), "ws")
            registry = CollectorRegistry()
            settings = settings_for(db_url, sim.rest_url, symbols=["BTCUSDT"], history_days=1)
            async with running_service(settings, now_ms=sim.clock.now_ms, registry=registry) as c:

                async def retried_twice() -> bool:
                    labels = {"operation": "upsert_candles"}
                    return (
                        registry.get_sample_value("quaint_gap_handler_db_retries_total", labels) or 0
                    ) >= 2

                await wait_for(retried_twice, 30, "two retried page writes")
                assert await c.pool.fetchval("SELECT count(*) FROM candles_1m") == 0  # nothing got past
                await holder.rollback()
                await wait_for(idle(c), 60, "history filled once the row lock is gone")
                async with c.pool.acquire() as conn:
                    stored = await fetch_candles(conn, "BTCUSDT", rng.start, rng.end)
                assert stored == sim.truth("BTCUSDT", rng.start, rng.end)
                assert c.backfills.candles_recovered == rng.minutes
    finally:
        await admin.close()


async def test_a_requested_range_over_running_units_fetches_no_minute_twice(db_url: str) -> None:
    """A requested range submitted while the scan's units over the same minutes are in flight
    (slow REST): its units wait for them, then fetch only what is still missing. Two units
    over the same minutes at once are two writers racing on the same keys (the deadlock of
    tests/test_store_concurrency.py) and requests spent twice."""
    async with frozen_sim(symbols=["BTCUSDT"]) as sim:
        sim.faults.rest_latency_s = 0.3
        rng = window(sim, 2)
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=["BTCUSDT"],
            history_days=2,
            unit_max_pages=1,
            rate_limit_requests_per_sec=100,
        )
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            running = c.backfills.running
            await wait_for(lambda: _true(bool(running["BTCUSDT"])), 30, "the scan's units running")
            task = await c.backfills.submit_range("BTCUSDT", rng)
            await wait_for(lambda: _true(task.done), 60, "the requested range")
            await wait_for(idle(c), 60, "every unit done")
            served = [(first, last) for sym, first, last in sim.stats.klines_served if sym == "BTCUSDT"]
            minutes = [m for first, last in served for m in range(first, last + MINUTE_MS, MINUTE_MS)]
            assert len(minutes) == len(set(minutes)) == rng.minutes  # every minute fetched exactly once
            assert task.state == "complete" and task.minutes_done == task.total_minutes
            async with c.pool.acquire() as conn:
                stored = await fetch_candles(conn, "BTCUSDT", rng.start, rng.end)
            assert stored == sim.truth("BTCUSDT", rng.start, rng.end)


async def test_punched_holes_are_filled_exactly(db_url: str) -> None:
    async with frozen_sim() as sim:
        rng = window(sim, 30)
        s = rng.start
        holes = {
            "BTCUSDT": [
                MinuteRange(s, s + 5 * MINUTE_MS),  # head
                MinuteRange(s + DAY_MS, s + DAY_MS + MINUTE_MS),  # one minute
                MinuteRange(s + 10 * DAY_MS, s + 11 * DAY_MS + 7 * MINUTE_MS),  # > 1 page
                MinuteRange(rng.end - 30 * MINUTE_MS, rng.end),
            ],  # tail
            "ETHUSDT": [MinuteRange(s + 3 * DAY_MS + 17 * MINUTE_MS, s + 3 * DAY_MS + 2017 * MINUTE_MS)],
        }
        await seed(db_url, sim, rng, holes)
        settings = settings_for(db_url, sim.rest_url, symbols=SYMBOLS, rate_limit_requests_per_sec=50)
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            await wait_for(idle(c), 30, "holes filled")
            await assert_equals_truth(c.pool, sim, rng)
            # Only the holes were asked for: 1 + 1 + 2 + 1 pages, 2 pages.
            assert klines_requests(sim) == 7
            rows = await c.pool.fetch(
                "SELECT symbol, gap_start, gap_end, candles_recovered FROM data_quality_logs"
                " WHERE event_type = 'gap_backfilled' ORDER BY symbol, gap_start"
            )
            got = [(r["symbol"], r["gap_start"], r["gap_end"], r["candles_recovered"]) for r in rows]
            want = [
                (sym, ms_to_datetime(h.start), ms_to_datetime(h.end - MINUTE_MS), h.minutes)
                for sym in SYMBOLS
                for h in holes[sym]
            ]
            assert got == want
            assert c.backfills.backfills_completed == 5


async def test_429_burst_and_418_ban_are_honoured(db_url: str) -> None:
    async with frozen_sim(weight_window_s=1, ban_after=0, ban_s=2) as sim:
        rec = Recorder(sim)
        sim.faults.add_rest_fault(429, count=3, retry_after_s=1, path="/api/v3/klines")
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=SYMBOLS,
            history_days=1,
            backfill_batch_size=200,
            rate_limit_requests_per_sec=20,
        )
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            await sim.wait_for(
                lambda: any(s == 200 for _, s in rec.answers[3:]), 30, "a success after the 429s"
            )
            # Ban this client's address outright: its next request is answered 418.
            limiter = sim.state.limiter
            limiter.charge("127.0.0.1", limiter.limit + 1, int(sim.clock.wall() * 1000))
            await sim.wait_for(lambda: any(s == 418 for _, s in rec.answers), 30, "the 418")
            await wait_for(lambda: _async(c.fetcher.rate_state().state == "banned"), 5, "banned state")
            health = await _health(c)
            assert health["rate_limit"]["state"] == "banned" and health["rate_limit"]["until"]
            await wait_for(idle(c), 30, "backfill after the ban")
            await assert_equals_truth(c.pool, sim, window(sim, 1))
        statuses = [s for _, s in rec.answers]
        assert statuses.count(429) == 3 and statuses.count(418) >= 1
        for t, status in rec.answers:
            pause = {429: 1.0, 418: 2.0}.get(status)
            if pause is not None:
                # Requests already in flight may land within a few ms; nothing later.
                assert rec.silent_between(t + 0.05, t + pause - 0.05), (status, t)


async def _async(value: bool) -> bool:
    return value


async def _health(c: GapHandler) -> dict[str, Any]:
    report = await c.health()
    return {"status": report.status, **report.body}


async def test_exchange_outage_is_recorded_once_and_never_requested_again(db_url: str) -> None:
    async with frozen_sim() as sim:
        rng = window(sim, 30)
        # ETHUSDT's outage spans three work units (10,000 minutes each); BTCUSDT's sits mid-page.
        short = MinuteRange(rng.start + 3 * DAY_MS + 7 * MINUTE_MS, rng.start + 3 * DAY_MS + 12 * MINUTE_MS)
        long = MinuteRange(rng.start + 5 * DAY_MS, rng.start + 5 * DAY_MS + 25_000 * MINUTE_MS)
        sim.faults.add_outage(short.start, short.end, "BTCUSDT")
        sim.faults.add_outage(long.start, long.end, "ETHUSDT")
        settings = settings_for(db_url, sim.rest_url, symbols=SYMBOLS, rate_limit_requests_per_sec=100)
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            await wait_for(idle(c), 60, "bootstrap with outages")
            await assert_equals_truth(c.pool, sim, rng)
            rows = await c.pool.fetch(
                "SELECT symbol, gap_start, gap_end, candles_missing FROM data_quality_logs"
                " WHERE event_type = 'gap_unrecoverable' ORDER BY symbol"
            )
            got = [(r["symbol"], r["gap_start"], r["gap_end"], r["candles_missing"]) for r in rows]
            assert got == [
                # gap_end is the last missing minute, as the feeder writes it.
                ("BTCUSDT", ms_to_datetime(short.start), ms_to_datetime(short.end - MINUTE_MS), 5),
                ("ETHUSDT", ms_to_datetime(long.start), ms_to_datetime(long.end - MINUTE_MS), 25_000),
            ]
            before = klines_requests(sim)
            for n in (2, 3):
                c.backfills.request_scan()
                await wait_for(idle(c, min_scans=c.backfills.scans + 1), 30, f"scan {n}")
            c.backfills._last_full = float("-inf")  # force a full rescan of the window too
            c.backfills.request_scan()
            await wait_for(idle(c, min_scans=c.backfills.scans + 1), 30, "full rescan")
            assert klines_requests(sim) == before
            assert (
                await c.pool.fetchval(
                    "SELECT count(*) FROM data_quality_logs WHERE event_type = 'gap_unrecoverable'"
                )
                == 2
            )
            assert all(not holes for holes in c.backfills.current_holes.values())


async def test_notify_starts_backfill_without_waiting_for_a_scan(db_url: str) -> None:
    """The feeder's gap_detected row starts a backfill at once: with the periodic scan an
    hour away, only the NOTIFY can have started it. (How fast: `python -m bench backfill`,
    notify_to_request_over_cap_interval.)"""
    async with frozen_sim() as sim:
        rng = window(sim, 2)
        await seed(db_url, sim, rng, {})
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=SYMBOLS,
            history_days=2,
            backfill_check_interval_s=3600,
            full_scan_interval_s=3600,
        )
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            await wait_for(idle(c), 30, "first scan")
            await wait_for(lambda: _async(c.listener.connected), 30, "listener")
            before = klines_requests(sim)
            hole = MinuteRange(rng.start + DAY_MS, rng.start + DAY_MS + 30 * MINUTE_MS)
            await c.pool.execute(
                "DELETE FROM candles_1m WHERE symbol = 'ETHUSDT' AND time >= $1 AND time < $2",
                ms_to_datetime(hole.start),
                ms_to_datetime(hole.end),
            )
            async with c.pool.acquire() as conn:
                await log_event(
                    conn,
                    QualityEvent(
                        "gap_detected",
                        symbol="ETHUSDT",
                        gap_start=ms_to_datetime(hole.start),
                        gap_end=ms_to_datetime(hole.end - MINUTE_MS),
                        candles_missing=30,
                        source="ws",
                    ),
                )
            await sim.wait_for(lambda: klines_requests(sim) > before, 30, "a klines request")
            await wait_for(idle(c, c.backfills.scans), 30, "hole filled")
            await assert_equals_truth(c.pool, sim, rng)
            row = await c.pool.fetchrow(
                "SELECT resolved, resolved_at FROM data_quality_logs WHERE event_type = 'gap_detected'"
            )
            assert row is not None and row["resolved"] and row["resolved_at"] is not None


async def test_crash_mid_backfill_resumes_without_gaps_or_refetching(db_url: str) -> None:
    async with frozen_sim(rest_latency_s=0.05) as sim:
        rng = window(sim, 10)
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=SYMBOLS,
            history_days=10,
            rate_limit_requests_per_sec=50,
            max_concurrent_backfills=2,
        )
        async with assembled(settings, now_ms=sim.clock.now_ms) as c:
            run = asyncio.create_task(c.run())
            await wait_for(_count_at_least(c.pool, 5000), 30, "some pages committed")
            # A crash: the service is cancelled mid-request, nothing is checkpointed.
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
        first_requests = klines_requests(sim)
        committed = await _count(settings)
        assert 0 < committed < 2 * rng.minutes
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            await wait_for(idle(c), 30, "resumed backfill")
            await assert_equals_truth(c.pool, sim, rng)
        resumed = klines_requests(sim) - first_requests
        pages_left = -(-(2 * rng.minutes - committed) // 1000)
        # What was missing, plus at most one partly fetched page per unit.
        assert resumed <= pages_left + 4, (resumed, pages_left)


async def _count(settings: Any) -> int:
    conn = await asyncpg.connect(
        host=settings.db_host,
        port=settings.db_port,
        user=settings.db_user,
        password=settings.db_password.get_secret_value(),
        database=settings.db_name,
    )
    try:
        return int(await conn.fetchval("SELECT count(*) FROM candles_1m"))
    finally:
        await conn.close()


def _count_at_least(pool: asyncpg.Pool, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int(await pool.fetchval("SELECT count(*) FROM candles_1m")) >= n

    return check
