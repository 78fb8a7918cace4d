"""Gap scan cost as the universe grows (issue 17): ``--days`` (7) of 1-minute candles for 10,
100, 500 and 2,000 symbols (``--sizes``; each size adds symbols to the previous one's), holes
punched as in ``python -m bench scan``; at each size, on one connection, one symbol after
another as the gap handler's store runs it (``gap_handler.store.scan_holes``):

* the full scan of each symbol's whole history, reported per symbol-day: flat as the universe
  grows when a symbol's scan costs the same whatever the other symbols store;
* the incremental scan (the minutes since the previous scan, here the last 5), per symbol: it
  must not grow with the stored history, so it is also timed at the first size with one day
  stored and with ``--days`` (``scan_incremental_days_over_one_day``, ~1).

The holes found must equal the holes punched, exactly (the run fails otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import datetime, timedelta

import asyncpg

from bench.common import durable_cluster, machine, result
from bench.scan import FILL, Holes, load, punch, quiesce
from gap_handler.store import scan_holes
from quaint.binance.models import MINUTE_MS, datetime_to_ms
from quaint.store.schema import apply_schema

INCREMENTAL_MINUTES = 5
# punch() moves each symbol's holes 17 minutes per position in its list: past ~590 symbols a
# week has none left. In lists of 100, every symbol keeps at least 17 of its 20 in a week.
PUNCHED_TOGETHER = 100


async def full_scan_s(
    conn: asyncpg.Connection, symbols: list[str], lo: int, hi: int, expected: Holes
) -> float:
    started = time.perf_counter()
    found = {s: await scan_holes(conn, s, lo, hi) for s in symbols}
    elapsed = time.perf_counter() - started
    if found != expected:
        raise SystemExit("the full scan did not find exactly the punched holes")
    return elapsed


async def incremental_ms(conn: asyncpg.Connection, symbols: list[str], hi: int, rounds: int) -> float:
    """Median over ``rounds`` of one incremental pass over every symbol, ms per symbol."""
    timings = []
    for _ in range(rounds + 1):  # the first pass warms the plans and caches: not counted
        started = time.perf_counter()
        for symbol in symbols:
            holes = await scan_holes(conn, symbol, hi - INCREMENTAL_MINUTES * MINUTE_MS, hi)
            if holes:
                raise SystemExit(f"{symbol}: the last {INCREMENTAL_MINUTES} minutes have a hole: {holes}")
        timings.append((time.perf_counter() - started) * 1000 / len(symbols))
    return statistics.median(timings[1:])


async def fill(conn: asyncpg.Connection, symbols: list[str], start: datetime, end: datetime) -> Holes:
    """Store ``[start, end)`` for ``symbols`` and punch their holes (none in the last hour, so
    that the incremental scan finds none)."""
    loaded = time.perf_counter()
    for symbol in symbols:
        await conn.execute(FILL, symbol, start, end)
    holes: Holes = {}
    for i in range(0, len(symbols), PUNCHED_TOGETHER):
        some = symbols[i : i + PUNCHED_TOGETHER]
        holes |= await punch(conn, some, start, end - timedelta(hours=1), shift=timedelta(0))
    days = (end - start) / timedelta(days=1)
    print(f"stored {len(symbols)} more symbols x {days:g} days in {time.perf_counter() - loaded:.1f} s")
    return holes


async def run(url: str, sizes: list[int], days: int, rounds: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        end = (await conn.fetchval("SELECT date_trunc('minute', now())")) - timedelta(minutes=1)
        start = end - timedelta(days=days)
        lo, hi = datetime_to_ms(start), datetime_to_ms(end)
        names = [f"S{i}USDT" for i in range(max(sizes))]

        # The incremental scan with one day stored, then with ``days``: the same symbols.
        first = names[: sizes[0]]
        await fill(conn, first, end - timedelta(days=1), end)
        await quiesce(conn)
        one_day = await incremental_ms(conn, first, hi, rounds)
        await conn.execute("TRUNCATE candles_1m")

        expected: Holes = {}
        done = 0
        per_day: dict[int, float] = {}
        for size in sizes:
            expected |= await fill(conn, names[done:size], start, end)
            done = size
            await quiesce(conn)
            symbols = names[:size]
            full = statistics.median([await full_scan_s(conn, symbols, lo, hi, expected) for _ in range(3)])
            incremental = await incremental_ms(conn, symbols, hi, rounds)
            per_day[size] = full * 1000 / (size * days)
            missing = sum(r.minutes for h in expected.values() for r in h)
            print(
                f"{size} symbols x {days} days: full scan {full:.2f} s ({missing} missing minutes found"
                f" exactly), incremental {incremental:.3f} ms per symbol; {load()}"
            )
            result(f"scan_full_ms_per_symbol_day_{size}", per_day[size], "ms")
            result(f"scan_incremental_ms_per_symbol_{size}", incremental, "ms")
            if size == sizes[0]:
                result("scan_incremental_days_over_one_day", incremental / one_day, "ratio")
        result(
            f"scan_full_per_symbol_day_{sizes[-1]}_over_{sizes[0]}",
            per_day[sizes[-1]] / per_day[sizes[0]],
            "ratio",
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scan-scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,500,2000", help="universe sizes, ascending")
    parser.add_argument("--days", type=int, default=7, help="history stored per symbol")
    parser.add_argument("--rounds", type=int, default=5, help="incremental passes timed (median reported)")
    args = parser.parse_args(sys.argv[2:])
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    print(machine())
    print(f"gap scan as the universe grows: {sizes} symbols x {args.days} days")
    with durable_cluster() as url:
        asyncio.run(run(url, sizes, args.days, args.rounds))
