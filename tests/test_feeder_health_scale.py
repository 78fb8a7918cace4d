"""/health and /metrics stay bounded at the whole market's size (issue 17): counts by state and the
stalest few always, per-symbol detail up to DETAIL_MAX symbols or on request."""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from feeder.core.accumulator import Accumulator
from feeder.core.gaps import GapDetector
from feeder.core.health import DETAIL_MAX, STALEST_SHOWN, Detail, HealthInputs, SymbolHealth, build_health
from feeder.core.router import FrameRouter
from feeder.core.watchdog import StaleWatchdog
from feeder.metrics import StateCollector
from quaint.service.series import WORST_EXPORTED

N = 2000


def market(n: int = N) -> list[SymbolHealth]:
    """Every 100th symbol stale (silent for 300 + i s), every 7th never had a candle, the rest fine."""
    out = []
    for i in range(n):
        stale = i % 100 == 0
        out.append(
            SymbolHealth(
                symbol=f"S{i}USDT",
                last_candle_open=None if i % 7 == 3 else 1_700_000_000_000,
                seconds_since_last_candle=300.0 + i if stale else (None if i % 7 == 3 else 1.0),
                stale=stale,
                connected=True,
            )
        )
    return out


def inputs(symbols: list[SymbolHealth]) -> HealthInputs:
    return HealthInputs(4, 4, True, False, 10, 5.0, symbols)


def test_health_at_two_thousand_symbols_is_a_summary() -> None:
    body = build_health(inputs(market())).body
    assert "symbols" not in body
    assert body["symbol_states"] == {"streaming": 1697, "stale": 20, "waiting": 283, "disconnected": 0}
    assert sum(body["symbol_states"].values()) == N
    stalest = [s["symbol"] for s in body["stalest"]]
    assert stalest == [f"S{i}USDT" for i in range(1900, 1900 - 100 * STALEST_SHOWN, -100)]  # worst first
    assert len(orjson.dumps(body)) < 4_000  # a small constant, not a line per symbol


def test_per_symbol_detail_on_request() -> None:
    h = inputs(market())
    one = build_health(h, Detail.from_query({"symbol": "s5usdt,S6USDT,NOPE"})).body["symbols"]
    assert sorted(one) == ["S5USDT", "S6USDT"]
    assert one["S6USDT"]["seconds_since_last_candle"] == 1.0
    stale = build_health(h, Detail.from_query({"state": "stale"})).body["symbols"]
    assert len(stale) == 20 and all(v["stale"] for v in stale.values())
    assert len(build_health(h, Detail.from_query({"symbols": "all"})).body["symbols"]) == N
    assert Detail.from_query({"unrelated": "1"}) is None


def test_a_few_symbols_keep_their_detail_by_default() -> None:
    body = build_health(inputs(market(DETAIL_MAX))).body
    assert len(body["symbols"]) == DETAIL_MAX


def test_metrics_at_two_thousand_symbols_are_bounded() -> None:
    symbols = [f"S{i}USDT" for i in range(N)]
    watchdog = StaleWatchdog(60.0)
    for i, s in enumerate(symbols):
        watchdog.on_closed(s, float(i))  # S0USDT has been silent the longest
    acc = Accumulator(
        batch_size=10, linger_s=1.0, max_batch_rows=100, max_buffered=1000, signal=asyncio.Event
    )
    router = FrameRouter(symbols, "sampled", acc, GapDetector(70.0), watchdog)
    registry = CollectorRegistry()
    registry.register(
        StateCollector(router, acc, watchdog, symbols, lambda: 4, lambda: True, clock=lambda: float(N))
    )
    lines = generate_latest(registry).decode().splitlines()
    ages = [x for x in lines if x.startswith("feeder_seconds_since_last_closed_candle{")]
    assert len(ages) == WORST_EXPORTED
    assert any('symbol="S0USDT"' in x for x in ages)  # the stalest are the ones kept
    assert not any('symbol="S1999USDT"' in x for x in ages)
    assert "feeder_max_seconds_since_last_closed_candle 2000.0" in lines
    assert "feeder_symbols 2000.0" in lines
    assert len(lines) < 300
