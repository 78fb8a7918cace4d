"""A ``data_quality_logs`` row as a plain value (pure): what the services build and
:func:`quaint.store.quality.log_event` writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EVENT_TYPES = frozenset(
    {
        "gap_detected",
        "gap_backfilled",
        "gap_unrecoverable",
        "ws_reconnect",
        "db_unavailable",
        "data_dropped",
        "error",
        # Archive fallbacks and the sampled cross-check (gap_handler.core.archive_plan).
        "archive_missing",
        "archive_checksum_mismatch",
        "archive_short",
        "archive_malformed",
        "archive_mismatch",
        # The universe of symbols changing at run time.
        "symbol_listed",
        "symbol_halted",
        "symbol_resumed",
        "symbol_delisted",
        # Past one machine: a database primary changed, the active gap handler changed.
        "db_failover",
        "leader_changed",
    }
)


@dataclass(frozen=True, slots=True)
class QualityEvent:
    event_type: str
    symbol: str | None = None
    gap_start: datetime | None = None
    gap_end: datetime | None = None
    candles_missing: int | None = None
    candles_recovered: int | None = None
    source: str | None = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    resolved: bool = False
    resolved_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"unknown data quality event type {self.event_type!r}")
