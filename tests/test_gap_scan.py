"""The hole scan (``gap_handler.store.scan_holes``) on the Apache build: exact holes on the
shapes that break scans (hour, day and chunk boundaries, single minutes, deleted rows,
window edges, outages), the complete-batch spans it skips (what compression provides on
the Community build, stood in for here by a function honouring the same contract), and
the custom plans that keep it exact on partially compressed chunks. Random tables
against a model: ``test_gap_fuzz_sources.py``. The Community build itself is checked
by hand only (it is in no reachable registry)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gap_handler import store
from gap_handler.core.intervals import MinuteRange, merge, subtract
from quaint.binance.models import MINUTE_MS
from tests.support.gap_handler import ONCE

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z: an hour, a day and a 7-day chunk boundary
SPAN = 3 * 1440  # stored minutes: [T0 - SPAN, T0 + SPAN)
_symbols = itertools.count()
INSERT = """
INSERT INTO candles_1m (symbol, time, open, high, low, close, volume, source)
SELECT $1, to_timestamp(($2::bigint + m::bigint * 60000) / 1000.0),
       97123.45000000, 97150.00000000, 97100.01000000, 97140.99000000, 12.34567000, 'archive'
FROM unnest($3::int[]) AS m
"""
# A stand-in for compression's complete batches: the stored rows of a symbol cut, in time
# order, into batches of at most {size} rows, each reported when it holds every minute
# between its first and last (TimescaleDB's rule, with time DESC batches of 1000 rows).
STAND_IN = """
CREATE OR REPLACE FUNCTION quaint_complete_batches(p_symbol TEXT, p_lo TIMESTAMPTZ, p_hi TIMESTAMPTZ)
RETURNS TABLE (span_start TIMESTAMPTZ, span_end TIMESTAMPTZ)
LANGUAGE sql STABLE AS $$
    SELECT min(time), max(time) + interval '1 minute'
    FROM (SELECT time, (row_number() OVER (ORDER BY time DESC) - 1) / {size} AS batch
          FROM candles_1m WHERE symbol = p_symbol) b
    GROUP BY batch
    HAVING count(*) = extract(epoch FROM max(time) - min(time)) / 60 + 1
       AND min(time) >= p_lo AND max(time) < p_hi
$$
"""

# Against the contract: reports minutes 50..199 as a complete span, whatever is stored.
LYING_STAND_IN = """
CREATE OR REPLACE FUNCTION quaint_complete_batches(p_symbol TEXT, p_lo TIMESTAMPTZ, p_hi TIMESTAMPTZ)
RETURNS TABLE (span_start TIMESTAMPTZ, span_end TIMESTAMPTZ)
LANGUAGE sql STABLE AS $$
    SELECT to_timestamp(1767225600 + 60 * 50), to_timestamp(1767225600 + 60 * 200)
