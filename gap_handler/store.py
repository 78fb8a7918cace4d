"""The gap handler's SQL: hole scan, outcome records, coverage. Parameters only.

Conventions: in ``data_quality_logs`` (as the feeder writes them) ``gap_start`` and
``gap_end`` are the open times of the first and the *last* missing minute, inclusive,
so ``candles_missing = (gap_end - gap_start) / 1 min + 1``. In Python a hole is a
half-open :class:`MinuteRange`; the conversion happens here and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from gap_handler.core.intervals import MinuteRange
from gap_handler.core.tracker import RequestRecord
from quaint.binance.models import MINUTE_MS, datetime_to_ms, ms_to_datetime

_MINUTE = timedelta(minutes=1)

# One set-based query per symbol; nothing but the holes leaves the server. Only a count
# proves a stretch complete, so the per-row work is kept to the cheapest pass there is:
#
# 0. ``pieces``: the window minus the spans that complete compressed batches already prove
#    stored (``quaint_complete_batches`` in init.sql: each batch's row count and first and
#    last minute, read from its metadata; nothing is decompressed). On compressed history
#    what is left is the uncompressed recent chunks and the batches around holes; on the
#    Apache build (nothing compressed) it is the whole window.
# 1. ``counts``: rows per UTC hour of each piece, from an index-only scan of the primary
#    key (or the few batches a piece overlaps). Since (symbol, time) is unique and every
#    time is a whole minute, an hour holding as many rows as it has minutes is complete.
# 2. ``short``: the hours of the pieces holding fewer (an hour without rows has no
#    ``counts`` row, hence the series), clipped to their piece.
# 3. ``runs``: short hours of a piece less than a day apart are read as one run, so a
#    pathological table (a hole in every hour) costs one range read instead of thousands
#    of probes. Never across pieces: what lies between them is proven stored already.
# 4. ``pts``: the stored minutes of each run plus two sentinels just outside it; lead()
#    over them pairs each minute with the next, and every jump of more than a minute
#    is a hole (the sentinels turn the run's edges, and empty runs, into holes too).
#
# Finally the exchange outages already proven (gap_unrecoverable) are subtracted as a
# multirange. Hours are added as ``interval '1 hour'``, never days, so the session's
# time zone cannot shift a bucket; time_bucket() buckets timestamptz in UTC.
# The per-piece and per-run reads are LATERAL subqueries fenced with OFFSET 0: the planner
# cannot pull them up, so each is an index range read (or a read of the few batches a
# range overlaps). Joined in the open, the planner read every row of a compressed
# history and compared each with every run: 5x the uncompressed scan on compressed and
# 14x on partially compressed chunks (13 months x 10 symbols, 20 holes each); now 0.3x
# and 0.5x (python -m bench scan with a Community build).
# Why not lead() over every row: a window function costs ~3x a count per row.
SCAN_HOLES = """
WITH covered AS (
    SELECT coalesce(range_agg(tstzrange(span_start, span_end)), '{}'::tstzmultirange) AS m
    FROM quaint_complete_batches($1, $2, $3)
), pieces AS (
    SELECT lower(p) AS lo, upper(p) AS hi
    FROM covered, unnest(tstzmultirange(tstzrange($2, $3)) - covered.m) AS p
), counts AS (
    SELECT p.lo AS piece, c.bucket, c.n
    FROM pieces p CROSS JOIN LATERAL (
        SELECT time_bucket(interval '1 hour', time) AS bucket, count(*) AS n
        FROM candles_1m WHERE symbol = $1 AND time >= p.lo AND time < p.hi GROUP BY 1 OFFSET 0) c
), short AS (
    SELECT p.lo AS piece, greatest(b, p.lo) AS lo, least(b + interval '1 hour', p.hi) AS hi
    FROM pieces p
    CROSS JOIN LATERAL generate_series(time_bucket(interval '1 hour', p.lo),
                                       p.hi - interval '1 microsecond', interval '1 hour') AS b
    LEFT JOIN counts ON counts.piece = p.lo AND counts.bucket = b
    WHERE coalesce(n, 0) * interval '1 minute' < least(b + interval '1 hour', p.hi) - greatest(b, p.lo)
), runs AS (
    SELECT min(lo) AS lo, max(hi) AS hi
    FROM (SELECT piece, lo, hi, count(*) FILTER (WHERE brk) OVER (PARTITION BY piece ORDER BY lo) AS run
          FROM (SELECT piece, lo, hi,
                       lo > lag(hi) OVER (PARTITION BY piece ORDER BY lo) + interval '1 day' AS brk
                FROM short) s) t
    GROUP BY piece, run
), pts AS (
    SELECT r.lo, c.time FROM runs r CROSS JOIN LATERAL (
        SELECT time FROM candles_1m WHERE symbol = $1 AND time >= r.lo AND time < r.hi OFFSET 0) c
    UNION ALL SELECT lo, lo - interval '1 minute' FROM runs
    UNION ALL SELECT lo, hi FROM runs
), found AS (
    SELECT tstzrange(time + interval '1 minute', nxt) AS r
    FROM (SELECT time, lead(time) OVER (PARTITION BY lo ORDER BY time) AS nxt FROM pts) x
    WHERE nxt > time + interval '1 minute'
), known AS (
    SELECT coalesce(range_agg(tstzrange(gap_start, gap_end + interval '1 minute')), '{}'::tstzmultirange) AS m
    FROM data_quality_logs
    WHERE event_type = 'gap_unrecoverable' AND symbol = $1 AND gap_start < $3 AND gap_end >= $2
)
SELECT lower(h) AS gap_start, upper(h) AS gap_end
FROM (SELECT coalesce(range_agg(r), '{}'::tstzmultirange) AS m FROM found) f, known,
     unnest(f.m - known.m) AS h
