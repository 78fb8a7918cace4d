"""Requested backfills survive a restart (``backfill_requests``): the sans-I/O
bookkeeping, then the service stopped or crashed mid-request and started again on the
same database, against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import hypothesis
import pytest
from hypothesis import strategies as st

from gap_handler.core.intervals import DAY_MS, MinuteRange, history_start
from gap_handler.core.tracker import RangeTask, RequestRecord
from gap_handler.core.validation import BadInput, parse_backfill_id, parse_backfill_state
from gap_handler.service import GapHandler, spec
from gap_handler.settings import GapHandlerSettings
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.store.candles import fetch_candles
from tests.support.gap_handler import assembled, idle, settings_for
from tests.support.services import served
from tests.support.simulator import SimHandle, running_simulator
from tests.support.waiting import wait_for

M = MINUTE_MS
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
AT = datetime(2025, 1, 2, tzinfo=UTC)
TOKEN = "durable-token-0123456789"
SYMBOL = "ETHUSDT"


def r(a: int, b: int) -> MinuteRange:
    return MinuteRange(T0 + a * M, T0 + b * M)


# ---- sans-I/O: RangeTask.resume, unit_stopped, RequestRecord ------------------------


def test_resumed_totals_keep_the_first_start_and_count_what_is_filled() -> None:
    # First start: 100 minutes missing. After the restart 40 are still missing (two units).
    task = RangeTask("0123456789abcdef", SYMBOL, r(0, 200), created_mono=50.0, created_at=AT)
    a, b = r(100, 130), r(170, 180)
    task.resume([a, b], total=100, recovered=45, unrecoverable=5)
    assert task.state == "running" and not task.done
    assert (task.total_minutes, task.minutes_done) == (100, 60)
    # 60 filled, 5 of them proven absent: the 10 a crash left uncounted are recovered too.
    assert (task.recovered, task.unrecoverable_minutes) == (55, 5)
    assert task.rate_per_s(60.0) == 0.0 and task.eta_s(60.0) is None  # nothing done *here* yet
    task.progress(a, 20)
    assert task.rate_per_s(60.0) == 2.0 and task.eta_s(60.0) == 10.0
    task.unit_finished(a, recovered=30, unrecoverable=0, complete=True, now=65.0)
    task.unit_finished(b, recovered=10, unrecoverable=0, complete=True, now=70.0)
    assert task.state == "complete" and task.minutes_done == task.total_minutes == 100
    assert task.recovered + task.unrecoverable_minutes == task.minutes_done


def test_resume_when_more_is_missing_or_nothing_is_left() -> None:
    grown = RangeTask("0123456789abcdef", SYMBOL, r(0, 200), created_mono=0.0, created_at=AT)
    grown.resume([r(0, 120)], total=100, recovered=100, unrecoverable=0)  # rows deleted since
    assert (grown.total_minutes, grown.minutes_done, grown.recovered) == (120, 0, 100)
    done = RangeTask("0123456789abcdef", SYMBOL, r(0, 200), created_mono=7.0, created_at=AT)
    done.resume([], total=100, recovered=100, unrecoverable=0)
    assert done.state == "complete" and done.done and done.minutes_done == 100 and done.eta_s(9.0) == 0.0


def test_a_unit_cut_short_by_shutdown_keeps_the_task_open() -> None:
    task = RangeTask("0123456789abcdef", SYMBOL, r(0, 100), created_mono=0.0, created_at=AT)
    a, b = r(0, 50), r(50, 100)
    task.start([a, b])
    task.unit_finished(a, recovered=50, unrecoverable=0, complete=True, now=1.0)
    task.progress(b, 20)
    task.unit_stopped(b, recovered=20, unrecoverable=0)
    assert task.state == "running" and not task.done
    rec = task.record()
    assert (rec.state, rec.finished_at, rec.minutes_done, rec.candles_recovered) == ("running", None, 70, 70)
    # The same cut as a decided outcome would have finished the task:
    other = RangeTask("0123456789abcdef", SYMBOL, r(0, 100), created_mono=0.0, created_at=AT)
    other.start([a])
    other.unit_finished(a, recovered=20, unrecoverable=0, complete=False, now=1.0)
    assert other.state == "incomplete" and other.record().finished_at is not None


def test_record_times_and_json_shape() -> None:
    taken = AT + timedelta(hours=5)  # resumed five hours after it was requested
    task = RangeTask("0123456789abcdef", SYMBOL, r(0, 10), created_mono=100.0, created_at=AT, taken_at=taken)
    task.start([r(0, 10)])
    task.unit_finished(r(0, 10), recovered=10, unrecoverable=0, complete=True, now=102.5)
    rec = task.record()
    assert rec.requested_at == AT and rec.finished_at == taken + timedelta(seconds=2.5)
    live = task.as_json(200.0)
    assert set(rec.as_json()) == set(live)
    assert {k: v for k, v in rec.as_json().items() if k != "rate_minutes_per_s"} == {
        k: v for k, v in live.items() if k != "rate_minutes_per_s"
    }
    stored = RequestRecord(
        "0123456789abcdef",
        SYMBOL,
        r(0, 600),
        "complete",
        AT,
        AT,
        AT + timedelta(seconds=60),
        600,
        600,
        590,
        10,
        None,
    )
    body = stored.as_json()
    assert body["rate_minutes_per_s"] == 10.0 and body["eta_s"] == 0.0
    assert body["start"] == "2025-01-01T00:00:00+00:00" and body["created_at"] == AT.isoformat()
    waiting = RequestRecord(
        "0123456789abcdef", SYMBOL, r(0, 600), "running", AT, AT, None, 600, 100, 100, 0, None
    )
    assert waiting.as_json()["eta_s"] is None and waiting.as_json()["rate_minutes_per_s"] == 0.0


def test_backfill_id_and_state_validation() -> None:
    assert parse_backfill_id("0123456789ABCDEF") == "0123456789abcdef"
    for bad in (
        "",
        "does-not-exist",
        "0123456789abcde",
        "0123456789abcdef0",
        "0123456789abcdeg",
        "0123456789abcdef\n",
        " 0123456789abcdef",
        "０123456789abcdef",
    ):
        with pytest.raises(BadInput) as exc:
            parse_backfill_id(bad)
        assert (exc.value.field, exc.value.status) == ("id", 400), bad
    assert parse_backfill_state(None) is None and parse_backfill_state("") is None
    assert parse_backfill_state("running") == "running"
    with pytest.raises(BadInput, match="state"):
        parse_backfill_state("RUNNING")


@hypothesis.settings(max_examples=1000, deadline=None)
@hypothesis.given(raw=st.from_regex(r"\A[0-9a-fA-F]{14,18}\s?\Z") | st.text(max_size=40))
def test_backfill_ids_are_sixteen_hex_digits_or_refused(raw: str) -> None:
    well_formed = len(raw) == 16 and all(ch in "0123456789abcdefABCDEF" for ch in raw)
    if well_formed:
        assert parse_backfill_id(raw) == raw.lower()
    else:
        with pytest.raises(BadInput) as exc:
            parse_backfill_id(raw)
        assert (exc.value.field, exc.value.status) == ("id", 400)


# ---- the service, stopped and started again on the same database ---------------------


@dataclass
class Api:
    base: str
    http: aiohttp.ClientSession
    c: GapHandler

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            assert resp.content_type == "application/json", (resp.status, await resp.text())
            return resp.status, await resp.json()

    async def post(self, symbol: str, rng: MinuteRange) -> dict[str, Any]:
        status, body = await self.call(
            "POST",
            "/backfills",
            json={"symbol": symbol, "start": rng.start, "end": rng.end},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert status == 202, body
        return dict(body)


@asynccontextmanager
async def serving(settings: GapHandlerSettings, sim: SimHandle) -> AsyncIterator[Api]:
    """The real app on a port; stopped at the end as SIGTERM would stop it."""
    async with served(spec(settings, now_ms=sim.clock.now_ms)) as handle, aiohttp.ClientSession() as http:
        api = Api(handle.url, http, handle.service)
        await wait_for(idle(api.c), 30, "the first scan's work")
        yield api


def config(db_url: str, sim: SimHandle) -> GapHandlerSettings:
    # Small pages and units, a slow rate: a 2-day request takes ~3 s and writes its
    # progress after each of its 15 units, so it can be interrupted half-way.
    return settings_for(
        db_url,
        sim.rest_url,
        symbols=[SYMBOL],
        history_days=1,
        admin_token=TOKEN,
        backfill_batch_size=100,
        unit_max_pages=2,
        rate_limit_requests_per_sec=10,
        max_concurrent_backfills=2,
    )


def old_range(sim: SimHandle, days: int) -> MinuteRange:
    """``days`` ending two days before the automatic scan window (HISTORY_DAYS=1) begins."""
    end = history_start(sim.clock.now_ms(), 1) - 2 * DAY_MS
    return MinuteRange(end - days * DAY_MS, end)


def klines(sim: SimHandle) -> int:
    return sim.stats.requests_by_path["/api/v3/klines"]


async def row(pool: asyncpg.Pool, ident: str) -> dict[str, Any]:
    got = await pool.fetchrow("SELECT * FROM backfill_requests WHERE id = $1", ident)
    assert got is not None
    return dict(got)


def progressed(pool: asyncpg.Pool, ident: str, minutes: int) -> Any:
    async def check() -> bool:
        return bool((await row(pool, ident))["minutes_done"] >= minutes)

    return check


def finished(api: Api, ident: str) -> Any:
    async def check() -> bool:
        status, body = await api.call("GET", f"/backfills/{ident}")
        assert status == 200, body
        return body["state"] in ("complete", "incomplete", "failed")

    return check


async def assert_truth(pool: asyncpg.Pool, sim: SimHandle, rng: MinuteRange) -> None:
    async with pool.acquire() as conn:
        stored = await fetch_candles(conn, SYMBOL, rng.start, rng.end)
    assert stored == sim.truth(SYMBOL, rng.start, rng.end)
    assert await pool.fetchval("SELECT count(*) - count(DISTINCT (symbol, time)) FROM candles_1m") == 0


async def resume_and_check(
    settings: GapHandlerSettings, sim: SimHandle, ident: str, rng: MinuteRange, committed: int
) -> None:
    before = klines(sim)
    async with serving(settings, sim) as api:
        await wait_for(finished(api, ident), 30, "the resumed request")
        status, body = await api.call("GET", f"/backfills/{ident}")
        assert status == 200 and body["state"] == "complete" and body["error"] is None, body
        assert body["minutes_total"] == body["minutes_done"] == rng.minutes
        assert body["candles_recovered"] == rng.minutes and body["unrecoverable_minutes"] == 0
        await assert_truth(api.c.pool, sim, rng)
        stored = await row(api.c.pool, ident)
        assert stored["state"] == "complete" and stored["finished_at"] is not None
        assert (stored["minutes_total"], stored["minutes_done"], stored["candles_recovered"]) == (
            rng.minutes,
            rng.minutes,
            rng.minutes,
        )
    # Only what was still missing was asked for (each hole left may start mid-page).
    resumed = klines(sim) - before
    assert resumed <= -(-(rng.minutes - committed) // 100) + 3, (resumed, committed)


async def candles_in(pool: asyncpg.Pool, rng: MinuteRange) -> int:
    async with pool.acquire() as conn:
        return len(await fetch_candles(conn, SYMBOL, rng.start, rng.end))


@pytest.mark.slow
async def test_a_request_stopped_half_way_resumes_after_a_restart(db_url: str, db_pool: asyncpg.Pool) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0) as sim:
        settings = config(db_url, sim)
        rng = old_range(sim, 2)
        async with serving(settings, sim) as api:
            out = await api.post(SYMBOL, rng)
            ident = out["id"]
            assert out["minutes_total"] == rng.minutes and out["state"] == "running"
            stored = await row(api.c.pool, ident)
            assert (stored["state"], stored["minutes_total"], stored["finished_at"]) == (
                "running",
                rng.minutes,
                None,
            )
            await wait_for(progressed(api.c.pool, ident, 1000), 30, "five units written")
        # Stopped like SIGTERM: the units in flight checkpoint and write what they did;
        # the request stays open.
        committed = await candles_in(db_pool, rng)
        stopped = await row(db_pool, ident)
        assert stopped["state"] == "running" and stopped["finished_at"] is None
        assert 1000 <= stopped["minutes_done"] < rng.minutes
        assert stopped["candles_recovered"] == stopped["minutes_done"] == committed
        await resume_and_check(settings, sim, ident, rng, committed)


@pytest.mark.slow
async def test_a_request_crashed_half_way_resumes_after_a_restart(db_url: str, db_pool: asyncpg.Pool) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0, rest_latency_s=0.02) as sim:
        settings = config(db_url, sim)
        rng = old_range(sim, 2)
        async with assembled(settings, now_ms=sim.clock.now_ms) as c:
            run = asyncio.create_task(c.run())
            await wait_for(lambda: _true(c.requests.resumed), 30, "start-up")
            await wait_for(idle(c), 30, "the first scan's work")
            task = await c.requests.submit(SYMBOL, rng)
            await wait_for(progressed(c.pool, task.id, 1000), 30, "five units written")
            # A crash: cancelled mid-request; nothing is checkpointed or written.
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
        crashed = await row(db_pool, task.id)
        assert crashed["state"] == "running" and crashed["finished_at"] is None
        committed = await candles_in(db_pool, rng)
        assert crashed["minutes_done"] <= committed < rng.minutes
        await resume_and_check(settings, sim, task.id, rng, committed)


@pytest.mark.slow
async def test_a_last_unit_cut_short_by_shutdown_is_resumed_not_incomplete(
    db_url: str, db_pool: asyncpg.Pool
) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0, rest_latency_s=0.3) as sim:
        # One unit of five pages: when the service stops, the request's only unit is in flight.
        settings = config(db_url, sim).model_copy(update={"unit_max_pages": 10})
        end = old_range(sim, 1).end
        rng = MinuteRange(end - 500 * M, end)
        async with serving(settings, sim) as api:
            ident = (await api.post(SYMBOL, rng))["id"]

            async def first_page() -> bool:
                return await candles_in(db_pool, rng) >= 100

            await wait_for(first_page, 30, "the first page")
        stopped = await row(db_pool, ident)
        committed = await candles_in(db_pool, rng)
        assert (stopped["state"], stopped["finished_at"]) == ("running", None)
        assert 100 <= stopped["minutes_done"] == committed < rng.minutes
        await resume_and_check(settings, sim, ident, rng, committed)


async def _true(value: bool) -> bool:
    return value


async def test_finished_requests_are_served_from_the_table_after_a_restart(db_url: str) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0) as sim:
        settings = config(db_url, sim)
        rng = old_range(sim, 1)
        rng = MinuteRange(rng.start, rng.start + 90 * M)
        async with serving(settings, sim) as api:
            ident = (await api.post(SYMBOL, rng))["id"]
            await wait_for(finished(api, ident), 30, "the request")
            _, live = await api.call("GET", f"/backfills/{ident}")
            assert live["state"] == "complete" and live["minutes_done"] == 90
            # A request left unfinished for a symbol no longer served waits, visibly.
            await api.c.pool.execute(
                "INSERT INTO backfill_requests (id, symbol, range_start, range_end, state, minutes_total,"
                " requested_at) VALUES ('00000000000000aa', 'BTCUSDT', $1, $2, 'running', 5, $3)",
                ms_to_datetime(rng.start),
                ms_to_datetime(rng.end),
                datetime.fromisoformat(live["created_at"]) + timedelta(minutes=1),
            )
        before = klines(sim)
        async with serving(settings, sim) as api:
            await wait_for(lambda: _true(api.c.requests.resumed), 30, "resume")
            assert ident not in api.c.backfills.tasks  # not resumed: answered from the table
            status, body = await api.call("GET", f"/backfills/{ident.upper()}")
            assert status == 200
            assert {k: v for k, v in body.items() if k != "rate_minutes_per_s"} == {
                k: v for k, v in live.items() if k != "rate_minutes_per_s"
            }
            status, listed = await api.call("GET", "/backfills")
            assert status == 200 and [b["id"] for b in listed["backfills"]] == ["00000000000000aa", ident]
            waiting = listed["backfills"][0]
            assert waiting["state"] == "queued" and "BTCUSDT is not in SYMBOLS" in waiting["error"]
            for query, ids in (
                ("state=complete", [ident]),
                (f"symbol={SYMBOL.lower()}&state=complete&limit=1", [ident]),
                ("state=running", []),
                ("limit=1", ["00000000000000aa"]),
            ):
                status, listed = await api.call("GET", f"/backfills?{query}")
                assert status == 200 and [b["id"] for b in listed["backfills"]] == ids, query
            for query, field, code in (
                ("state=done", "state", 400),
                ("limit=0", "limit", 400),
                ("limit=x", "limit", 400),
                ("symbol=BAD-1", "symbol", 400),
                ("symbol=DOGEUSDT", "symbol", 404),
            ):
                status, out = await api.call("GET", f"/backfills?{query}")
                assert (status, out.get("field")) == (code, field), query
            for path, code in (("/backfills/does-not-exist", 400), ("/backfills/ffffffffffffffff", 404)):
                status, out = await api.call("GET", path)
                assert (status, out["field"]) == (code, "id"), path
        assert klines(sim) == before


async def test_a_database_error_on_post_leaves_nothing_behind(db_url: str) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0) as sim, serving(config(db_url, sim), sim) as api:
        await api.c.pool.execute("ALTER TABLE backfill_requests RENAME TO backfill_requests_away")
        before = klines(sim)
        status, body = await api.call(
            "POST",
            "/backfills",
            json={"symbol": SYMBOL, "start": old_range(sim, 1).start},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert status == 503 and body["error"] == "database unavailable"
        assert api.c.backfills.tasks == {} and api.c.backfills.queue.qsize() == 0
        assert not any(api.c.backfills.running.values()) and klines(sim) == before
