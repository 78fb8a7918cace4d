"""Gap scan: 13 months x 10 symbols of 1-minute candles stored, holes punched, then
the gap handler's own set-based scan (``gap_handler.store.scan_holes``) is timed.

Two figures per state: the full scan one symbol after another on one connection (the
query's own cost), and two symbols at a time on two connections, as ``Backfills.scan``
runs it. The holes found must equal the holes punched, exactly. Always measured on
uncompressed chunks; where the server has TimescaleDB's Community module (licence
``timescale``) also on compressed history (every chunk but the newest week compressed,
as the policy leaves it) and on partially compressed history (more holes deleted out
of compressed batches), each as a ratio to the uncompressed scan of the same run, with
bytes per stored candle. The cluster runs from ``QUAINT_PG_BIN`` when set (see
scripts/pg_cluster.sh): a private installation of a Community build, by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from bench.common import durable_cluster, machine, result
from gap_handler.core.intervals import MinuteRange, merge
from gap_handler.store import SCAN_HOLES, scan_holes
from quaint.binance.models import datetime_to_ms
from quaint.store.schema import apply_schema

HOLES_PER_SYMBOL = 20

# Binance-shaped values: prices with cents and quantities with 5 decimals at the exchange's
# scale 8, varying from minute to minute, and an ingestion time a second or two after each
# close, as the feeder writes it (constant columns would compress unrealistically).
FILL = """
INSERT INTO candles_1m (symbol, time, open, high, low, close, volume, quote_asset_volume,
    taker_buy_base_asset_volume, taker_buy_quote_asset_volume, number_of_trades, source, ingested_at)
SELECT $1, t, round(p, 2)::numeric(20, 8), round(p + 3.17, 2)::numeric(20, 8),
       round(p - 2.91, 2)::numeric(20, 8), round(p + 0.55, 2)::numeric(20, 8),
       round(v, 5)::numeric(20, 8), round(v * p, 8), round(v / 2, 5)::numeric(20, 8),
       round(v * p / 2, 8), 40 + (m * 7919) % 3000, 'ws',
       t + interval '60 seconds' + (m * 7723) % 2000 * interval '1 millisecond'
FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 minute', interval '1 minute') AS t,
     LATERAL (SELECT (extract(epoch FROM t) / 60)::bigint AS m) mm,
     LATERAL (SELECT (90000 + 500 * sin(m / 120.0) + (m * 7907) % 1000 / 100.0)::numeric AS p,
                     ((m * 104729) % 4000000 / 100000.0)::numeric AS v) q
"""
# A DELETE planned with parameters (a generic plan, from the sixth execution of a prepared
# statement) decompresses every batch of the chunks it touches on TimescaleDB 2.19, since
# its batch filter cannot read the parameters (timescale/timescaledb#9916, fixed in 2.29):
# custom plans keep a punched hole to the batches around it, as a DELETE by hand would.
DELETE = "DELETE FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3"
COMPRESSED_BYTES = """
SELECT coalesce(sum(after_compression_total_bytes), 0)::bigint FROM chunk_compression_stats('candles_1m')
WHERE compression_status = 'Compressed'
"""
ROWS_IN_COMPRESSED_CHUNKS = """
SELECT coalesce(sum((SELECT count(*) FROM candles_1m c
                     WHERE c.time >= ch.range_start AND c.time < ch.range_end)), 0)::bigint
