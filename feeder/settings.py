"""Feeder configuration (environment variables, upper-case names of the fields below).

Two clocks are involved and the names say which:

* ``GAP_DETECTION_THRESHOLD_S`` compares candle open times, i.e. *exchange* time: a
  closed candle more than this after the previous one means minutes are missing.
* Everything else (``*_TIMEOUT_*``, ``*_INTERVAL_S``, ``WS_MAX_CONNECTION_AGE_S``,
  ``STALE_STREAM_TIMEOUT_S``) is *wall* time measured on the monotonic clock. In
  production both run at the same pace; against the simulator at speed 60 a
  simulated minute lasts one wall second, so tests shrink the wall-time settings and
  leave the exchange-time threshold alone.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from feeder.core.connections import BookTickerMode
from quaint.service.settings import Settings
from quaint.sharding import shard_symbols

# Binance: at most 1024 streams per connection.
MAX_STREAMS_PER_CONNECTION = 1024


class FeederSettings(Settings):
    feeder_host: str = "0.0.0.0"
    feeder_port: int = Field(default=8080, ge=0, le=65535)

    # --- stream ---
    streams_per_connection: int = Field(default=MAX_STREAMS_PER_CONNECTION, ge=2, le=1024)
    # Binance allows 5 new connections per second and 300 per 5 minutes per IP.
    ws_connects_per_second: float = Field(default=4.0, gt=0, le=5)
    ws_connects_per_5min: int = Field(default=250, ge=1, le=300)
    ws_max_connection_age_s: float = Field(default=23 * 3600.0, gt=0, le=24 * 3600)
    # How long a rollover waits for the replacement to deliver before retrying it.
    ws_rollover_timeout_s: float = Field(default=30.0, gt=0)
    ws_open_timeout_s: float = Field(default=10.0, gt=0)
    websocket_reconnect_interval_s: float = Field(default=5.0, gt=0)
    websocket_reconnect_max_s: float = Field(default=60.0, gt=0)
    # A connection that delivered for this long resets the backoff to its start.
    ws_stable_after_s: float = Field(default=30.0, gt=0)

    # --- gaps and staleness ---
    gap_detection_threshold_s: float = Field(default=70.0, ge=60.0)
    # Wall seconds without a closed candle for a symbol before its connection is
    # recycled; unset = GAP_DETECTION_THRESHOLD_S (the default behaviour).
    stale_stream_timeout_s: float | None = Field(default=None, gt=0)

    # --- book ticker ---
    book_ticker_mode: BookTickerMode = "sampled"

    # --- writer ---
    batch_size: int = Field(default=10, ge=1, le=100_000)
    batch_timeout_ms: int = Field(default=1000, ge=1, le=600_000)
    # Largest batch one transaction takes when rows piled up (group commit).
    batch_max_rows: int = Field(default=5000, ge=1, le=1_000_000)
    max_buffered_rows: int = Field(default=100_000, ge=10)
    db_retry_interval_s: float = Field(default=1.0, gt=0)
    db_retry_max_s: float = Field(default=10.0, gt=0)
    shutdown_flush_timeout_s: float = Field(default=10.0, gt=0)
    # Redundant feeders on the same symbols: each symbol's book ticks are written by the one
    # feeder holding its advisory lock; another takes over within this many seconds of that
    # feeder's database session ending (candles need no owner: their upsert is idempotent).
    book_takeover_s: float = Field(default=10.0, ge=2, le=600)

    # --- shards: SHARD_COUNT feeders split SYMBOLS (quaint.sharding); REPLICAS of them stream each ---
    shard_index: int = Field(default=0, ge=0, le=1023)
    shard_count: int = Field(default=1, ge=1, le=1024)
    replicas: int = Field(default=1, ge=1, le=1024)

    # --- features ---
    feature_cache_interval_s: float = Field(default=60.0, gt=0)
    feature_version: str = Field(default="v1", min_length=1, max_length=32)
    # How far back (minutes, exchange time) the feature task looks for minutes that
    # have a candle but no feature row (e.g. after a restart or a backfill).
    feature_horizon_minutes: int = Field(default=180, ge=1, le=10_080)

    @field_validator("stale_stream_timeout_s", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose files and .env templates pass "STALE_STREAM_TIMEOUT_S=" to mean "default".
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _consistent(self) -> FeederSettings:
        if self.websocket_reconnect_max_s < self.websocket_reconnect_interval_s:
            raise ValueError("WEBSOCKET_RECONNECT_MAX_S must be >= WEBSOCKET_RECONNECT_INTERVAL_S")
        if self.db_retry_max_s < self.db_retry_interval_s:
            raise ValueError("DB_RETRY_MAX_S must be >= DB_RETRY_INTERVAL_S")
        if self.batch_max_rows < self.batch_size:
            raise ValueError("BATCH_MAX_ROWS must be >= BATCH_SIZE")
        if self.shard_index >= self.shard_count:
            raise ValueError("SHARD_INDEX must be below SHARD_COUNT (shards are numbered from 0)")
        if self.replicas > self.shard_count:
            raise ValueError("REPLICAS must be <= SHARD_COUNT")
        if self.shard_count > 1 and self.universe.dynamic:
            # The universe follower adds listings as they come; it does not shard them (yet).
            raise ValueError("SHARD_COUNT > 1 needs SYMBOLS as names, not patterns (ALL, *USDT)")
        if self.shard_count > 1 and not self.shard_symbols(self.universe.static_symbols()):
            raise ValueError("this shard (SHARD_INDEX of SHARD_COUNT) gets none of SYMBOLS")
        return self

    def shard_symbols(self, symbols: list[str]) -> list[str]:
        """The symbols of ``symbols`` this feeder streams (all of them unless sharded)."""
        return shard_symbols(symbols, self.shard_index, self.shard_count, self.replicas)

    @property
    def stale_timeout_s(self) -> float:
        return self.stale_stream_timeout_s or self.gap_detection_threshold_s

    @property
    def batch_timeout_s(self) -> float:
        return self.batch_timeout_ms / 1000.0