ORDER BY 1
"""

# Every read of candles_1m here runs in a transaction with these settings.
# plan_cache_mode: asyncpg prepares each statement once per connection, and after five
# executions PostgreSQL may keep a generic plan. On TimescaleDB 2.19 (the pinned image) a
# generic plan made while a chunk was fully compressed reads only its compressed part,
# and a DELETE or UPDATE that decompresses a batch into the chunk does not invalidate it
# (timescale/timescaledb#8241, fixed in 2.21.1): the batch's rows vanish from every such
# plan, in every session, and the scan reported the whole batch (1000 minutes) as a hole,
# re-fetched on every scan. A custom plan is made for the chunks as they are now.
# jit: the planner's estimate for the per-run reads is far above jit_above_cost;
# compiling the plan (up to ~1 s) would cost more than running it (tens of ms).
_FRESH_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off"


@asynccontextmanager
async def _fresh_plans(conn: asyncpg.Connection) -> AsyncIterator[None]:
    async with conn.transaction():
        await conn.execute(_FRESH_PLANS)
        yield


async def scan_holes(conn: asyncpg.Connection, symbol: str, lo_ms: int, hi_ms: int) -> list[MinuteRange]:
    """Missing minutes of ``symbol`` in ``[lo_ms, hi_ms)`` (whole minutes), minus proven
    exchange outages."""
    if hi_ms <= lo_ms:
        return []
    async with _fresh_plans(conn):
        rows = await conn.fetch(SCAN_HOLES, symbol, ms_to_datetime(lo_ms), ms_to_datetime(hi_ms))
    return [MinuteRange(datetime_to_ms(r["gap_start"]), datetime_to_ms(r["gap_end"])) for r in rows]


# Touching or overlapping outage rows of one symbol are merged into one row, so an
# outage discovered piecewise by several work units is still recorded exactly once.
_LOCK_SYMBOL = "SELECT pg_advisory_xact_lock(hashtext('quaint.gap_unrecoverable'), hashtext($1))"
_NEIGHBOURS = """
SELECT id, gap_start, gap_end FROM data_quality_logs
WHERE event_type = 'gap_unrecoverable' AND symbol = $1
  AND gap_start <= $3 AND gap_end + interval '1 minute' >= $2
