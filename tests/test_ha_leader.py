"""One active gap handler (issue 18): two real ``python -m gap_handler`` processes on one
real database and one simulator. One leads (the PostgreSQL advisory lock), the other stands
by: healthy, ``role: standby``, fetching nothing. The leader is SIGKILLed half-way through a
requested backfill and the history bootstrap; the standby takes over, resumes the stored
request and finishes everything, and no REST answer carried a minute another answer had
carried, except the one page in flight when the leader died (fetched, never stored).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from gap_handler.settings import GapHandlerSettings
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.store import leadership
from tests.support.feeder import connect, minute_of, quality_rows
from tests.support.gap_handler import running_service, settings_for
from tests.support.ha import HttpProcess, db_env, minutes, overlapping
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.ha

SYMBOL = "BTCUSDT"
TOKEN = "ha-test-token"
PAGE = 60  # minutes per REST page: many pages, so the kill lands mid-work
REQUESTED = 20 * PAGE


async def stored_count(db_url: str, start: int, end: int) -> int:
    conn = await connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3",
                SYMBOL,
                ms_to_datetime(start),
                ms_to_datetime(end),
            )
        )
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_standby_takes_over_a_killed_leader_and_fetches_no_range_twice(
    db_url: str, tmp_path: Path
) -> None:
    async with running_simulator(speed=1, symbols=[SYMBOL]) as sim:
        env = db_env(
            db_url,
            SYMBOLS=SYMBOL,
            BINANCE_REST_URL=sim.rest_url,
            ARCHIVE_ENABLED="false",
            HISTORY_DAYS="1",
            BACKFILL_BATCH_SIZE=str(PAGE),
            UNIT_MAX_PAGES="2",
            MAX_CONCURRENT_BACKFILLS="1",  # one page in flight: the most a kill can cost twice
            RATE_LIMIT_REQUESTS_PER_SEC="3",
            LEADER_TAKEOVER_S="4",
            ADMIN_TOKEN=TOKEN,
        )
        a = HttpProcess("gap-a", "gap_handler", env, tmp_path, "GAP_HANDLER_PORT")
        b = HttpProcess("gap-b", "gap_handler", env, tmp_path, "GAP_HANDLER_PORT")
        try:
            await a.proc.start()
            await a.wait_role("leader")
            await b.proc.start()
            await b.wait_role("standby")
            now = sim.clock.now_ms()
            req_start = minute_of(now) - 2 * 86_400_000
            req_end = req_start + REQUESTED * MINUTE_MS
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    a.url + "/backfills",
                    json={"symbol": SYMBOL, "start": req_start, "end": req_end},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as resp,
            ):
                assert resp.status == 202, await resp.text()
                ident = (await resp.json())["id"]
            # The standby refuses requests rather than store one nobody works on.
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    b.url + "/backfills",
                    json={"symbol": SYMBOL, "start": req_start, "end": req_end},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as resp,
            ):
                assert resp.status == 503 and "standby" in (await resp.json())["error"]
            served = sim.stats.klines_served
            await wait_until(lambda: len(served) >= 6, 60, "the leader half-way through the request")
            status, standby = await b.health()
            assert (status, standby["role"], standby["problems"]) == (200, "standby", [])
            _, metrics = await b.get("/metrics")
            assert "quaint_gap_handler_leader 0.0" in metrics
            await a.proc.kill()
            killed_after = len(served)
            await b.wait_role("leader", within=60)
            _, metrics = await b.get("/metrics")
            assert "quaint_gap_handler_leader 1.0" in metrics

            async def request_complete() -> bool:
                status, body = await b.get(f"/backfills/{ident}")
                return status == 200 and body["state"] == "complete"

            await wait_for(request_complete, 120, "the resumed request complete", interval=0.2)
            hist_start, hist_end = minute_of(now) - 86_400_000 + 10 * MINUTE_MS, minute_of(now) - MINUTE_MS

            async def history_complete() -> bool:
                return await stored_count(db_url, hist_start, hist_end) == minutes(hist_start, hist_end)

            await wait_for(history_complete, 120, "the history bootstrap complete", interval=0.2)
            assert await stored_count(db_url, req_start, req_end) == REQUESTED
            answers = list(served)
        finally:
            await a.proc.close()
            await b.proc.close()
    assert a.proc.unexpected == [] and b.proc.unexpected == []
    assert killed_after < len(answers)  # the standby did fetch, after the kill
    twice = overlapping(answers)
    # At most the page in flight at the kill (answered around it) was fetched again.
    assert len(twice) <= 1, twice
    assert all(killed_after - 2 <= i < killed_after <= j for i, j in twice), (twice, killed_after)
    terms = await quality_rows(db_url, "leader_changed")
    assert len(terms) == 2
    assert len({row["details"]["instance"] for row in terms}) == 2


async def test_a_leader_whose_lock_session_ends_steps_down_and_the_other_takes_over(db_url: str) -> None:
    async with running_simulator(speed=1, symbols=[SYMBOL]) as sim:
        s = settings_for(db_url, sim.rest_url, symbols=[SYMBOL], history_days=1, leader_takeover_s=2)
        clock = sim.clock.now_ms
        async with running_service(s, now_ms=clock) as first:
            await wait_until(lambda: first.leadership.role == "leader", 30, "the first instance leading")
            async with running_service(s, now_ms=clock) as second:
                await wait_until(lambda: second.leadership.connected, 30, "the second one's election")
                assert second.leadership.role == "standby"
                assert (await second.health()).status == "healthy"
                term_of_first = first.backfills
                conn = await connect(db_url)
                try:
                    holder = await leadership.holder(conn, within_s=10)
                    assert holder is not None
                    await conn.execute("SELECT pg_terminate_backend($1)", holder["pid"])
                finally:
                    await conn.close()

                # The first one's term was cancelled and its parts built afresh; it defers to
                # the standby, which takes the lock. Each gauge follows its role one task hop
                # later (the run loop sets it once woken by the election), and the second can
                # take the lock before the first notices its session ended: wait for all of it,
                # else a busy machine sees the gaps between.
                def handed_over() -> bool:
                    return (
                        second.leadership.role == "leader"
                        and second.metrics.leader._value.get() == 1
                        and first.leadership.role == "standby"
                        and first.backfills is not term_of_first
                        and first.metrics.leader._value.get() == 0
                    )

                await wait_until(handed_over, 60, "the second one leading, the first standing by")
                health = await first.health()
                assert (health.status, health.body["role"]) == ("healthy", "standby")

                async def two_terms() -> bool:
                    return len(await quality_rows(db_url, "leader_changed")) == 2

                # Each term's row is written by its leader once it leads: generous on a busy machine.
                await wait_for(two_terms, 90, "a leader_changed row per term")
    assert await quality_rows(db_url, "db_failover") == []  # one server all along


def test_leader_takeover_below_two_seconds_is_refused() -> None:
    with pytest.raises(ValidationError, match="leader_takeover_s"):
        GapHandlerSettings(leader_takeover_s=1)


async def test_a_lone_leader_whose_session_ends_leads_again_without_deferring(db_url: str) -> None:
    # LEADER_TAKEOVER_S=600 would defer 300 s to a standby; there is none (one gap handler,
    # its database restarted): it leads again at once, in a new term.
    async with running_simulator(speed=1, symbols=[SYMBOL]) as sim:
        s = settings_for(db_url, sim.rest_url, symbols=[SYMBOL], history_days=1, leader_takeover_s=600)
        async with running_service(s, now_ms=sim.clock.now_ms) as handler:
            await wait_until(lambda: handler.leadership.role == "leader", 30, "leading")
            conn = await connect(db_url)
            try:
                holder = await leadership.holder(conn, within_s=10)
                assert holder is not None
                await conn.execute("SELECT pg_terminate_backend($1)", holder["pid"])
            finally:
                await conn.close()
            await wait_until(lambda: handler.leadership.terms == 2, 30, "a second term")
            assert handler.leadership.role == "leader"
