"""Gap handler configuration: the shared ``Settings`` plus this service's knobs.

Built once in ``main()`` and passed down; tests build it directly.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from gap_handler.core.intervals import RETENTION_DAYS
from quaint.service.settings import Settings


class GapHandlerSettings(Settings):
    gap_handler_host: str = "0.0.0.0"
    gap_handler_port: int = Field(default=9000, ge=0, le=65535)

    # Shared by all workers: requests per second to the REST API.
    rate_limit_requests_per_sec: float = Field(default=10.0, gt=0, le=1000)
    max_concurrent_backfills: int = Field(default=5, ge=1, le=64)
    backfill_check_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    # 1000 is the klines endpoint's maximum rows per request.
    backfill_batch_size: int = Field(default=1000, ge=1, le=1000)
    # A minute counts as missing once its open time is this far in the past (the
    # candle closed GAP_DETECTION_THRESHOLD_S - 60 s ago): the feeder gets that long
    # to write it first.
    gap_detection_threshold_s: float = Field(default=70.0, ge=60, le=3600)
    # Scans after the first resume at the oldest hole they saw; a full rescan of the
    # whole window runs this often (catches rows deleted by hand).
    full_scan_interval_s: float = Field(default=3600.0, ge=0, le=7 * 86_400)
    history_days: int = Field(default=30, ge=1, le=RETENTION_DAYS)
    book_ticker_retention_days: int = Field(default=30, ge=1, le=3650)

    # Fraction of the exchange's per-minute weight limit at which requests start to
    # slow down, and at which they stop until the minute window resets.
    weight_soft_fraction: float = Field(default=0.7, gt=0, lt=1)
    weight_hard_fraction: float = Field(default=0.9, gt=0, le=1)
    # Per-request timeout and the capped jittered backoff for 5xx/timeouts.
    rest_timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry_initial_s: float = Field(default=1.0, gt=0, le=60)
    retry_cap_s: float = Field(default=30.0, gt=0, le=3600)
    retry_max_attempts: int = Field(default=8, ge=1, le=100)
    # How often the exchange's clock is sampled (GET /api/v3/time, weight 1). What is closed,
    # due or final is decided on the exchange's time, never the host's.
    exchange_time_sync_interval_s: float = Field(default=30.0, ge=1, le=3600)
    # Large holes are cut into work units of at most this many pages so several
    # workers share a long bootstrap (each unit still commits page by page).
    unit_max_pages: int = Field(default=10, ge=1, le=1000)
    # SIGTERM: how long in-flight pages may take to finish before they are cancelled.
    shutdown_deadline_s: float = Field(default=10.0, gt=0, le=600)
    # Several gap handlers on one database: one leads (a PostgreSQL advisory lock), the
    # others stand by and take over within this many seconds of the leader's session ending.
    leader_takeover_s: float = Field(default=20.0, ge=2, le=600)

    # History from Binance's public archives (data.binance.vision): monthly files for past
    # months, daily files for this month; REST for the last ARCHIVE_LAG_DAYS days (files are
    # published a day or more late) and for whatever an archive lacks. False: REST only.
    archive_enabled: bool = True
    archive_base_url: str = "https://data.binance.vision"
    # Archive files downloaded at once (each is spooled and parsed in bounded memory).
    archive_concurrency: int = Field(default=4, ge=1, le=32)
    archive_lag_days: int = Field(default=2, ge=0, le=31)

    # The read API (GET /api/v3/klines and friends): per client address, requests per
    # second and the burst a client may spend at once; beyond them 429 (-1003, Retry-After).
    klines_api_rate_per_s: float = Field(default=20.0, gt=0, le=10_000)
    klines_api_burst: int = Field(default=40, ge=1, le=100_000)

    # Bearer token for POST /backfills; unset = the endpoint is disabled. Never logged.
    admin_token: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> GapHandlerSettings:
        if self.weight_soft_fraction >= self.weight_hard_fraction:
            raise ValueError("WEIGHT_SOFT_FRACTION must be below WEIGHT_HARD_FRACTION")
        if self.retry_cap_s < self.retry_initial_s:
            raise ValueError("RETRY_CAP_S must be >= RETRY_INITIAL_S")
        if self.admin_token is not None and not self.admin_token.get_secret_value():
            self.admin_token = None
        return self

    @property
    def admin_token_value(self) -> str | None:
        return self.admin_token.get_secret_value() if self.admin_token is not None else None
