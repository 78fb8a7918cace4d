"""Gap detection, the stale-stream watchdog and connection planning (no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeder.core.accumulator import DropReport
from feeder.core.connections import ConnectRateLimiter, plan_connections
from feeder.core.events import drop_events, gap_event
from feeder.core.gaps import Gap, GapDetector, Verdict, minute_ranges
from feeder.core.watchdog import StaleWatchdog
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from tests.support.feeder import T0


def m(i: int) -> int:
    return T0 + i * MINUTE_MS


def test_consecutive_minutes_are_no_gap() -> None:
    g = GapDetector(70)
    assert g.on_closed("BTCUSDT", m(0)) == (Verdict.NEW, None)
    assert g.on_closed("BTCUSDT", m(1)) == (Verdict.NEW, None)


def test_missing_minutes_make_one_gap_with_exact_bounds() -> None:
    g = GapDetector(70)
    g.on_closed("BTCUSDT", m(0))
    verdict, gap = g.on_closed("BTCUSDT", m(4))
    assert verdict is Verdict.NEW
    assert gap == Gap("BTCUSDT", m(1), m(3), "threshold")
    assert gap.missing == 3


def test_symbols_are_independent() -> None:
    g = GapDetector(70)
    g.on_closed("BTCUSDT", m(0))
    g.on_closed("ETHUSDT", m(5))
    assert g.on_closed("BTCUSDT", m(1))[1] is None
    assert g.on_closed("ETHUSDT", m(6))[1] is None


def test_duplicates_and_late_candles_never_move_the_marker() -> None:
    g = GapDetector(70)
    g.on_closed("BTCUSDT", m(0))
    g.on_closed("BTCUSDT", m(3))  # gap 1..2 reported here
    assert g.on_closed("BTCUSDT", m(3)) == (Verdict.DUPLICATE, None)
    assert g.on_closed("BTCUSDT", m(2)) == (Verdict.LATE, None)  # late: fills, no new gap
    assert g.on_closed("BTCUSDT", m(4)) == (Verdict.NEW, None)
    assert g.last("BTCUSDT") == m(4)


def test_reconnect_compares_strictly_whatever_the_threshold() -> None:
    g = GapDetector(180)  # steady state tolerates up to 2 missing minutes
    g.on_closed("BTCUSDT", m(0))
    assert g.on_closed("BTCUSDT", m(2))[1] is None  # 1 missing minute, under the threshold
    g.mark_reconnect(["BTCUSDT"])
    assert g.on_closed("BTCUSDT", m(4))[1] == Gap("BTCUSDT", m(3), m(3), "reconnect")
    # strict only for the first candle after the reconnect
    assert g.on_closed("BTCUSDT", m(6))[1] is None


def test_reconnect_without_loss_reports_nothing() -> None:
    g = GapDetector(70)
    g.on_closed("BTCUSDT", m(0))
    g.mark_reconnect(["BTCUSDT", "ETHUSDT"])  # ETHUSDT has no baseline: nothing to compare
    assert g.on_closed("BTCUSDT", m(1))[1] is None
    assert g.on_closed("ETHUSDT", m(9))[1] is None


def test_one_gap_one_report_across_reconnect_and_threshold_paths() -> None:
    g = GapDetector(70)
    g.on_closed("BTCUSDT", m(0))
    g.mark_reconnect(["BTCUSDT"])
    g.mark_reconnect(["BTCUSDT"])  # e.g. a failed attempt, then a stale recycle
    gaps = [g.on_closed("BTCUSDT", t)[1] for t in (m(5), m(5), m(3), m(6))]
    assert gaps == [Gap("BTCUSDT", m(1), m(4), "reconnect"), None, None, None]


def test_startup_baseline_reports_the_hole_since_the_last_stored_minute() -> None:
    g = GapDetector(70)
    g.seed("BTCUSDT", m(0))
    g.seed("ETHUSDT", None)
    assert g.on_closed("BTCUSDT", m(10))[1] == Gap("BTCUSDT", m(1), m(9), "startup")
    assert g.on_closed("ETHUSDT", m(10))[1] is None
    g2 = GapDetector(70)
    g2.seed("BTCUSDT", m(9))
    assert g2.on_closed("BTCUSDT", m(9)) == (Verdict.DUPLICATE, None)  # already stored
    assert g2.on_closed("BTCUSDT", m(10))[1] is None  # stored up to the minute before: no gap


def test_threshold_below_a_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one minute"):
        GapDetector(59)


@given(st.lists(st.integers(0, 40), min_size=1, max_size=60), st.sets(st.integers(0, 59)))
def test_reported_gaps_are_disjoint_and_never_cover_a_seen_minute(
    minutes: list[int], reconnect_at: set[int]
) -> None:
    g = GapDetector(70)
    seen: set[int] = set()
    gaps: list[Gap] = []
    for i, minute in enumerate(minutes):
        if i in reconnect_at:
            g.mark_reconnect(["BTCUSDT"])
        _, gap = g.on_closed("BTCUSDT", m(minute))
        if gap is not None:
            covered = set(range((gap.start - T0) // MINUTE_MS, (gap.end - T0) // MINUTE_MS + 1))
            assert not covered & seen  # nothing already received is reported missing
            for other in gaps:
                assert gap.start > other.end or gap.end < other.start
            gaps.append(gap)
        seen.add(minute)
    # Every minute below the newest is either seen or inside exactly one reported gap.
    newest = max(minutes)
    first = minutes[0]
    reported = {(t - T0) // MINUTE_MS for gp in gaps for t in range(gp.start, gp.end + 1, MINUTE_MS)}
    assert set(range(first, newest + 1)) <= seen | reported


def test_minute_ranges() -> None:
    assert minute_ranges([]) == []
    assert minute_ranges([m(0), m(1), m(2), m(5), m(7), m(8)]) == [(m(0), m(2)), (m(5), m(5)), (m(7), m(8))]


def test_gap_event_row() -> None:
    event = gap_event(Gap("BTCUSDT", m(1), m(3), "reconnect"))
    assert event.event_type == "gap_detected"
    assert (event.gap_start, event.gap_end) == (ms_to_datetime(m(1)), ms_to_datetime(m(3)))
    assert event.candles_missing == 3
    assert event.source == "feeder" and event.resolved is False


def test_dropped_candles_become_gaps_for_backfill() -> None:
    report = DropReport({"BTCUSDT": 7}, {"ETHUSDT": [m(1), m(2), m(4)]}, 0)
    events = drop_events(report)
    assert events[0].event_type == "data_dropped"
    assert events[0].details["book_ticks"] == {"BTCUSDT": 7}
    assert [(e.symbol, e.gap_start, e.candles_missing) for e in events[1:]] == [
        ("ETHUSDT", ms_to_datetime(m(1)), 2),
        ("ETHUSDT", ms_to_datetime(m(4)), 1),
    ]


# ---- watchdog ----


def test_watchdog_flags_a_silent_symbol_once_per_allowance() -> None:
    w = StaleWatchdog(timeout_s=10)
    w.arm(["A", "B"], now=0.0)
    w.on_closed("A", 5.0)
    assert w.stale(["A", "B"], 9.0) == []
    assert w.stale(["A", "B"], 10.5) == ["B"]
    assert w.stale(["A", "B"], 11.0) == []  # B was just acted on
    assert w.stale(["A", "B"], 15.5) == ["A"]
    assert w.is_stale("B", 11.0)  # health keeps saying so until a candle arrives


def test_watchdog_backs_off_for_a_symbol_that_stays_silent() -> None:
    w = StaleWatchdog(timeout_s=10, max_factor=4)
    w.arm(["A"], 0.0)
    hits = [t for t in range(0, 200) if w.stale(["A"], float(t))]
    # allowances 10, 20, 40, then capped at 40
    assert hits == [11, 32, 73, 114, 155, 196]
    w.on_closed("A", 200.0)
    assert not w.is_stale("A", 200.0)
    assert w.stale(["A"], 211.0) == ["A"]  # back to the base allowance


def test_watchdog_rearm_on_reconnect_and_age_metric() -> None:
    w = StaleWatchdog(timeout_s=10)
    assert w.stale(["A"], 100.0) == []  # never armed: not watched
    w.arm(["A"], 100.0)
    assert w.since_last_closed("A", 100.0) is None
    assert w.stale(["A"], 109.0) == []
    w.on_closed("A", 109.0)
    assert w.since_last_closed("A", 112.0) == pytest.approx(3.0)


# ---- connections ----


def test_plan_keeps_a_symbols_streams_together() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(5)]
    plans = plan_connections(symbols, "sampled", streams_per_connection=4)
    assert [p.symbols for p in plans] == [tuple(symbols[0:2]), tuple(symbols[2:4]), tuple(symbols[4:5])]
    assert plans[0].streams == (
        "s000usdt@kline_1m",
        "s000usdt@bookTicker",
        "s001usdt@kline_1m",
        "s001usdt@bookTicker",
    )
    assert plans[0].url("ws://h:1/") == (
        "ws://h:1/stream?streams=s000usdt@kline_1m/s000usdt@bookTicker/s001usdt@kline_1m/s001usdt@bookTicker"
    )
    off = plan_connections(symbols, "off", streams_per_connection=4)
    assert [len(p.streams) for p in off] == [4, 1]


def test_plan_at_binance_limits() -> None:
    symbols = [f"S{i:04d}USDT" for i in range(1500)]
    plans = plan_connections(symbols, "all", streams_per_connection=1024)
    assert [len(p.streams) for p in plans] == [1024, 1024, 952]
    assert sum(len(p.symbols) for p in plans) == 1500


def test_rate_limiter_spaces_and_caps_connections() -> None:
    lim = ConnectRateLimiter(per_second=5, per_window=3, window_s=300)
    assert lim.delay(0.0) == 0
    lim.record(0.0)
    assert lim.delay(0.1) == pytest.approx(0.1)  # 5/s: 200 ms apart
    lim.record(0.2)
    lim.record(0.4)
    assert lim.delay(0.6) == pytest.approx(299.4)  # window full until the first one ages out
    assert lim.delay(300.0) == 0
