"""The shared rate core (token bucket, weight budget, pauses): sans-I/O, no loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gap_handler.core.rate import RateGate, TokenBucket, WeightBudget
from gap_handler.fetcher import seconds_to_minute_reset


def drive(gate: RateGate, until: float, weight: int = 1) -> list[float]:
    """Grant as fast as the gate allows, from t=0 to ``until``; returns grant times."""
    now, grants = 0.0, []
    while now < until:
        wait = gate.try_acquire(now, weight)
        if wait <= 0:
            grants.append(now)
        else:
            now += max(wait, 1e-9)  # a float-sized wait must still advance time
    return grants


def max_in_window(grants: list[float], window: float = 1.0) -> int:
    best, j = 0, 0
    for i, t in enumerate(grants):
        while grants[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_bucket_waits_for_the_next_token() -> None:
    bucket = TokenBucket(rate=10, now=0.0)
    assert bucket.wait_time(0.0) == 0.0
    bucket.take(0.0)
    assert bucket.wait_time(0.0) == pytest.approx(0.1)
    assert bucket.wait_time(0.05) == pytest.approx(0.05)
    with pytest.raises(RuntimeError):
        bucket.take(0.05)
    assert bucket.wait_time(10.0) == 0.0  # idle: one token, never a burst
    bucket.take(10.0)
    assert bucket.wait_time(10.0) > 0
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0)


@given(st.integers(1, 200))
def test_gate_never_exceeds_rate_in_any_one_second_window(rate: int) -> None:
    gate = RateGate(rate, weight_limit=10**9)
    grants = drive(gate, 5.0)
    assert max_in_window(grants) <= rate
    # A request arriving up to 15 ms late still cannot make a window hold rate + 1.
    assert max_in_window(grants, 1.015) <= rate
    # ... and is not much slower than asked (2 % safety margin).
    assert len(grants) >= int(5.0 * rate / 1.03)


def test_429_pauses_everyone_for_retry_after() -> None:
    gate = RateGate(100, weight_limit=10**9)
    assert gate.try_acquire(0.0) == 0.0
    gate.on_rate_limited(0.5, 3.0)
    assert gate.try_acquire(1.0) == pytest.approx(2.5)
    assert gate.state(1.0).state == "throttled" and gate.state(1.0).until == pytest.approx(3.5)
    assert gate.try_acquire(3.5) == 0.0
    assert gate.state(3.6).state == "ok"


def test_418_bans_until_retry_after_and_is_reported() -> None:
    gate = RateGate(100)
    gate.on_banned(1.0, 120.0)
    gate.on_rate_limited(1.0, 5.0)  # a shorter pause does not shorten the ban
    assert gate.try_acquire(2.0) == pytest.approx(119.0)
    state = gate.state(2.0)
    assert state.state == "banned" and state.until == pytest.approx(121.0)
    assert gate.try_acquire(121.0) == 0.0


def test_weight_budget_slows_down_then_stops_before_the_limit() -> None:
    budget = WeightBudget(limit=100, soft=0.5, hard=0.9)
    budget.observe(10, now=0.0, reset_in=30.0)
    assert budget.wait_time(0.0, 2) == 0.0
    budget.observe(60, now=1.0, reset_in=29.0)  # above soft: spread the rest over the window
    budget.take(1.0, 2)
    # 62 used, (90 - 62) / 2 = 14 slots left for 29 s: about 2 s apart.
    assert budget.wait_time(1.0, 2) == pytest.approx(29 / 14, rel=0.01)
    budget.observe(89, now=2.0, reset_in=28.0)  # at the hard line: wait for the reset
    assert budget.wait_time(2.0, 2) == pytest.approx(28.0)
    assert budget.wait_time(30.0, 2) == 0.0  # a new window
    assert budget.estimated_used(30.0) == 0


def test_gate_keeps_weight_below_the_exchange_limit() -> None:
    """With the exchange reporting weight as it is spent, a fast gate never crosses
    the limit inside one window."""
    gate = RateGate(1000, weight_limit=100, soft=0.7, hard=0.9)
    now, used, window_end = 0.0, 0, 60.0
    while now < 60.0:
        wait = gate.try_acquire(now, 2)
        if wait > 0:
            now += max(wait, 1e-9)  # a float-sized wait must still advance time
            continue
        used += 2
        assert used <= 100
        gate.observe_weight(used, now, window_end - now)
    assert used >= 88  # it did use the budget


def test_gate_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="limit > 0"):
        WeightBudget(limit=0)
    with pytest.raises(ValueError, match="soft < hard"):
        WeightBudget(limit=10, soft=0.9, hard=0.5)


def test_minute_reset() -> None:
    assert seconds_to_minute_reset(120.0) == 60.0
    assert seconds_to_minute_reset(125.5) == pytest.approx(54.5)