ORDER BY id
"""


async def record_unrecoverable(
    conn: asyncpg.Connection, symbol: str, gap: MinuteRange, now: datetime, details: dict[str, Any]
) -> bool:
    """Record that the exchange has no candles in ``gap``. Returns True when this added
    minutes to what was already recorded."""
    start, end = ms_to_datetime(gap.start), ms_to_datetime(gap.end)
    async with conn.transaction():
        await conn.execute(_LOCK_SYMBOL, symbol)
        rows = await conn.fetch(_NEIGHBOURS, symbol, start, end)
        lo = min([start, *(r["gap_start"] for r in rows)])
        hi = max([end, *(r["gap_end"] + _MINUTE for r in rows)])  # exclusive
        keeper = next((r for r in rows if (r["gap_start"], r["gap_end"] + _MINUTE) == (lo, hi)), None)
        if keeper is not None and len(rows) == 1:
            return False
        if keeper is None and rows:
            keeper = rows[0]
        others = [r["id"] for r in rows if keeper is None or r["id"] != keeper["id"]]
        if others:
            await conn.execute("DELETE FROM data_quality_logs WHERE id = ANY($1::bigint[])", others)
        minutes = (datetime_to_ms(hi) - datetime_to_ms(lo)) // MINUTE_MS
        if keeper is None:
            await conn.execute(
                """INSERT INTO data_quality_logs (symbol, event_type, gap_start, gap_end, candles_missing,
                       candles_recovered, source, message, details, resolved, resolved_at)
                   VALUES ($1, 'gap_unrecoverable', $2, $3, $4, 0, 'rest',
                       'the exchange has no candles for these minutes', $5, true, $6)""",
                symbol,
                lo,
                hi - _MINUTE,
                minutes,
                details,
                now,
            )
        else:
            await conn.execute(
                """UPDATE data_quality_logs SET gap_start = $2, gap_end = $3, candles_missing = $4,
                       details = details || $5 WHERE id = $1""",
                keeper["id"],
                lo,
                hi - _MINUTE,
                minutes,
                details,
            )
    return True


async def record_backfilled(
    conn: asyncpg.Connection,
    symbol: str,
    unit: MinuteRange,
    recovered: int,
    now: datetime,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        """INSERT INTO data_quality_logs (symbol, event_type, gap_start, gap_end, candles_missing,
               candles_recovered, source, message, details, resolved, resolved_at)
           VALUES ($1, 'gap_backfilled', $2, $3, $4, $5, 'rest', 'backfilled from REST', $6, true, $7)""",
        symbol,
        ms_to_datetime(unit.start),
        ms_to_datetime(unit.end - MINUTE_MS),
        unit.minutes,
        recovered,
        details,
        now,
    )


UNRESOLVED_REPORTS = """
SELECT symbol, gap_start, gap_end FROM data_quality_logs
WHERE event_type = 'gap_detected' AND NOT resolved AND symbol = ANY($1::text[])
  AND gap_start IS NOT NULL AND gap_end IS NOT NULL
ORDER BY symbol, gap_start
"""


async def unresolved_reports(conn: asyncpg.Connection, symbols: list[str]) -> list[tuple[str, int, int]]:
    """The feeder's gap reports not yet resolved: (symbol, gap start ms, gap end ms)."""
    rows = await conn.fetch(UNRESOLVED_REPORTS, symbols)
    return [(r["symbol"], datetime_to_ms(r["gap_start"]), datetime_to_ms(r["gap_end"])) for r in rows]


# A feeder-reported gap is resolved once every minute of it is either stored or a
# proven outage. Rows reaching past ``$2`` (not yet due) wait.
RESOLVE_DETECTED = """
UPDATE data_quality_logs AS d SET resolved = true, resolved_at = $3
WHERE d.event_type = 'gap_detected' AND NOT d.resolved AND d.symbol = $1
  AND d.gap_start IS NOT NULL AND d.gap_end IS NOT NULL AND d.gap_end < $2
  AND NOT EXISTS (
      SELECT 1 FROM generate_series(date_trunc('minute', d.gap_start), d.gap_end, interval '1 minute') AS m
      WHERE NOT EXISTS (SELECT 1 FROM candles_1m c WHERE c.symbol = d.symbol AND c.time = m)
        AND NOT EXISTS (SELECT 1 FROM data_quality_logs u
                        WHERE u.event_type = 'gap_unrecoverable' AND u.symbol = d.symbol
                          AND m >= u.gap_start AND m <= u.gap_end))
"""


async def resolve_detected(conn: asyncpg.Connection, symbol: str, due_end_ms: int, now: datetime) -> int:
    """Mark the feeder's gap_detected rows of ``symbol`` that are now complete resolved."""
    async with _fresh_plans(conn):
        status = await conn.execute(RESOLVE_DETECTED, symbol, ms_to_datetime(due_end_ms), now)
    return int(status.rsplit(" ", 1)[1])


@dataclass(frozen=True, slots=True)
class DayCoverage:
    day: datetime
    stored: int
    unrecoverable: int


COVERAGE = """
WITH days AS (
    SELECT d
    FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 millisecond', interval '1 day') AS d
), stored AS (
    SELECT time_bucket(interval '1 day', time) AS d, count(*) AS n
    FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3 GROUP BY 1
), outage AS (
    SELECT days.d, sum(extract(epoch FROM least(u.gap_end + interval '1 minute', days.d + interval '1 day')
                                         - greatest(u.gap_start, days.d)) / 60)::bigint AS n
    FROM days JOIN data_quality_logs u
      ON u.event_type = 'gap_unrecoverable' AND u.symbol = $1
     AND u.gap_start < days.d + interval '1 day' AND u.gap_end >= days.d
    GROUP BY days.d
)
SELECT days.d AS day, coalesce(stored.n, 0) AS stored, coalesce(outage.n, 0) AS unrecoverable
FROM days LEFT JOIN stored USING (d) LEFT JOIN outage USING (d) ORDER BY days.d
"""


