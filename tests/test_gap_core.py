"""Sans-I/O cores of the gap handler: interval maths, page planning and outcome
classification, schedule maths, progress. No event loop, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gap_handler.core.intervals import (
    MinuteRange,
    closed_end,
    due_end,
    history_start,
    merge,
    split_units,
    subtract,
    total_minutes,
)
from gap_handler.core.planner import UnitBackfill
from gap_handler.core.schedule import DAILY_JOBS, next_run
from gap_handler.core.tracker import RangeTask

M = 60_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def r(a: int, b: int) -> MinuteRange:
    return MinuteRange(T0 + a * M, T0 + b * M)


# ---- intervals -----------------------------------------------------------------------


def test_range_rejects_unaligned_and_reversed() -> None:
    with pytest.raises(ValueError, match="whole minutes"):
        MinuteRange(T0 + 1, T0 + M)
    with pytest.raises(ValueError, match="before start"):
        MinuteRange(T0 + M, T0)


def test_due_end_waits_for_threshold() -> None:
    # 12:05:15 with a 70 s threshold: 12:04 closed 15 s ago (due), 12:05 is still open.
    now = T0 + 12 * 3_600_000 + 5 * M + 15_000
    assert due_end(now, 70) == T0 + 12 * 3_600_000 + 5 * M
    # 12:05:05: 12:04 closed only 5 s ago, not due yet.
    assert due_end(now - 10_000, 70) == T0 + 12 * 3_600_000 + 4 * M
    assert closed_end(now) == T0 + 12 * 3_600_000 + 5 * M
    assert history_start(T0 + 30 * 86_400_000 + 30_000, 30) == T0


def test_merge_and_subtract() -> None:
    assert merge([r(5, 7), r(0, 2), r(2, 3), r(6, 9)]) == [r(0, 3), r(5, 9)]
    assert subtract([r(0, 10)], [r(2, 3), r(5, 7), r(9, 12)]) == [r(0, 2), r(3, 5), r(7, 9)]
    assert subtract([r(0, 10)], [r(0, 10)]) == []
    assert subtract([r(0, 3), r(5, 8)], []) == [r(0, 3), r(5, 8)]


minute_sets = st.sets(st.integers(0, 200), max_size=80)


def ranges_of(minutes: set[int]) -> list[MinuteRange]:
    return merge(r(m, m + 1) for m in minutes)


@given(minute_sets, minute_sets)
def test_subtract_matches_set_difference(a: set[int], b: set[int]) -> None:
    out = subtract(ranges_of(a), ranges_of(b))
    assert {(x.start - T0) // M + i for x in out for i in range(x.minutes)} == a - b
    assert out == merge(out)  # sorted, disjoint, non-touching
    assert total_minutes(out) == len(a - b)


def test_split_units_covers_the_hole_oldest_first() -> None:
    units = list(split_units(r(0, 25), 10))
    assert units == [r(0, 10), r(10, 20), r(20, 25)]
    with pytest.raises(ValueError, match="minutes_per_unit"):
        list(split_units(r(0, 1), 0))


# ---- planning and classification ---------------------------------------------------


def times(*minutes: int) -> list[int]:
    return [T0 + m * M for m in minutes]


def test_pages_cover_the_unit_with_inclusive_end_time() -> None:
    plan = UnitBackfill(r(0, 2500), 1000)
    req = plan.next_request()
    assert req is not None and (req.start, req.end, req.limit) == (T0, T0 + 1000 * M - 1, 1000)
    assert plan.on_page(times(*range(1000))) == times(*range(1000))
    req = plan.next_request()
    assert req is not None and req.start == T0 + 1000 * M
    plan.on_page(times(*range(1000, 2000)))
    req = plan.next_request()
    assert req is not None and req.limit == 500 and req.end == T0 + 2500 * M - 1
    plan.on_page(times(*range(2000, 2500)))
    assert plan.next_request() is None and plan.done
    assert plan.outcome.recovered == 2500 and plan.outcome.unrecoverable == [] and plan.outcome.complete


def test_minutes_absent_before_a_returned_minute_are_unrecoverable() -> None:
    plan = UnitBackfill(r(0, 10), 1000)
    plan.next_request()
    kept = plan.on_page(times(0, 1, 5, 6, 7, 8, 9, 42))  # 42 is outside the page: ignored
    assert kept == times(0, 1, 5, 6, 7, 8, 9)
    assert plan.outcome.unrecoverable == [r(2, 5)]
    assert plan.done and plan.outcome.complete


def test_absent_tail_is_probed_and_proven_by_a_later_minute() -> None:
    plan = UnitBackfill(r(0, 10), 1000)
    plan.next_request()
    plan.on_page(times(0, 1, 2))
    probe = plan.next_request()
    assert probe is not None and probe.probe and probe.start == T0 + 3 * M and probe.limit == 1
    # The exchange resumes at minute 15, past the unit: the whole outage is proven.
    assert plan.on_probe(T0 + 15 * M, settled_end=T0 + 100 * M) is False
    assert plan.outcome.unrecoverable == [r(3, 15)]
    assert plan.outcome.unrecoverable_minutes_in_unit == 7
    assert plan.done and plan.outcome.complete


def test_probe_inside_the_unit_stores_the_candle_and_continues() -> None:
    plan = UnitBackfill(r(0, 10), 1000)
    plan.next_request()
    plan.on_page([])  # nothing at all in the page: not proven yet
    assert plan.outcome.unrecoverable == []
    plan.next_request()
    assert plan.on_probe(T0 + 4 * M, settled_end=T0 + 100 * M) is True
    assert plan.outcome.unrecoverable == [r(0, 4)]
    req = plan.next_request()
    assert req is not None and not req.probe and req.start == T0 + 5 * M


def test_probe_at_the_live_edge_proves_nothing() -> None:
    for answer in (None, T0 + 20 * M):  # nothing later, or only a minute that is not settled
        plan = UnitBackfill(r(0, 10), 1000)
        plan.next_request()
        plan.on_page(times(0, 1))
        plan.next_request()
        assert plan.on_probe(answer, settled_end=T0 + 20 * M) is False
        assert plan.outcome.unrecoverable == []
        assert plan.outcome.pending == r(2, 10) and not plan.outcome.complete
        assert plan.next_request() is None


def test_machine_refuses_out_of_order_feeding() -> None:
    plan = UnitBackfill(r(0, 10), 1000)
    with pytest.raises(RuntimeError):
        plan.on_page([])
    with pytest.raises(RuntimeError):
        plan.on_probe(None, 0)
    with pytest.raises(ValueError, match="batch_size"):
        UnitBackfill(r(0, 10), 1001)


@given(st.sets(st.integers(0, 299)), st.integers(1, 120))
def test_every_minute_ends_recovered_or_unrecoverable(present: set[int], batch: int) -> None:
    """Simulate an exchange holding exactly ``present``: the machine classifies every
    minute of the unit correctly, whatever the page size."""
    unit = r(0, 300)
    plan = UnitBackfill(unit, batch)
    stored: set[int] = set()
    while (req := plan.next_request()) is not None:
        if req.probe:
            later = sorted(m for m in present if T0 + m * M >= req.start)
            kept = plan.on_probe(T0 + later[0] * M if later else None, settled_end=T0 + 10_000 * M)
            if kept:
                stored.add(later[0])
        else:
            assert req.end is not None
            answer = [T0 + m * M for m in sorted(present) if req.start <= T0 + m * M <= req.end]
            stored |= {(t - T0) // M for t in plan.on_page(answer)}
    assert stored == present
    lost = {(x.start - T0) // M + i for x in plan.outcome.unrecoverable for i in range(x.minutes)}
    tail = set(range(max(present) + 1, 300)) if present else set(range(300))
    assert lost & set(range(300)) == set(range(300)) - present - tail
    # Minutes after the last one the exchange has are not provable: left pending.
    assert plan.outcome.complete == (not tail)


# ---- schedule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "hour", "expected"),
    [
        ("2025-03-01T01:59:59+00:00", 2, "2025-03-01T02:00:00+00:00"),
        ("2025-03-01T02:00:00+00:00", 2, "2025-03-02T02:00:00+00:00"),  # strictly after
        ("2025-03-01T02:00:01+00:00", 3, "2025-03-01T03:00:00+00:00"),
        ("2025-12-31T23:30:00+00:00", 2, "2026-01-01T02:00:00+00:00"),
        ("2025-03-01T04:30:00+02:00", 2, "2025-03-02T02:00:00+00:00"),  # 02:30 UTC
    ],
)
def test_next_run(now: str, hour: int, expected: str) -> None:
    assert next_run(datetime.fromisoformat(now), hour) == datetime.fromisoformat(expected)


def test_daily_jobs_and_naive_times() -> None:
    assert [(j.sql, j.hour_utc) for j in DAILY_JOBS] == [
        ("SELECT quaint_cleanup()", 2),
        ("SELECT quaint_resolve_predictions()", 3),
    ]
    with pytest.raises(ValueError, match="naive"):
        next_run(datetime(2025, 1, 1), 2)


# ---- progress ------------------------------------------------------------------------


def test_range_task_progress_rate_and_eta() -> None:
    task = RangeTask("id1", "BTCUSDT", r(0, 100), created_mono=0.0, created_at=datetime.now(UTC))
    a, b = r(0, 60), r(60, 100)
    task.start([a, b])
    assert task.state == "running" and task.total_minutes == 100
    task.progress(a, 30)
    assert task.minutes_done == 30
    assert task.rate_per_s(10.0) == 3.0 and task.eta_s(10.0) == pytest.approx(70 / 3)
    task.unit_finished(a, recovered=60, unrecoverable=0, complete=True, now=20.0)
    assert task.state == "running"
    task.unit_finished(b, recovered=30, unrecoverable=10, complete=True, now=25.0)
    assert task.state == "complete" and task.done and task.eta_s(30.0) == 0.0
    assert task.as_json(30.0)["minutes_done"] == 100


def test_range_task_with_pending_unit_is_incomplete() -> None:
    task = RangeTask("id2", "BTCUSDT", r(0, 10), created_mono=0.0, created_at=datetime.now(UTC))
    task.start([r(0, 10)])
    task.unit_finished(r(0, 10), recovered=2, unrecoverable=0, complete=False, now=1.0)
    assert task.state == "incomplete"
    empty = RangeTask("id3", "BTCUSDT", r(0, 10), created_mono=0.0, created_at=datetime.now(UTC))
    empty.start([])
    assert empty.state == "complete" and empty.total_minutes == 0