FROM timescaledb_information.chunks ch WHERE ch.hypertable_name = 'candles_1m' AND ch.is_compressed
"""

Holes = dict[str, list[MinuteRange]]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


async def punch(
    conn: asyncpg.Connection, symbols: list[str], start: datetime, end: datetime, shift: timedelta
) -> Holes:
    """Holes of 1..20 minutes spread over the range (deterministic, ``shift`` moves them);
    returns them."""
    punched: Holes = {}
    span = (end - start) // HOLES_PER_SYMBOL
    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        for s, symbol in enumerate(symbols):
            holes = []
            for h in range(HOLES_PER_SYMBOL):
                lo = start + shift + span * h + timedelta(minutes=17 * s + 3)
                hi = min(lo + timedelta(minutes=1 + (h + s) % 20), end)
                if lo >= hi:
                    continue
                await conn.execute(DELETE, symbol, lo, hi)
                holes.append(MinuteRange(datetime_to_ms(lo), datetime_to_ms(hi)))
            punched[symbol] = merge(holes)
    return punched


async def quiesce(conn: asyncpg.Connection) -> None:
    """Wait until no other backend holds back the xmin horizon or runs autovacuum (the
    bulk load sets it off), then VACUUM ANALYZE. Otherwise autovacuum competes with the
    timed scans for the two cores, and a VACUUM run under an older snapshot leaves the
    pages around the punched holes not all-visible, so index-only scans visit the heap
    there. INDEX_CLEANUP ON: with so few dead rows VACUUM would skip index cleanup and
    leave those pages not all-visible too (autovacuum does the same in production,
    until enough dead rows accumulate: a few thousand heap fetches per symbol)."""
    waited = time.perf_counter()
    while await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND (backend_type = 'autovacuum worker' OR backend_xmin IS NOT NULL)"
    ):
        if time.perf_counter() - waited > 300:
            print("autovacuum still running after 300 s; measuring anyway")
            break
        await asyncio.sleep(0.5)  # polls the server's own state
    await conn.execute("VACUUM (ANALYZE, INDEX_CLEANUP ON) candles_1m")
    print(f"waited {time.perf_counter() - waited:.1f} s for autovacuum, then VACUUM ANALYZE")


async def timed(rounds: int, one_scan: Callable[[], Awaitable[Holes]], expected: Holes) -> list[float]:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        found = await one_scan()
        timings.append(time.perf_counter() - started)
        assert found == expected, "the scan did not find exactly the punched holes"
    return timings


def heap_fetches(plan: Any) -> int:
    """Sum of "Heap Fetches" over a JSON plan: index-only scans that had to visit the heap."""
    if isinstance(plan, dict):
        return int(plan.get("Heap Fetches", 0)) + sum(heap_fetches(v) for v in plan.values())
    if isinstance(plan, list):
        return sum(heap_fetches(v) for v in plan)
    return 0


@dataclass(frozen=True, slots=True)
class Scans:
    sequential: float  # median s, one symbol after another on one connection
    two_connections: float  # median s, two symbols at a time


@dataclass
class Bench:
    conn: asyncpg.Connection
    pool: asyncpg.Pool
    symbols: list[str]
    start: datetime
    end: datetime
    rounds: int

    async def measure(self, state: str, expected: Holes) -> Scans:
        lo_ms, hi_ms = datetime_to_ms(self.start), datetime_to_ms(self.end)

        async def sequential() -> Holes:
            return {s: await scan_holes(self.conn, s, lo_ms, hi_ms) for s in self.symbols}

        async def two_at_a_time() -> Holes:
            sem = asyncio.Semaphore(2)

            async def one(symbol: str) -> list[MinuteRange]:
                async with sem, self.pool.acquire() as c:
                    return await scan_holes(c, symbol, lo_ms, hi_ms)

            found = await asyncio.gather(*(one(s) for s in self.symbols))
            return dict(zip(self.symbols, found, strict=True))

        print(f"-- {state}: {load()}")
        seq = await timed(self.rounds, sequential, expected)
        par = await timed(self.rounds, two_at_a_time, expected)
        async with self.conn.transaction():
            await self.conn.execute("SET LOCAL jit = off")
            explained = await self.conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {SCAN_HOLES}", self.symbols[0], self.start, self.end
            )
        plan = json.loads(explained) if isinstance(explained, str) else explained
        missing = sum(r.minutes for holes in expected.values() for r in holes)
        print(f"sequential full scans (s): {', '.join(f'{t:.3f}' for t in seq)}")
        print(f"two connections (s):       {', '.join(f'{t:.3f}' for t in par)}")
        print(
            f"{missing} missing minutes found exactly; heap fetches in one symbol's scan: "
            f"{heap_fetches(plan)}; {load()}"
        )
        return Scans(statistics.median(seq), statistics.median(par))


async def compressed_phases(b: Bench, expected: Holes, plain: Scans, plain_bytes: float) -> None:
    """Community licence: the same scans on compressed, then partially compressed history."""
    conn = b.conn
    # The policy would compress in the background, in the middle of the timed scans.
    await conn.execute(
        "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_compression'"
    )
    started = time.perf_counter()
    chunks = await conn.fetchval(
        "SELECT count(compress_chunk(c))"
        " FROM show_chunks('candles_1m', older_than => now() - interval '7 days') c"
    )
    print(f"compressed {chunks} chunks in {time.perf_counter() - started:.1f} s")
    await quiesce(conn)
    rows = await conn.fetchval(ROWS_IN_COMPRESSED_CHUNKS)
    per_candle = float(await conn.fetchval(COMPRESSED_BYTES)) / rows
    print(f"compressed chunks: {rows:,} candles, {per_candle:.1f} bytes per candle")
    packed = await b.measure("compressed (every chunk but the newest week)", expected)

    more = await punch(conn, b.symbols, b.start, b.end, shift=(b.end - b.start) // (2 * HOLES_PER_SYMBOL))
    expected = {s: merge([*expected[s], *more[s]]) for s in b.symbols}
    partial = await conn.fetchval(
        "SELECT count(*) FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h"
        " ON h.id = c.hypertable_id WHERE h.table_name = 'candles_1m' AND c.status & 8 = 8"
    )
    print(f"{HOLES_PER_SYMBOL} more holes per symbol deleted: {partial} chunks partially compressed")
    await quiesce(conn)
    mixed = await b.measure("partially compressed", expected)

    result("scan_compressed_full_seconds", packed.sequential, "s")
    result("scan_compressed_two_connections_seconds", packed.two_connections, "s")
    result("scan_compressed_over_uncompressed", packed.sequential / plain.sequential, "ratio")
    result("scan_partial_full_seconds", mixed.sequential, "s")
    result("scan_partial_over_uncompressed", mixed.sequential / plain.sequential, "ratio")
    result("scan_compressed_bytes_per_candle", per_candle, "B")
    result("compressed_over_uncompressed_bytes", per_candle / plain_bytes, "ratio")


async def run(url: str, symbols: list[str], months: int, rounds: int) -> None:
    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
    try:
        info = await apply_schema(conn)
        print(f"TimescaleDB licence: {info.license}")
        end = (await conn.fetchval("SELECT date_trunc('minute', now())")) - timedelta(minutes=1)
        start = end - timedelta(days=30 * months)
        loaded = time.perf_counter()
        for symbol in symbols:
            await conn.execute(FILL, symbol, start, end)
        rows = await conn.fetchval("SELECT count(*) FROM candles_1m")
        print(f"loaded {rows:,} candles in {time.perf_counter() - loaded:.1f} s")
        expected = await punch(conn, symbols, start, end, shift=timedelta(0))
        await quiesce(conn)
        plain_bytes = float(await conn.fetchval("SELECT hypertable_size('candles_1m')")) / rows
        print(f"uncompressed: {plain_bytes:.1f} bytes per candle (table, indexes, TOAST)")
        b = Bench(conn, pool, symbols, start, end, rounds)
        plain = await b.measure("uncompressed", expected)
        result("scan_full_seconds", plain.sequential, "s")
        result("scan_per_symbol_ms", plain.sequential / len(symbols) * 1000, "ms")
        result("scan_full_two_connections_seconds", plain.two_connections, "s")
        result("scan_bytes_per_candle", plain_bytes, "B")
        if info.compression:
            await compressed_phases(b, expected, plain, plain_bytes)
        else:
            print(
                "no compressed figures: this TimescaleDB is the Apache build; run with QUAINT_PG_BIN "
                "naming the bin dir of a PostgreSQL with a Community build to get them"
            )
    finally:
        await pool.close()
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scan", description=__doc__.split("\n")[0])
    parser.add_argument("--months", type=int, default=13, help="history stored per symbol (30-day months)")
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7, help="scans timed per figure (median reported)")
    args = parser.parse_args(sys.argv[2:])
    symbols = [f"S{i}USDT" for i in range(args.symbols)]
    print(machine())
    print(f"gap scan: {args.months} months x {len(symbols)} symbols, {HOLES_PER_SYMBOL} holes each")
    with durable_cluster() as url:
        asyncio.run(run(url, symbols, args.months, args.rounds))