async def coverage(
    conn: asyncpg.Connection, symbol: str, first_day_ms: int, end_ms: int
) -> list[DayCoverage]:
    async with _fresh_plans(conn):
        rows = await conn.fetch(COVERAGE, symbol, ms_to_datetime(first_day_ms), ms_to_datetime(end_ms))
    return [DayCoverage(r["day"], int(r["stored"]), int(r["unrecoverable"])) for r in rows]


RECENT_GAPS = """
SELECT id, time, symbol, event_type, gap_start, gap_end, candles_missing, candles_recovered,
       resolved, resolved_at, message
FROM data_quality_logs
WHERE event_type = ANY($1::text[]) AND ($2::text IS NULL OR symbol = $2)
ORDER BY time DESC, id DESC LIMIT $3
"""


async def recent_gap_events(
    conn: asyncpg.Connection, event_types: list[str], symbol: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(RECENT_GAPS, event_types, symbol, limit)
    return [dict(r) for r in rows]


# ---- requested backfills (backfill_requests) --------------------------------------------

_REQUEST_COLUMNS = """id, symbol, range_start, range_end, state, requested_at, started_at, finished_at,
    minutes_total, minutes_done, candles_recovered, unrecoverable_minutes, error"""


def _request(row: asyncpg.Record) -> RequestRecord:
    return RequestRecord(
        id=row["id"],
        symbol=row["symbol"],
        range=MinuteRange(datetime_to_ms(row["range_start"]), datetime_to_ms(row["range_end"])),
        state=row["state"],
        requested_at=row["requested_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        minutes_total=row["minutes_total"],
        minutes_done=row["minutes_done"],
        candles_recovered=row["candles_recovered"],
        unrecoverable_minutes=row["unrecoverable_minutes"],
        error=row["error"],
    )


async def insert_backfill_request(conn: asyncpg.Connection, rec: RequestRecord) -> None:
    await conn.execute(
        f"INSERT INTO backfill_requests ({_REQUEST_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        rec.id,
        rec.symbol,
        ms_to_datetime(rec.range.start),
        ms_to_datetime(rec.range.end),
        rec.state,
        rec.requested_at,
        rec.started_at,
        rec.finished_at,
        rec.minutes_total,
        rec.minutes_done,
        rec.candles_recovered,
        rec.unrecoverable_minutes,
        rec.error,
    )


async def update_backfill_request(conn: asyncpg.Connection, rec: RequestRecord) -> None:
    """Progress and outcome. A finished row is final: a late or stale writer (a process
    that lost track of it) cannot reopen or rewrite it."""
    await conn.execute(
        """UPDATE backfill_requests SET state = $2, minutes_total = $3, minutes_done = $4,
               candles_recovered = $5, unrecoverable_minutes = $6, error = $7, finished_at = $8,
               started_at = coalesce(started_at, $9)
           WHERE id = $1 AND finished_at IS NULL""",
        rec.id,
        rec.state,
        rec.minutes_total,
        rec.minutes_done,
        rec.candles_recovered,
        rec.unrecoverable_minutes,
        rec.error,
        rec.finished_at,
        rec.started_at,
    )


async def mark_backfill_request_waiting(conn: asyncpg.Connection, ident: str, reason: str) -> None:
    await conn.execute(
        "UPDATE backfill_requests SET state = 'queued', error = $2 WHERE id = $1 AND finished_at IS NULL",
        ident,
        reason,
    )


async def backfill_request(conn: asyncpg.Connection, ident: str) -> RequestRecord | None:
    row = await conn.fetchrow(f"SELECT {_REQUEST_COLUMNS} FROM backfill_requests WHERE id = $1", ident)
    return None if row is None else _request(row)


async def unfinished_backfill_requests(conn: asyncpg.Connection) -> list[RequestRecord]:
    rows = await conn.fetch(
        f"SELECT {_REQUEST_COLUMNS} FROM backfill_requests WHERE finished_at IS NULL"
        " ORDER BY requested_at, id"
    )
    return [_request(r) for r in rows]


async def recent_backfill_requests(
    conn: asyncpg.Connection, symbol: str | None, state: str | None, limit: int
) -> list[RequestRecord]:
    rows = await conn.fetch(
        f"""SELECT {_REQUEST_COLUMNS} FROM backfill_requests
            WHERE ($1::text IS NULL OR symbol = $1) AND ($2::text IS NULL OR state = $2)
            ORDER BY requested_at DESC, id DESC LIMIT $3""",
        symbol,
        state,
        limit,
    )
    return [_request(r) for r in rows]
