"""``data_quality_logs``: the audit trail of gaps, reconnects and outages (the row's value
type is :class:`quaint.store.quality_event.QualityEvent`, importable without asyncpg)."""

from __future__ import annotations

import asyncpg

from quaint.store.quality_event import QualityEvent

INSERT_EVENT = """
INSERT INTO data_quality_logs (symbol, event_type, gap_start, gap_end, candles_missing,
    candles_recovered, source, message, details, resolved, resolved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id
"""


GAP_REPORTED = """
SELECT EXISTS (SELECT 1 FROM data_quality_logs WHERE event_type = 'gap_detected'
               AND symbol = $1 AND gap_start = $2 AND gap_end = $3)
"""


async def gap_reported(conn: asyncpg.Connection, event: QualityEvent) -> bool:
    """Whether a ``gap_detected`` row for the same symbol and minutes is stored already."""
    return bool(await conn.fetchval(GAP_REPORTED, event.symbol, event.gap_start, event.gap_end))


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
