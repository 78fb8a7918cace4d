"""The exchange's clock, not the host's, decides what is closed: the sans-I/O estimate
and the final-row rule (no event loop), then the service against the simulator with its
own clock skewed ahead."""

from __future__ import annotations

import time
from unittest.mock import ANY

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gap_handler.core.exchange_clock import SKEW_WARN_MS, ExchangeClock, closed_prefix, offset_sample
from gap_handler.core.intervals import MinuteRange, closed_end, due_end, history_start
from gap_handler.core.planner import UnitBackfill
from gap_handler.engine import SETTLE_MS
from gap_handler.service import GapHandler
from quaint.binance.models import Candle, datetime_to_ms
from quaint.store.candles import fetch_candles
from tests.support.gap_handler import idle, running_service, settings_for
from tests.support.simulator import SimHandle, running_simulator
from tests.support.waiting import wait_for

M = 60_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def r(a: int, b: int) -> MinuteRange:
    return MinuteRange(T0 + a * M, T0 + b * M)


# ---- the offset estimate ---------------------------------------------------------------


@given(
    true_offset=st.integers(-(10**9), 10**9),
    sent=st.integers(T0, T0 + 10**9),
    rtt=st.integers(0, 10_000),
    read_at=st.floats(0, 1),
    later=st.integers(0, 10**8),
)
def test_sample_never_runs_ahead_of_the_exchange(
    true_offset: int, sent: int, rtt: int, read_at: float, later: int
) -> None:
    """Wherever between send and receipt the exchange read its clock, local + offset is
    at most the exchange's time then and ever after, and short of it by at most the round trip."""
    received = sent + rtt
    server = sent + int(rtt * read_at) + true_offset  # the exchange's reading, inside the trip
    sample = offset_sample(sent, received, server, 100.0, 100.0 + rtt / 1000)
    assert sample is not None
    assert true_offset - rtt <= sample.offset_ms <= true_offset
    clock = ExchangeClock(30)
    clock.observe(sample)
    local = received + later
    assert local + true_offset - rtt <= clock.now(local) <= local + true_offset


def test_sample_refuses_backward_clocks_and_implausible_times() -> None:
    assert offset_sample(T0, T0 - 1, T0, 1.0, 2.0) is None  # local clock went back
    assert offset_sample(T0, T0 + 5, T0, 2.0, 1.0) is None  # monotonic went back
    assert offset_sample(T0, T0, 10**9, 1.0, 1.0) is None  # 1970
    assert offset_sample(T0, T0, 5_000_000_000_000, 1.0, 1.0) is None  # year 2128
    sample = offset_sample(T0, T0 + 4, T0 + 300_000, 1.0, 1.004)
    assert sample is not None and sample.offset_ms == 300_000 - 4
    assert sample.round_trip_s == 1.004 - 1.0


def test_clock_is_due_before_the_first_sample_and_every_interval() -> None:
    clock = ExchangeClock(30)
    assert not clock.synced and clock.due(0.0) and clock.seconds_until_due(0.0) == 0.0
    assert clock.now(T0) == T0  # the local clock until a sample exists
    sample = offset_sample(T0, T0, T0 - 7_000, 100.0, 100.0)
    assert sample is not None
    clock.observe(sample)
    assert clock.synced and clock.now(T0 + 1) == T0 - 6_999
    assert not clock.due(129.9) and clock.seconds_until_due(110.0) == 20.0
    assert clock.due(130.0) and clock.seconds_until_due(131.0) == 0.0


def test_skew_is_warned_once_then_again_when_it_changes() -> None:
    clock = ExchangeClock(30)

    def observe(offset: int) -> bool:
        sample = offset_sample(T0, T0, T0 + offset, 0.0, 0.0)
        assert sample is not None
        return clock.observe(sample)

    assert not observe(SKEW_WARN_MS - 1)
    assert observe(-300_000)  # the host runs 5 minutes ahead
    assert not observe(-300_000 + SKEW_WARN_MS - 1)
    assert observe(-300_000 - SKEW_WARN_MS)
    assert not observe(0)
    assert observe(SKEW_WARN_MS)  # large again after having been small


