"""Prometheus metrics on an explicit registry (one per process, or per test).

The per-symbol figures (gaps found, backfilled, unrecoverable, candles recovered, REST rows
not final, minutes missing in the last 24 h) are plain numbers here, read when Prometheus
scrapes by :class:`PerSymbolCollector`: each always has its all-symbols total (no label),
and a series per symbol only while at most ``PER_SYMBOL_MAX`` symbols are followed or
counted. Beyond that the counters are totals only, and the 24 h gauge that ``CandlesMissing``
reads keeps its ``WORST_EXPORTED`` worst symbols (``quaint.service.series``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from quaint.service.series import PER_SYMBOL_MAX, WORST_EXPORTED, worst

_PREFIX = "quaint_gap_handler"
# The unlabelled total of a per-symbol figure: ``<name>_all_symbols`` (a family of its own:
# ``symbol`` means one symbol wherever it appears, and sum() over a family never counts twice).
ALL = "_all_symbols"


class SymbolCounter:
    """A counter per symbol, and their total."""

    __slots__ = ("by_symbol", "doc", "name", "total")

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self.by_symbol: dict[str, float] = {}
        self.total = 0.0

    def inc(self, symbol: str, amount: float = 1.0) -> None:
        self.by_symbol[symbol] = self.by_symbol.get(symbol, 0.0) + amount
        self.total += amount


class SymbolGauge:
    """A gauge per symbol (a symbol has one once it is set)."""

    __slots__ = ("by_symbol", "doc", "name")

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self.by_symbol: dict[str, float] = {}

    def set(self, symbol: str, value: float) -> None:
        self.by_symbol[symbol] = value


class GapMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gaps_found = SymbolCounter("gaps_found", "Holes found by scans (work units queued).")
        self.gaps_backfilled = SymbolCounter("gaps_backfilled", "Work units backfilled completely.")
        self.gaps_unrecoverable = SymbolCounter(
            "gaps_unrecoverable", "Exchange outages recorded (minutes the exchange does not have)."
        )
        self.candles_recovered = SymbolCounter(
            "candles_recovered", "Candles written from REST that were missing."
        )
        self.rows_not_final = SymbolCounter(
            "rest_rows_not_final", "REST rows not stored: not closed by the exchange's clock."
        )
        self.missing_minutes_24h = SymbolGauge(
            "candles_missing_24h", "Minutes without a candle in the last 24 h (latest scan)."
        )
        # The symbols followed now (the assembly points it at the scans' list).
        self.followed: Callable[[], Collection[str]] = lambda: ()
        registry.register(PerSymbolCollector(self))
        self.requests = Counter(
            f"{_PREFIX}_rest_requests",
            "REST requests by outcome (HTTP status, or timeout/error).",
            ["endpoint", "status"],
            registry=registry,
        )
        self.used_weight = Gauge(
            f"{_PREFIX}_rest_used_weight", "X-MBX-USED-WEIGHT-1M from the latest response.", registry=registry
        )
        self.weight_limit = Gauge(
            f"{_PREFIX}_rest_weight_limit",
            "The exchange's request weight limit per minute.",
            registry=registry,
        )
        self.throttle_waits = Counter(
            f"{_PREFIX}_throttle_waits",
            "Times a request waited for the rate limiter, by reason.",
            ["reason"],
            registry=registry,
        )
        self.throttle_wait_seconds = Counter(
            f"{_PREFIX}_throttle_wait_seconds",
            "Seconds requests spent waiting for the rate limiter.",
            ["reason"],
            registry=registry,
        )
        self.banned = Gauge(
            f"{_PREFIX}_rest_banned",
            "1 while the exchange bans this IP (HTTP 418), else 0.",
            registry=registry,
        )
        self.backfill_duration = Histogram(
            f"{_PREFIX}_backfill_duration_seconds",
            "Wall time of one work unit's backfill.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
            registry=registry,
        )
        self.scan_duration = Histogram(
            f"{_PREFIX}_scan_duration_seconds",
            "Wall time of one scan over all symbols.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{_PREFIX}_backfills_in_flight", "Work units being backfilled.", registry=registry
        )
        self.queued = Gauge(
            f"{_PREFIX}_backfills_queued", "Work units waiting for a worker.", registry=registry
        )
        self.exchange_offset = Gauge(
            f"{_PREFIX}_exchange_clock_offset_seconds",
            "The exchange's clock minus this service's (latest GET /api/v3/time; a lower bound).",
            registry=registry,
        )
        self.exchange_round_trip = Gauge(
            f"{_PREFIX}_exchange_clock_round_trip_seconds",
            "Round trip of the latest GET /api/v3/time (the offset's uncertainty).",
            registry=registry,
        )
        self.db_retries = Counter(
            f"{_PREFIX}_db_retries",
            "Database statements run again after a transient error (deadlock,"
            " serialization failure, lock timeout, cancelled query), by operation.",
            ["operation"],
            registry=registry,
        )
        self.leader = Gauge(
            f"{_PREFIX}_leader",
            "1 while this instance is the active gap handler (holds the leader lock), 0 on standby.",
            registry=registry,
        )
        self.leader_terms = Counter(
            f"{_PREFIX}_leader_terms", "Times this instance became the active gap handler.", registry=registry
        )
        self.errors = Counter(
            f"{_PREFIX}_errors",
            "Errors by kind (permanent REST errors, database loss, ...).",
            ["kind"],
            registry=registry,
        )


class PerSymbolCollector(Collector):
    """The per-symbol figures, bounded in number of series, read when Prometheus scrapes."""

    def __init__(self, metrics: GapMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.m
        counters = (
            m.gaps_found,
            m.gaps_backfilled,
            m.gaps_unrecoverable,
            m.candles_recovered,
            m.rows_not_final,
        )
        followed = m.followed()
        # Every symbol a series could be about: followed now, or counted before (one that left).
        symbols = set(followed).union(m.missing_minutes_24h.by_symbol, *(c.by_symbol for c in counters))
        each = len(symbols) <= PER_SYMBOL_MAX
        each_one = f"A series per symbol while at most {PER_SYMBOL_MAX} are followed"
        for c in counters:
            family = CounterMetricFamily(
                f"{_PREFIX}_{c.name}",
                f"{c.doc} {each_one}; the total is {_PREFIX}_{c.name}{ALL}_total.",
                labels=["symbol"],
            )
            if each:
                # Every followed symbol from 0: increase() sees a symbol's first event.
                for symbol in sorted(symbols):
                    family.add_metric([symbol], c.by_symbol.get(symbol, 0.0))
            yield family
            yield CounterMetricFamily(f"{_PREFIX}_{c.name}{ALL}", f"{c.doc} All symbols.", value=c.total)
        g = m.missing_minutes_24h
        gauge = GaugeMetricFamily(
            f"{_PREFIX}_{g.name}",
            f"{g.doc} {each_one}; beyond, the {WORST_EXPORTED} symbols missing the most.",
            labels=["symbol"],
        )
        for symbol, value in worst(g.by_symbol, len(symbols)):
            gauge.add_metric([symbol], value)
        yield gauge
        yield GaugeMetricFamily(
            f"{_PREFIX}_{g.name}{ALL}", f"{g.doc} All symbols.", value=sum(g.by_symbol.values())
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_symbols_with_candles_missing_24h",
            "Symbols with a minute without a candle in the last 24 h (latest scan).",
            value=sum(1 for v in g.by_symbol.values() if v > 0),
        )
        yield GaugeMetricFamily(f"{_PREFIX}_symbols", "Symbols followed now.", value=len(followed))
        yield GaugeMetricFamily(
            f"{_PREFIX}_per_symbol_series",
            f"1 while every symbol has its own series (at most {PER_SYMBOL_MAX} followed or counted),"
            " 0 beyond (totals only).",
            value=int(each),
        )