$$
"""


def minute(m: int) -> int:
    return T0 + m * MINUTE_MS


def expected(stored: set[int], lo: int, hi: int, outages: list[MinuteRange]) -> list[MinuteRange]:
    missing = [MinuteRange(minute(m), minute(m + 1)) for m in range(lo, hi) if m not in stored]
    return subtract(merge(missing), outages)


async def store_minutes(conn: asyncpg.Connection, symbol: str, minutes: set[int]) -> None:
    await conn.execute(INSERT, symbol, T0, sorted(minutes))


# (name, missing minutes, outages as (start, minutes), window as (lo, hi)), minutes from T0.
SHAPES = [
    ("nothing missing", [], [], (-SPAN, SPAN)),
    ("last minute before the chunk boundary", [-1], [], (-SPAN, SPAN)),
    ("first minute after the chunk boundary", [0], [], (-SPAN, SPAN)),
    ("minute 59 and minute 60 of an hour", [59, 60], [], (-SPAN, SPAN)),
    ("a hole across the chunk boundary", range(-30, 30), [], (-SPAN, SPAN)),
    ("exactly one hour", range(60, 120), [], (-SPAN, SPAN)),
    ("more than a day", range(100, 100 + 1500), [], (-SPAN, SPAN)),
    ("every other minute of an hour", range(-600, -540, 2), [], (-SPAN, SPAN)),
    ("short hours more than a day apart", [-2000, -3, 1700], [], (-SPAN, SPAN)),
    ("window edges off the hour, holes at both", [-1000, -999, 998, 999], [], (-1000, 1000)),
    ("window inside one hole", range(0, 300), [], (10, 20)),
    ("window beyond the data", [], [], (SPAN - 5, SPAN + 70)),
    ("outage subtracted whole", range(200, 260), [(200, 60)], (-SPAN, SPAN)),
    ("outage inside a hole leaves both ends", range(200, 260), [(210, 20)], (-SPAN, SPAN)),
    ("outage across the chunk boundary", range(-30, 30), [(-40, 45)], (-SPAN, SPAN)),
]


@pytest.mark.parametrize(("name", "missing", "outages", "window"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_scan_is_exact_on_tricky_shapes(
    db_pool: asyncpg.Pool,
    name: str,
    missing: list[int],
    outages: list[tuple[int, int]],
    window: tuple[int, int],
) -> None:
    symbol = f"SH{next(_symbols)}USDT"
    stored = set(range(-SPAN, SPAN)) - set(missing)
    known = [MinuteRange(minute(s), minute(s + n)) for s, n in outages]
    async with db_pool.acquire() as conn:
        await store_minutes(conn, symbol, stored)
        for outage in known:
            await store.record_unrecoverable(conn, symbol, outage, datetime.now(UTC), {})
        found = await store.scan_holes(conn, symbol, minute(window[0]), minute(window[1]))
    assert found == expected(stored, *window, known), name


async def test_deleted_rows_are_found_on_a_connection_that_scanned_before(db_pool: asyncpg.Pool) -> None:
    """Rows deleted by hand (another session) after the scan's statement was prepared and
    run many times on this connection: the next scan sees exactly them."""
    symbol = "DELUSDT"
    stored = set(range(-SPAN, SPAN))
    async with db_pool.acquire() as scanner, db_pool.acquire() as other:
        await store_minutes(other, symbol, stored)
        for _ in range(8):
            assert await store.scan_holes(scanner, symbol, minute(-SPAN), minute(SPAN)) == []
        deleted = {-1, 0, 59, *range(500, 545)}
        await other.execute(
            "DELETE FROM candles_1m WHERE symbol = $1 AND time = ANY($2::timestamptz[])",
            symbol,
            [datetime.fromtimestamp(minute(m) / 1000, UTC) for m in deleted],
        )
        found = await store.scan_holes(scanner, symbol, minute(-SPAN), minute(SPAN))
    assert found == expected(stored - deleted, -SPAN, SPAN, [])


async def test_reads_never_use_a_generic_plan(db_pool: asyncpg.Pool) -> None:
    """The workaround for timescale/timescaledb#8241 (a generic plan made while a chunk was
    fully compressed misses rows that a DELETE decompresses into it): every execution of
    the scan, coverage and resolve statements gets a custom plan, however often it runs."""
    symbol = "PLANUSDT"
    async with db_pool.acquire() as conn:
        await store_minutes(conn, symbol, set(range(0, 120)))
        for _ in range(12):
            await store.scan_holes(conn, symbol, minute(0), minute(180))
            await store.coverage(conn, symbol, minute(0), minute(1440))
            await store.resolve_detected(conn, symbol, minute(180), datetime.now(UTC))
        plans = await conn.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement = ANY($1::text[])",
            [store.SCAN_HOLES, store.COVERAGE, store.RESOLVE_DETECTED],
        )
    assert len(plans) == 3
    assert all((p["generic_plans"], p["custom_plans"]) == (0, 12) for p in plans), plans


async def test_no_complete_batches_without_compression(db_pool: asyncpg.Pool) -> None:
    """On the Apache build nothing is compressed: the scan counts every row itself."""
    async with db_pool.acquire() as conn:
        await store_minutes(conn, "APUSDT", set(range(-SPAN, SPAN)))
        spans = await conn.fetch(
            "SELECT * FROM quaint_complete_batches($1, $2, $3)",
            "APUSDT",
            datetime.fromtimestamp(minute(-SPAN) / 1000, UTC),
            datetime.fromtimestamp(minute(SPAN) / 1000, UTC),
        )
    assert spans == []


async def test_scan_reads_nothing_inside_complete_batch_spans(db_pool: asyncpg.Pool) -> None:
    """What the spans cover is taken as stored, unread: a stand-in that (against the
    contract) reports a span over a hole hides that hole. This is what makes compressed
    history cheap; the contract (only complete batches) is what keeps it exact."""
    symbol = "TRUSTUSDT"
    async with db_pool.acquire() as conn:
        await store_minutes(conn, symbol, set(range(0, 600)) - {100, 400})
        await conn.execute(LYING_STAND_IN)
        found = await store.scan_holes(conn, symbol, minute(0), minute(600))
    assert found == [MinuteRange(minute(400), minute(401))]


@settings(ONCE, max_examples=50)
@given(
    holes=st.lists(
        st.tuples(st.integers(-SPAN, SPAN), st.integers(1, 90) | st.integers(1, 2000)), max_size=5
    ),
    batch=st.sampled_from([7, 60, 1000]),
    window=st.tuples(st.integers(-SPAN - 120, SPAN), st.integers(0, 2 * SPAN + 240)),
    outages=st.lists(st.tuples(st.integers(-SPAN, SPAN), st.integers(1, 300)), max_size=2),
)
async def test_scan_with_complete_batch_spans_finds_exactly_the_missing_minutes(
    db_pool: asyncpg.Pool,
    holes: list[tuple[int, int]],
    batch: int,
    window: tuple[int, int],
    outages: list[tuple[int, int]],
) -> None:
    symbol = f"CB{next(_symbols)}USDT"
    stored = set(range(-SPAN, SPAN)) - {m for start, n in holes for m in range(start, start + n)}
    known = [MinuteRange(minute(s), minute(s + n)) for s, n in outages]
    lo, hi = window[0], window[0] + window[1]
    async with db_pool.acquire() as conn:
        await conn.execute(STAND_IN.format(size=batch))
        await store_minutes(conn, symbol, stored)
        for outage in known:
            await store.record_unrecoverable(conn, symbol, outage, datetime.now(UTC), {})
        found = await store.scan_holes(conn, symbol, minute(lo), minute(hi))
    assert found == expected(stored, lo, hi, known)
