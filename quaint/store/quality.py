"""``data_quality_logs``: the audit trail of gaps, reconnects and outages (the row's value
type is :class:`quaint.store.quality_event.QualityEvent`, importable without asyncpg)."""

from __future__ import annotations

from datetime import datetime

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


# The minutes of [start, end] (open times, both ends included) with no stored candle.
MINUTES_MISSING = """
SELECT m FROM generate_series($2::timestamptz, $3::timestamptz, interval '1 minute') AS m
WHERE NOT EXISTS (SELECT 1 FROM candles_1m c WHERE c.symbol = $1 AND c.time = m)
ORDER BY m
"""


async def minutes_missing(
    conn: asyncpg.Connection, symbol: str, first: datetime, last: datetime
) -> list[datetime]:
    """Which minutes of a reported gap are still without a candle (another feeder on the
    same symbols may have stored the rest)."""
    return [r["m"] for r in await conn.fetch(MINUTES_MISSING, symbol, first, last)]


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
