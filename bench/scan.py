"""Gap scan: 13 months x 10 symbols of 1-minute candles stored, holes punched, then
the gap handler's own set-based scan (``gap_handler.store.scan_holes``) is timed.

Two figures: the full scan one symbol after another on one connection (the query's
own cost), and two symbols at a time on two connections, as ``GapService.scan`` runs
it. The holes found must equal the holes punched, exactly.
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
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from bench.common import durable_cluster, machine, result
from gap_handler.intervals import MinuteRange, merge
from gap_handler.store import SCAN_HOLES, scan_holes
from quaint.binance.models import datetime_to_ms
from quaint.store.schema import apply_schema

HOLES_PER_SYMBOL = 20

FILL = """
INSERT INTO candles_1m (symbol, time, open, high, low, close, volume, quote_asset_volume,
    taker_buy_base_asset_volume, taker_buy_quote_asset_volume, number_of_trades, source)
SELECT $1, t, 100.5, 101.25, 99.75, 100.125, 12.5, 1256.25, 6.25, 628.125, 42, 'archive'
FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 minute', interval '1 minute') AS t
"""

Holes = dict[str, list[MinuteRange]]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


async def punch(conn: asyncpg.Connection, symbols: list[str], start: datetime, end: datetime) -> Holes:
    """Holes of 1..20 minutes spread over the range (deterministic); returns them."""
    punched: Holes = {}
    span = (end - start) // HOLES_PER_SYMBOL
    for s, symbol in enumerate(symbols):
        holes = []
        for h in range(HOLES_PER_SYMBOL):
            lo = start + span * h + timedelta(minutes=17 * s + 3)
            hi = lo + timedelta(minutes=1 + (h + s) % 20)
            await conn.execute(
                "DELETE FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3", symbol, lo, hi
            )
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


async def run(url: str, symbols: list[str], months: int, rounds: int) -> None:
    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
    try:
        await apply_schema(conn)
        end = (await conn.fetchval("SELECT date_trunc('minute', now())")) - timedelta(minutes=1)
        start = end - timedelta(days=30 * months)
        loaded = time.perf_counter()
        for symbol in symbols:
            await conn.execute(FILL, symbol, start, end)
        rows = await conn.fetchval("SELECT count(*) FROM candles_1m")
        print(f"loaded {rows:,} candles in {time.perf_counter() - loaded:.1f} s")
        expected = await punch(conn, symbols, start, end)
        await quiesce(conn)
        lo_ms, hi_ms = datetime_to_ms(start), datetime_to_ms(end)

        async def sequential() -> Holes:
            return {s: await scan_holes(conn, s, lo_ms, hi_ms) for s in symbols}

        async def two_at_a_time() -> Holes:
            sem = asyncio.Semaphore(2)

            async def one(symbol: str) -> list[MinuteRange]:
                async with sem, pool.acquire() as c:
                    return await scan_holes(c, symbol, lo_ms, hi_ms)

            return dict(zip(symbols, await asyncio.gather(*(one(s) for s in symbols)), strict=True))

        print(load())
        seq = await timed(rounds, sequential, expected)
        par = await timed(rounds, two_at_a_time, expected)
        print(load())
        async with conn.transaction():
            await conn.execute("SET LOCAL jit = off")
            explained = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {SCAN_HOLES}", symbols[0], start, end
            )
        plan = json.loads(explained) if isinstance(explained, str) else explained
        missing = sum(r.minutes for holes in expected.values() for r in holes)
        print(f"sequential full scans (s): {', '.join(f'{t:.3f}' for t in seq)}")
        print(f"two connections (s):       {', '.join(f'{t:.3f}' for t in par)}")
        print(
            f"{missing} missing minutes found exactly; heap fetches in one symbol's scan: "
            f"{heap_fetches(plan)}"
        )
        result("scan_full_seconds", statistics.median(seq), "s")
        result("scan_per_symbol_ms", statistics.median(seq) / len(symbols) * 1000, "ms")
        result("scan_full_two_connections_seconds", statistics.median(par), "s")
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
