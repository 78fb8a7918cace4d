"""The gap handler's /metrics at the whole market (issue 17): bounded in size at 2,000 symbols,
totals always exact, a series per symbol while the universe is small (unit tests, no I/O)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gap_handler.metrics import GapMetrics, SymbolCounter
from quaint.service.series import PER_SYMBOL_MAX, WORST_EXPORTED, worst

P = "quaint_gap_handler_"
COUNTERS = ("gaps_found", "gaps_backfilled", "gaps_unrecoverable", "candles_recovered", "rest_rows_not_final")
GAUGE = f"{P}candles_missing_24h"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def counter(m: GapMetrics, name: str) -> SymbolCounter:
    found: SymbolCounter = getattr(m, {"rest_rows_not_final": "rows_not_final"}.get(name, name))
    return found


def market(n: int) -> tuple[CollectorRegistry, dict[str, dict[str, float]]]:
    """Metrics of ``n`` followed symbols, each counted and its 24 h gauge set; with what the
    test itself added up, per figure and symbol (the expected values, not read back)."""
    registry = CollectorRegistry()
    m = GapMetrics(registry)
    symbols = [f"S{i:04d}USDT" for i in range(n)]
    m.followed = lambda: symbols
    expected: dict[str, dict[str, float]] = {name: {} for name in (*COUNTERS, "candles_missing_24h")}
    for i, symbol in enumerate(symbols):
        for k, name in enumerate(COUNTERS):
            amount = float((i * (k + 3)) % 11)  # some symbols never counted: 0
            if amount:
                for _ in range(2):  # twice: a counter adds up
                    counter(m, name).inc(symbol, amount)
            expected[name][symbol] = 2 * amount
        missing = float((i * 37) % 1009)  # distinct for i < 1009, many ties beyond
        m.missing_minutes_24h.set(symbol, missing)
        expected["candles_missing_24h"][symbol] = missing
    return registry, expected


def exposed(registry: CollectorRegistry) -> tuple[str, Samples]:
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def per_symbol(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["symbol"]: v for (n, labels), v in samples.items() if n == name and labels}


def test_two_thousand_symbols_export_a_bounded_page_with_exact_totals() -> None:
    registry, expected = market(2000)
    text, samples = exposed(registry)
    assert len(samples) < 120  # ~12,000 with a series per symbol and figure
    assert len(text) < 20_000
    # Twice the market: not one sample more (the size does not follow the universe).
    assert len(exposed(market(4000)[0])[1]) == len(samples)
    for name in COUNTERS:
        assert per_symbol(samples, f"{P}{name}_total") == {}
        total = samples[(f"{P}{name}_all_symbols_total", ())]
        assert total == sum(expected[name].values()) > 0, name
    missing = expected["candles_missing_24h"]
    assert samples[(f"{P}candles_missing_24h_all_symbols", ())] == sum(missing.values())
    assert samples[(f"{P}symbols_with_candles_missing_24h", ())] == sum(1 for v in missing.values() if v > 0)
    assert samples[(f"{P}symbols", ())] == 2000
    assert samples[(f"{P}per_symbol_series", ())] == 0
    # The gauge CandlesMissing reads keeps the worst symbols, with their own values.
    kept = per_symbol(samples, GAUGE)
    assert len(kept) == WORST_EXPORTED
    assert all(missing[s] == v for s, v in kept.items())
    assert min(kept.values()) >= max(v for s, v in missing.items() if s not in kept)
    assert max(kept.values()) == max(missing.values())


@pytest.mark.parametrize("n", [3, PER_SYMBOL_MAX])
def test_a_small_universe_has_every_symbols_series(n: int) -> None:
    registry, expected = market(n)
    text, samples = exposed(registry)
    for name in (*COUNTERS, "candles_missing_24h"):
        family = f"{P}{name}_total" if name in COUNTERS else GAUGE
        # Every followed symbol, the ones never counted at 0 (increase() sees their first event).
        assert per_symbol(samples, family) == expected[name], name
    for name in COUNTERS:
        assert samples[(f"{P}{name}_all_symbols_total", ())] == sum(expected[name].values())
    assert samples[(f"{P}per_symbol_series", ())] == 1
    assert samples[(f"{P}symbols", ())] == n
    promtool = shutil.which("promtool")
    if promtool is not None:  # Debian package "prometheus"; the parser above runs regardless
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_one_symbol_past_the_limit_drops_the_per_symbol_counters() -> None:
    registry, expected = market(PER_SYMBOL_MAX + 1)
    _, samples = exposed(registry)
    assert per_symbol(samples, f"{P}candles_recovered_total") == {}
    assert len(per_symbol(samples, GAUGE)) == WORST_EXPORTED
    recovered = samples[(f"{P}candles_recovered_all_symbols_total", ())]
    assert recovered == sum(expected["candles_recovered"].values())


def test_a_symbol_counted_but_no_longer_followed_keeps_its_series() -> None:
    registry = CollectorRegistry()
    m = GapMetrics(registry)
    m.followed = lambda: ["BTCUSDT"]
    m.candles_recovered.inc("OLDUSDT", 5)
    _, samples = exposed(registry)
    assert per_symbol(samples, f"{P}candles_recovered_total") == {"BTCUSDT": 0, "OLDUSDT": 5}
    assert samples[(f"{P}candles_recovered_all_symbols_total", ())] == 5


def test_worst_breaks_ties_by_symbol() -> None:
    values = {f"S{i:03d}": float(i % 3) for i in range(PER_SYMBOL_MAX + 80)}  # 60 twos
    kept = worst(values, len(values))
    assert len(kept) == WORST_EXPORTED
    twos = sorted(s for s, v in values.items() if v == 2)
    assert kept == [(s, 2.0) for s in twos[:WORST_EXPORTED]]
    assert worst(values, PER_SYMBOL_MAX) == sorted(values.items())