# ---- which rows are final ------------------------------------------------------------------


def test_a_row_is_final_only_if_it_closed_strictly_before_the_exchange_time() -> None:
    opens = [T0, T0 + M, T0 + 2 * M]
    closes = [t + M - 1 for t in opens]
    assert closed_prefix(opens, closes, T0 + 2 * M + 30_000) == 2  # the third is open
    assert closed_prefix(opens, closes, T0 + 2 * M) == 2  # closed at 2M - 1, "now" is 2M
    assert closed_prefix(opens, closes, T0 + 2 * M - 1) == 1  # closes exactly now: not yet
    assert closed_prefix(opens, closes, T0 + 3 * M) == 3
    assert closed_prefix([], [], T0) == 0
    # A close time short of the minute's end does not make a minute close early.
    assert closed_prefix([T0], [T0 + 1], T0 + 30_000) == 0
    # Nothing after an open row counts, whatever its close time says.
    assert closed_prefix([T0, T0 + M], [T0 + 10 * M, T0 + M + M - 1], T0 + 5 * M) == 0


def test_page_reaching_the_open_minute_leaves_the_rest_pending() -> None:
    plan = UnitBackfill(r(0, 10), 1000)
    req = plan.next_request()
    assert req is not None and not req.probe
    # Minutes 0-2 and 4 closed, 5 still open (the exchange answered at 5:30).
    kept = plan.on_page([T0, T0 + M, T0 + 2 * M, T0 + 4 * M], open_from=T0 + 5 * M)
    assert kept == [T0, T0 + M, T0 + 2 * M, T0 + 4 * M]
    assert plan.outcome.unrecoverable == [r(3, 4)]  # proven by the closed minute 4
    assert plan.outcome.pending == r(5, 10) and plan.next_request() is None
    # A closed row after the open one (impossible, but fed) is not kept either.
    plan = UnitBackfill(r(0, 10), 1000)
    plan.next_request()
    assert plan.on_page([T0 + 6 * M], open_from=T0 + 2 * M) == []
    assert plan.outcome.pending == r(0, 10) and plan.outcome.unrecoverable == []


