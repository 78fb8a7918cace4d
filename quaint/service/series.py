"""How many per-symbol series a service's ``/metrics`` exports (sans-I/O).

The whole market is ~2,000 symbols: a series per symbol and metric would be thousands of
samples per scrape. Up to ``PER_SYMBOL_MAX`` followed symbols every symbol has its own series;
beyond, a per-symbol gauge an alert reads exports only its ``WORST_EXPORTED`` worst symbols (what
the alert needs), and every figure also has a total (or count, or maximum) with no label.
"""

from __future__ import annotations

from collections.abc import Mapping

PER_SYMBOL_MAX = 100
WORST_EXPORTED = 50


def worst(values: Mapping[str, float], universe: int) -> list[tuple[str, float]]:
    """The ``(symbol, value)`` pairs a per-symbol gauge exports when ``universe`` symbols are
    followed: all of them (by symbol) up to ``PER_SYMBOL_MAX``, beyond it the
    ``WORST_EXPORTED`` highest values (ties by symbol, so the set is stable between scrapes)."""
    if universe <= PER_SYMBOL_MAX:
        return sorted(values.items())
    return sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:WORST_EXPORTED]
