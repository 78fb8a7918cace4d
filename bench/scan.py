"""Gap scan: 13 months x 10 symbols of 1-minute candles stored, holes punched, then
the gap handler's own set-based scan (``gap_handler.store.scan_holes``) is timed."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import timedelta

import asyncpg

from bench.common import durable_cluster, machine, result
from gap_handler.store import scan_holes
from quaint.binance.models import MINUTE_MS, datetime_to_ms
from quaint.store.schema import apply_schema

SYMBOLS = [f"S{i}USDT" for i in range(10)]
MONTHS = 13
HOLES_PER_SYMBOL = 20

FILL = """
INSERT INTO candles_1m (symbol, time, open, high, low, close, volume, quote_asset_volume,
    taker_buy_base_asset_volume, taker_buy_quote_asset_volume, number_of_trades, source)
SELECT $1, t, 100.5, 101.25, 99.75, 100.125, 12.5, 1256.25, 6.25, 628.125, 42, 'archive'
FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 minute', interval '1 minute') AS t
"""


async def run(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        end = (await conn.fetchval("SELECT date_trunc('minute', now())")) - timedelta(minutes=1)
        start = end - timedelta(days=30 * MONTHS)
        loaded = time.perf_counter()
        for symbol in SYMBOLS:
            await conn.execute(FILL, symbol, start, end)
        rows = await conn.fetchval("SELECT count(*) FROM candles_1m")
        print(f"loaded {rows:,} candles in {time.perf_counter() - loaded:.1f} s")
        # Punch holes of 1..20 minutes spread over the range (deterministic).
        punched = 0
        span = (end - start) // HOLES_PER_SYMBOL
        for s, symbol in enumerate(SYMBOLS):
            for h in range(HOLES_PER_SYMBOL):
                lo = start + span * h + timedelta(minutes=17 * s + 3)
                n = 1 + (h + s) % 20
                status = await conn.execute(
                    "DELETE FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3",
                    symbol, lo, lo + timedelta(minutes=n),
                )  # fmt: skip
                punched += int(status.split()[1])
        await conn.execute("VACUUM ANALYZE candles_1m")
        lo_ms, hi_ms = datetime_to_ms(start), datetime_to_ms(end)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            found = 0
            for symbol in SYMBOLS:
                found += sum(
                    (r.end - r.start) // MINUTE_MS for r in await scan_holes(conn, symbol, lo_ms, hi_ms)
                )
            timings.append(time.perf_counter() - started)
        assert found == punched, f"scan found {found} missing minutes, {punched} were punched"
        print(f"full scans (s): {', '.join(f'{t:.3f}' for t in timings)}; {found} missing minutes found")
        result("scan_full_seconds", statistics.median(timings), "s")
        result("scan_per_symbol_ms", statistics.median(timings) / len(SYMBOLS) * 1000, "ms")
    finally:
        await conn.close()


def main() -> None:
    print(machine())
    print(f"gap scan: {MONTHS} months x {len(SYMBOLS)} symbols, {HOLES_PER_SYMBOL} holes each")
    with durable_cluster() as url:
        asyncio.run(run(url))
