"""Prometheus metrics on an explicit registry (one per process, or per test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_PREFIX = "quaint_gap_handler"


class GapMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.gaps_found = Counter(
            f"{_PREFIX}_gaps_found",
            "Holes found by scans (work units queued).",
            ["symbol"],
            registry=registry,
        )
        self.gaps_backfilled = Counter(
            f"{_PREFIX}_gaps_backfilled", "Work units backfilled completely.", ["symbol"], registry=registry
        )
        self.gaps_unrecoverable = Counter(
            f"{_PREFIX}_gaps_unrecoverable",
            "Exchange outages recorded (minutes the exchange does not have).",
            ["symbol"],
            registry=registry,
        )
        self.candles_recovered = Counter(
            f"{_PREFIX}_candles_recovered",
            "Candles written from REST that were missing.",
            ["symbol"],
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
        self.missing_minutes_24h = Gauge(
            f"{_PREFIX}_candles_missing_24h",
            "Minutes without a candle in the last 24 h (latest scan).",
            ["symbol"],
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
        self.rows_not_final = Counter(
            f"{_PREFIX}_rest_rows_not_final",
            "REST rows not stored: not closed by the exchange's clock.",
            ["symbol"],
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
