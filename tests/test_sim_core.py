"""Sans-I/O tests: simulated clock, REST parameter rules, weights, what exists when."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quaint.binance.models import MINUTE_MS, ApiError
from quaint.binance.rules import KlinesQuery, WeightLimiter, parse_exchange_info, parse_klines
from simulator.clock import LiveClock, SimClock, minute_floor
from simulator.exchange import Exchange
from simulator.faults import FaultController
from simulator.market import MarketModel

T0 = 1_700_000_040_000
SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- clock -----------------------------------------------------------------------


def test_clock_maps_wall_to_simulated_time() -> None:
    clock = SimClock(start_ms=T0, speed=60, wall_origin=100.0)
    assert clock.now_ms(100.0) == T0
    assert clock.now_ms(101.0) == T0 + 60_000  # one wall second = one simulated minute
    assert clock.wall_at(T0 + 60_000) == pytest.approx(101.0)
    assert clock.wall_delay(T0 + 30_000, 100.25) == pytest.approx(0.25)
    assert clock.wall_delay(T0, 105.0) == 0.0


@given(
    speed=st.floats(min_value=0.001, max_value=100_000),
    target=st.integers(min_value=1, max_value=10**10),
)
def test_wall_at_never_fires_early(speed: float, target: int) -> None:
    clock = SimClock(start_ms=T0, speed=speed, wall_origin=5.0)
    assert clock.now_ms(clock.wall_at(T0 + target)) >= T0 + target


def test_frozen_clock_and_bad_speed() -> None:
    frozen = SimClock(start_ms=T0, speed=0, wall_origin=0.0)
    assert frozen.now_ms(1e6) == T0 and math.isinf(frozen.wall_at(T0 + 1))
    with pytest.raises(ValueError, match="speed"):
        SimClock(start_ms=T0, speed=-1, wall_origin=0.0)


def test_live_clock_with_injected_time_source() -> None:
    fake = FakeTime()
    clock = LiveClock(T0, speed=2.0, time_source=fake)
    changes: list[int] = []
    clock.on_change(lambda: changes.append(clock.now_ms()))
    fake.now += 1.5
    assert clock.now_ms() == T0 + 3_000
    clock.set(speed=10.0)
    fake.now += 1.0
    assert clock.now_ms() == T0 + 13_000
    clock.set(advance_ms=MINUTE_MS)
    assert clock.now_ms() == T0 + 73_000
    assert changes == [T0 + 3_000, T0 + 73_000]
    with pytest.raises(ValueError, match="backwards"):
        clock.set(advance_ms=-1)
    assert minute_floor(T0 + 59_999) == T0


# ---- REST parameter rules ----------------------------------------------------------


def _klines(**params: str) -> KlinesQuery | ApiError:
    return parse_klines(params, SYMBOLS)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"interval": "1m"}, -1102),
        ({"symbol": "", "interval": "1m"}, -1102),
        ({"symbol": "btcusdt", "interval": "1m"}, -1100),
        ({"symbol": "BTC/USDT", "interval": "1m"}, -1100),
        ({"symbol": "XRPUSDT", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "abc"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "1001"}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "0"}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "-5"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "20", "endTime": "10"}, -1130),
    ],
)
def test_klines_parameter_errors(params: dict[str, str], code: int) -> None:
    result = _klines(**params)
    assert isinstance(result, ApiError) and result.code == code, result


def test_klines_parameters_ok_and_defaults() -> None:
    q = _klines(symbol="BTCUSDT", interval="1m")
    assert isinstance(q, KlinesQuery) and q.limit == 500 and q.start_ms is None
    assert q.window(T0) == (0, T0, True)  # no times: the most recent rows
    q = _klines(symbol="BTCUSDT", interval="1m", startTime=str(T0 * 1000), limit="1000")  # µs accepted
    assert isinstance(q, KlinesQuery) and q.start_ms == T0 and q.limit == 1000
    assert q.window(T0 + 1) == (T0, T0 + 1, False)
    q = _klines(symbol="BTCUSDT", interval="1m", endTime=str(T0))
    assert isinstance(q, KlinesQuery) and q.window(T0 + 10**6) == (0, T0, True)
    assert isinstance(
        parse_klines({"symbol": "BTCUSDT", "interval": "1m"}, SYMBOLS, "MICROSECOND"), KlinesQuery
    )
    bad_unit = parse_klines({"symbol": "BTCUSDT", "interval": "1m"}, SYMBOLS, "NANOSECOND")
    assert isinstance(bad_unit, ApiError) and bad_unit.code == -1194


def test_exchange_info_parameters() -> None:
    assert parse_exchange_info({}, SYMBOLS) == ["BTCUSDT", "ETHUSDT"]
    assert parse_exchange_info({"symbol": "ETHUSDT"}, SYMBOLS) == ["ETHUSDT"]
    assert parse_exchange_info({"symbols": '["BTCUSDT"]'}, SYMBOLS) == ["BTCUSDT"]
    for params, code in [
        ({"symbol": "NOPE"}, -1121),
        ({"symbols": '["BTCUSDT","BTCUSDT"]'}, -1151),
        ({"symbols": "[BTC"}, -1100),
        ({"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'}, -1128),
    ]:
        result = parse_exchange_info(params, SYMBOLS)
        assert isinstance(result, ApiError) and result.code == code


# ---- weights ------------------------------------------------------------------------


def test_weight_limit_429_then_418_ban() -> None:
    limiter = WeightLimiter(10, window_ms=60_000, ban_after=2, ban_ms=120_000)
    now = 600_000  # window start
    for i in range(5):
        verdict = limiter.charge("1.2.3.4", 2, now + i)
        assert verdict.status == 200 and verdict.used_weight == 2 * (i + 1)
    over = limiter.charge("1.2.3.4", 2, now + 30_000)
    assert over.status == 429 and over.retry_after_s == 30  # until the window ends
    assert limiter.charge("5.6.7.8", 2, now).status == 200  # per IP
    assert limiter.charge("1.2.3.4", 2, now + 30_001).status == 429
    ban = limiter.charge("1.2.3.4", 2, now + 30_002)
    assert ban.status == 418 and ban.retry_after_s == 120
    # Banned even in a fresh window, until the ban expires.
    assert limiter.charge("1.2.3.4", 1, now + 90_000).status == 418
    assert limiter.charge("1.2.3.4", 1, now + 30_002 + 120_000).status == 200


def test_new_window_resets_weight() -> None:
    limiter = WeightLimiter(4, window_ms=1_000)
    assert limiter.charge("ip", 4, 0).status == 200
    assert limiter.charge("ip", 1, 999).status == 429
    assert limiter.charge("ip", 1, 1_000).used_weight == 1
    assert limiter.used("ip", 1_500) == 1 and limiter.used("ip", 2_000) == 0


# ---- what exists --------------------------------------------------------------------


@pytest.fixture
def exchange() -> Exchange:
    return Exchange(MarketModel(1, sorted(SYMBOLS)), FaultController(), history_ms=10 * MINUTE_MS)


def test_history_depth_and_now_bound_the_minutes(exchange: Exchange) -> None:
    now = T0 + 30_500  # half-way through minute T0
    times = exchange.open_times("BTCUSDT", 0, now, 1000, from_end=True, now_ms=now)
    assert times[-1] == T0  # the open minute is included
    assert times[0] == T0 - 9 * MINUTE_MS  # 10 minutes of depth, ceil'ed
    assert len(times) == 10
    assert exchange.open_times("BTCUSDT", 0, now, 3, from_end=True, now_ms=now)[0] == T0 - 2 * MINUTE_MS
    assert exchange.open_times("BTCUSDT", T0 - 5 * MINUTE_MS + 1, now, 2, from_end=False, now_ms=now) == [
        T0 - 4 * MINUTE_MS,
        T0 - 3 * MINUTE_MS,
    ]


def test_open_minute_is_partial_and_closed_ones_final(exchange: Exchange) -> None:
    now = T0 + 30_500
    rows = exchange.klines("BTCUSDT", T0 - MINUTE_MS, now, 10, from_end=False, now_ms=now)
    assert [c.open_time for c in rows] == [T0 - MINUTE_MS, T0]
    assert rows[0] == exchange.market.candle("BTCUSDT", T0 - MINUTE_MS)
    partial = exchange.market.partial("BTCUSDT", T0, 15)
    assert partial is not None and rows[1] == partial[0]
    assert rows[1] != exchange.market.candle("BTCUSDT", T0)
    assert exchange.truth("BTCUSDT", T0 - 3 * MINUTE_MS, T0 + MINUTE_MS, now)[-1].open_time == T0 - MINUTE_MS


def test_outage_minutes_exist_nowhere(exchange: Exchange) -> None:
    now = T0 + 5 * MINUTE_MS
    exchange.faults.add_outage(T0, T0 + 2 * MINUTE_MS)
    exchange.faults.add_outage(T0 - 3 * MINUTE_MS, T0 - 2 * MINUTE_MS, "ETHUSDT")
    times = exchange.open_times("BTCUSDT", T0 - MINUTE_MS, now, 3, from_end=False, now_ms=now)
    assert times == [T0 - MINUTE_MS, T0 + 2 * MINUTE_MS, T0 + 3 * MINUTE_MS]  # skipped, page filled after
    back = exchange.open_times("BTCUSDT", 0, T0 + 2 * MINUTE_MS, 2, from_end=True, now_ms=now)
    assert back == [T0 - MINUTE_MS, T0 + 2 * MINUTE_MS]
    assert not exchange.exists("BTCUSDT", T0 + MINUTE_MS, now)
    assert exchange.exists("BTCUSDT", T0 - 3 * MINUTE_MS, now)
    assert not exchange.exists("ETHUSDT", T0 - 3 * MINUTE_MS, now)
    assert exchange.exists("BTCUSDT", T0 - 5 * MINUTE_MS, now)  # exactly the history depth
    assert not exchange.exists("BTCUSDT", T0 - 6 * MINUTE_MS, now)  # older than that
    truth = exchange.truth("BTCUSDT", T0 - MINUTE_MS, T0 + 3 * MINUTE_MS, now)
    assert [c.open_time for c in truth] == [T0 - MINUTE_MS, T0 + 2 * MINUTE_MS]
