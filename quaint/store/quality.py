"""``data_quality_logs``: the audit trail of gaps, reconnects and outages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

EVENT_TYPES = frozenset(
    {
        "gap_detected",
        "gap_backfilled",
        "gap_unrecoverable",
        "ws_reconnect",
        "db_unavailable",
        "data_dropped",
        "error",
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


INSERT_EVENT = """
INSERT INTO data_quality_logs (symbol, event_type, gap_start, gap_end, candles_missing,
    candles_recovered, source, message, details, resolved, resolved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id
"""


async def log_event(conn: asyncpg.Connection, event: QualityEvent) -> int:
    """Insert one event and return its id. A ``gap_detected`` insert also NOTIFYs
    ``quaint_gaps`` (trigger in init.sql), waking the gap handler."""
    ident = await conn.fetchval(
        INSERT_EVENT,
        event.symbol,
        event.event_type,
        event.gap_start,
        event.gap_end,
        event.candles_missing,
        event.candles_recovered,
        event.source,
        event.message,
        event.details,
        event.resolved,
        event.resolved_at,
    )
    return int(ident)
