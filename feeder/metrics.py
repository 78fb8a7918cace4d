"""Prometheus metrics, all on the explicit registry passed in.

Per-message counts live as plain ints on the sans-I/O cores and are read at scrape
time by :class:`StateCollector` (no metric call on the hot path); per-batch and
per-event values use ordinary instruments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from feeder.core.accumulator import Accumulator
from feeder.core.router import FrameRouter
from feeder.core.watchdog import StaleWatchdog
from quaint.service.series import worst

ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Commits take a few ms and the receipt-to-commit target is p99 <= 5 ms: fine steps up
# to 10 ms, so a quantile read from the buckets is off by at most 1 ms where it matters.
_FINE_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.01)
# A minute's close (2,000 candles at once) lands between 10 and 100 ms when it goes wrong.
_BURST_BUCKETS = (0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1)
COMMIT_BUCKETS = (*_FINE_BUCKETS, *_BURST_BUCKETS, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass(frozen=True, slots=True)
class FeederMetrics:
    rows_written: Counter
    rows_rejected: Counter
    batch_rows: Histogram
    flush_seconds: Histogram
    commit_latency: Histogram
    reconnects: Counter
    rollovers: Counter
    connections_opened: Counter
    db_errors: Counter
    features_written: Counter
    feature_seconds: Histogram
    control_messages: Counter
    universe_changes: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FeederMetrics:
        r = registry
        return cls(
            rows_written=Counter(
                "feeder_rows_written", "Rows committed to the database", ["table"], registry=r
            ),
            rows_rejected=Counter(
                "feeder_rows_rejected",
                "Rows the database refused as invalid (dropped after isolating them)",
                ["table"],
                registry=r,
            ),
            batch_rows=Histogram(
                "feeder_batch_size_rows", "Rows per committed batch", buckets=ROW_BUCKETS, registry=r
            ),
            flush_seconds=Histogram(
                "feeder_flush_duration_seconds",
                "Time to commit one batch",
                buckets=COMMIT_BUCKETS,
                registry=r,
            ),
            commit_latency=Histogram(
                "feeder_receipt_to_commit_seconds",
                "Receipt to commit latency: per closed candle; for book ticks, the oldest tick of each batch",
                ["kind"],
                buckets=COMMIT_BUCKETS,
                registry=r,
            ),
            reconnects=Counter(
                "feeder_ws_reconnects", "WebSocket reconnects after a failure", ["reason"], registry=r
            ),
            rollovers=Counter(
                "feeder_ws_rollovers", "Planned WebSocket connection replacements", ["reason"], registry=r
            ),
            connections_opened=Counter(
                "feeder_ws_connections_opened", "WebSocket connections opened", registry=r
            ),
            db_errors=Counter(
                "feeder_db_write_errors",
                "Failed batch writes by error class (connection_lost, transient, rejected, server)",
                ["kind"],
                registry=r,
            ),
            features_written=Counter("feeder_features_written", "feature_cache rows upserted", registry=r),
            feature_seconds=Histogram(
                "feeder_feature_run_duration_seconds",
                "Time of one feature computation pass",
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            control_messages=Counter(
                "feeder_ws_control_messages",
                "SUBSCRIBE/UNSUBSCRIBE requests sent on open connections",
                ["method"],
                registry=r,
            ),
            universe_changes=Counter(
                "feeder_universe_changes",
                "Symbols listed, halted, resumed or delisted, as seen by the universe refresh",
                ["event"],
                registry=r,
            ),
        )


class StateCollector(Collector):
    """Reads the cores' counters and gauges when Prometheus scrapes."""

    def __init__(
        self,
        router: FrameRouter,
        acc: Accumulator,
        watchdog: StaleWatchdog,
        symbols: list[str],
        connections_open: Callable[[], int],
        database_up: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.router = router
        self.acc = acc
        self.watchdog = watchdog
        self.symbols = symbols
        self.connections_open = connections_open
        self.database_up = database_up
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        r, a = self.router, self.acc
        msgs = CounterMetricFamily(
            "feeder_messages_received", "WebSocket frames decoded, by stream type", labels=["stream_type"]
        )
        msgs.add_metric(["kline"], r.kline_frames)
        msgs.add_metric(["bookTicker"], r.book_frames)
        msgs.add_metric(["control"], r.control_frames)
        yield msgs
        bad = CounterMetricFamily(
            "feeder_bad_frames", "Malformed or unexpected frames (skipped)", labels=["reason"]
        )
        bad.add_metric(["malformed"], r.malformed)
        bad.add_metric(["unexpected"], r.unexpected)
        yield bad
        dup = CounterMetricFamily(
            "feeder_duplicates_dropped", "Duplicate frames dropped (overlapping connections)", labels=["kind"]
        )
        dup.add_metric(["candle"], r.duplicate_candles)
        dup.add_metric(["book_tick"], r.duplicate_ticks)
        yield dup
        yield CounterMetricFamily(
            "feeder_closed_candles", "Closed candles accepted for writing", value=r.candles_accepted
        )
        yield CounterMetricFamily(
            "feeder_late_candles", "Closed candles older than the newest seen", value=r.late_candles
        )
        yield CounterMetricFamily(
            "feeder_gaps_detected", "Gaps detected in the stream", value=r.gaps_detected
        )
        dropped = CounterMetricFamily(
            "feeder_rows_dropped", "Rows dropped because the buffer was full", labels=["kind"]
        )
        dropped.add_metric(["candle"], a.dropped_candles)
        dropped.add_metric(["book_tick"], a.dropped_ticks)
        dropped.add_metric(["event"], a.dropped_events)
        yield dropped
        depth = GaugeMetricFamily("feeder_buffered_rows", "Rows waiting to be written", labels=["kind"])
        depth.add_metric(["candle"], a.candle_depth)
        depth.add_metric(["book_tick"], a.tick_depth)
        depth.add_metric(["event"], a.event_depth)
        yield depth
        now = self.clock()
        age = GaugeMetricFamily(
            "feeder_seconds_since_last_closed_candle",
            "Seconds since the last closed candle arrived, per symbol",
            labels=["symbol"],
        )
        ages = {
            sym: since
            for sym in self.symbols
            if (since := self.watchdog.since_last_closed(sym, now)) is not None
        }
        stale = [sym for sym in self.symbols if self.watchdog.is_stale(sym, now)]
        # The whole market (beyond PER_SYMBOL_MAX symbols): the stalest only, what the alert on
        # this series needs; the counts and the maximum below say the rest.
        for symbol, since in worst(ages, len(self.symbols)):
            age.add_metric([symbol], since)
        yield age
        yield GaugeMetricFamily("feeder_stale_symbols", "Symbols past the stale timeout", value=len(stale))
        yield GaugeMetricFamily(
            "feeder_max_seconds_since_last_closed_candle",
            "The longest any followed symbol has gone without a closed candle",
            value=max(ages.values(), default=0.0),
        )
        yield GaugeMetricFamily(
            "feeder_batch_linger_seconds",
            "How long a batch's oldest row may wait for more (BATCH_TIMEOUT_MS): book ticks' commit bound",
            value=a.linger_s,
        )
        yield GaugeMetricFamily(
            "feeder_ws_connections_open", "Open WebSocket connections", value=self.connections_open()
        )
        yield GaugeMetricFamily(
            "feeder_database_up", "1 if the last database write succeeded", value=int(self.database_up())
        )
        yield GaugeMetricFamily(
            "feeder_symbols",
            "Symbols followed now (SYMBOLS, or its patterns resolved)",
            value=len(self.symbols),
        )