@given(st.sets(st.integers(0, 299)), st.integers(0, 320), st.integers(1, 120), st.integers(0, 59_999))
def test_nothing_open_is_stored_and_nothing_closed_is_given_up(
    present: set[int], edge: int, batch: int, into_minute: int
) -> None:
    """An exchange at ``edge`` minutes + ``into_minute`` ms holding the closed minutes of
    ``present`` before the edge and the open minute ``edge``, answered as the engine does:
    nothing at or after the edge is stored or declared lost; every stored minute exists."""
    now = T0 + edge * M + into_minute
    closed = {m for m in present if m < edge}
    have = sorted(closed | {edge})
    unit = r(0, 300)
    plan = UnitBackfill(unit, batch)
    stored: set[int] = set()
    while (req := plan.next_request()) is not None:
        hi = req.end if req.end is not None else T0 + 10**6 * M
        opens = [T0 + m * M for m in have if req.start <= T0 + m * M <= hi][: req.limit]
        final = closed_prefix(opens, [t + M - 1 for t in opens], now)
        if req.probe:
            keep = plan.on_probe(opens[0] if final else None, closed_end(now) - SETTLE_MS)
            if keep:
                stored.add((opens[0] - T0) // M)
        else:
            open_from = opens[final] if final < len(opens) else None
            stored |= {(t - T0) // M for t in plan.on_page(opens[:final], open_from=open_from)}
    lost = {(x.start - T0) // M + i for x in plan.outcome.unrecoverable for i in range(x.minutes)}
    assert stored <= closed
    assert not lost & (closed | {edge}) and all(m < edge for m in lost)
    pending = plan.outcome.pending
    undecided = set() if pending is None else set(range((pending.start - T0) // M, 300))
    # Every minute of the unit is stored, proven lost or left for later (so every closed
    # minute before the pending tail was stored, and the edge onwards is pending).
    assert stored | (lost & set(range(300))) | undecided == set(range(300))


# ---- against the simulator, the service's own clock skewed ahead ------------------------------

SYMBOL = "BTCUSDT"
SKEW_MS = 5 * M  # the host clock runs five minutes ahead of the exchange's


def mid_minute_now() -> int:
    """Real now, on a minute + 30 s: the open minute is well inside the frozen instant."""
    wall = time.time_ns() // 1_000_000
    return wall - wall % M - M + 30_000


async def stored_equals_truth(c: GapHandler, sim: SimHandle, start: int, end: int) -> list[Candle]:
    async with c.pool.acquire() as conn:
        stored = await fetch_candles(conn, SYMBOL, start, end)
    assert stored == sim.truth(SYMBOL, start, end)
    return stored


@pytest.mark.slow
async def test_host_clock_ahead_stores_nothing_the_exchange_has_not_closed(db_url: str) -> None:
    now = mid_minute_now()
    open_minute = now - now % M
    async with running_simulator(symbols=[SYMBOL], speed=0, start=now) as sim:
        settings = settings_for(
            db_url, sim.rest_url, symbols=[SYMBOL], history_days=1, rate_limit_requests_per_sec=100
        )
        registry = CollectorRegistry()
        skewed = lambda: sim.clock.now_ms() + SKEW_MS  # noqa: E731
        async with running_service(settings, now_ms=skewed, registry=registry) as c:
            await wait_for(idle(c), 30, "bootstrap")
            # Frozen exchange: the estimate is exact, the round trip took no simulated time.
            assert c.clock.health() == {"offset_ms": -SKEW_MS, "round_trip_ms": ANY, "age_s": ANY}
            assert (await c.health()).body["exchange_clock"]["offset_ms"] == -SKEW_MS
            assert registry.get_sample_value("quaint_gap_handler_exchange_clock_offset_seconds") == -300
            assert c.now_ms() == now
            stored = await stored_equals_truth(c, sim, history_start(now, 1), open_minute + 10 * M)
            # Everything due by the exchange's clock (the host's would have asked for the open
            # minute and four not begun yet), nothing more.
            assert stored[0].open_time == history_start(now, 1)
            assert stored[-1].open_time == due_end(now, 70) - M == open_minute - M
            assert len(stored) == (open_minute - history_start(now, 1)) // M


@pytest.mark.slow
async def test_a_page_reaching_the_open_minute_stores_only_closed_rows(db_url: str) -> None:
    now = mid_minute_now()
    open_minute = now - now % M
    async with running_simulator(symbols=[SYMBOL], speed=0, start=now) as sim:
        settings = settings_for(db_url, sim.rest_url, symbols=[SYMBOL], history_days=1)
        registry = CollectorRegistry()
        async with running_service(settings, now_ms=sim.clock.now_ms, registry=registry, loops=False) as c:
            # A unit the scan would never cut (it ends past the live edge): the engine itself
            # must refuse the open candle the exchange answers with.
            unit = MinuteRange(open_minute - 10 * M, open_minute + 3 * M)
            report = await c.engine.run_unit(SYMBOL, unit)
            assert report.written == 10
            assert report.outcome.pending == MinuteRange(open_minute, unit.end)
            assert report.outcome.unrecoverable == []
            not_final = "quaint_gap_handler_rest_rows_not_final_total"
            assert registry.get_sample_value(not_final, {"symbol": SYMBOL}) == 1
            stored = await stored_equals_truth(c, sim, unit.start, unit.end)
            assert [k.open_time for k in stored] == [open_minute - i * M for i in range(10, 0, -1)]
            assert sim.stats.requests_by_path["/api/v3/klines"] == 1  # pending at once: no probe


@pytest.mark.slow
async def test_accelerated_exchange_and_a_clock_ahead_store_only_final_candles(db_url: str) -> None:
    """The simulator at 600x (a minute every 0.1 s) and the service's clock 5 minutes ahead
    of it: the service follows the live edge and every candle it stored is the final one
    (an open candle stored would differ from the truth: it is never rewritten)."""
    now = mid_minute_now()
    # Frozen until the first day is filled: the service's window starts where the test's does.
    # (Started at 600x, the service's first scan came tens of simulated seconds after `now` —
    # 20 s on a quiet machine, over 30 s on a busy one — and its window began a minute later.)
    async with running_simulator(symbols=[SYMBOL], speed=0, start=now) as sim:
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=[SYMBOL],
            history_days=1,
            rate_limit_requests_per_sec=200,
            backfill_check_interval_s=0.1,
            exchange_time_sync_interval_s=1,
        )
        skewed = lambda: sim.clock.now_ms() + SKEW_MS  # noqa: E731
        async with running_service(settings, now_ms=skewed) as c:
            start = history_start(now, 1)

            async def first_day_filled() -> bool:
                oldest = await c.pool.fetchval("SELECT min(time) FROM candles_1m")
                return oldest is not None and datetime_to_ms(oldest) == start and await idle(c)()

            await wait_for(first_day_filled, 30, "the first day, filled on the frozen clock")
            sim.clock.set(speed=600)
            await sim.wait_for(lambda: sim.clock.now_ms() >= now + 30 * M, 30, "30 simulated minutes")
            sim.clock.set(speed=0)
            frozen = sim.clock.now_ms()
            last_due = due_end(frozen, 70) - M

            async def caught_up() -> bool:
                newest = await c.pool.fetchval("SELECT max(time) FROM candles_1m")
                return newest is not None and datetime_to_ms(newest) == last_due and await idle(c)()

            # A sample taken after the freeze is exact; the next scan then reaches the edge.
            await wait_for(caught_up, 30, "the frozen edge")
            # Up to the newest due minute (caught_up: nothing later is stored). Not further:
            # a freeze in the first 10 s of a minute leaves the previous minute closed but
            # not yet due, so the truth has it and the service rightly does not.
            stored = await stored_equals_truth(c, sim, start, last_due + M)
            assert len(stored) == (last_due + M - start) // M


@pytest.mark.slow
async def test_without_the_exchange_time_nothing_is_fetched_or_stored(db_url: str) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0, start=mid_minute_now()) as sim:
        sim.faults.add_rest_fault(503, count=10**6, path="/api/v3/time")
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=[SYMBOL],
            history_days=1,
            rate_limit_requests_per_sec=100,
            retry_max_attempts=2,
            retry_initial_s=0.01,
            retry_cap_s=0.02,
            backfill_check_interval_s=0.2,
        )
        registry = CollectorRegistry()
        async with running_service(settings, now_ms=sim.clock.now_ms, registry=registry) as c:

            async def gave_up_twice() -> bool:
                labels = {"kind": "retries_exhausted"}
                return (registry.get_sample_value("quaint_gap_handler_errors_total", labels) or 0) >= 2

            async def filled() -> bool:
                return int(await c.pool.fetchval("SELECT count(*) FROM candles_1m")) == 1440  # a day

            await wait_for(gave_up_twice, 30, "units giving up for want of the exchange's time")
            assert sim.stats.requests_by_path["/api/v3/klines"] == 0
            assert await c.pool.fetchval("SELECT count(*) FROM candles_1m") == 0
            unsynced = await c.health()
            assert unsynced.body["exchange_clock"] is None and unsynced.status == "degraded"
            assert any("exchange clock not synced" in p for p in unsynced.body["problems"])
            sim.faults.reset()  # the exchange answers again: the next unit samples and fills
            await wait_for(filled, 30, "the backfill")
            synced = await c.health()
            assert synced.body["exchange_clock"]["offset_ms"] == 0 and synced.status == "healthy"
