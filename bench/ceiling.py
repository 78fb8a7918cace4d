"""The database-side ceiling: psql ``\\copy`` of N book-tick rows from a CSV file, and
the project's own asyncpg COPY path (``copy_book_ticks``) on the same rows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from decimal import Decimal

import asyncpg

from bench.common import psql
from quaint.binance.models import BookTick, ms_to_datetime
from quaint.store.book import copy_book_ticks

T0 = 1_763_985_600_000


def book_ticks(n: int, symbols: int = 5) -> list[BookTick]:
    """Realistic 8-decimal values, different per row so nothing compresses trivially."""
    out = []
    for i in range(n):
        bid = Decimal(60000_00000000 + i * 37 % 1_000_000) / 100_000_000 * 10_000
        out.append(
            BookTick(
                f"SYM{i % symbols}USDT",
                800_000_000 + i,
                bid.quantize(Decimal("0.00000001")),
                Decimal("1.23400000"),
                (bid + Decimal("0.01")).quantize(Decimal("0.00000001")),
                Decimal("0.56700000"),
                T0 + i,
            )
        )
    return out


def psql_copy_rows_per_s(url: str, ticks: list[BookTick]) -> float:
    """psql \\copy from a CSV file: the server's own ingest ceiling on this machine."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        for t in ticks:
            when = ms_to_datetime(t.received_at).isoformat()
            f.write(f"{t.symbol},{when},{t.update_id},{t.bid_price},{t.bid_qty},{t.ask_price},{t.ask_qty}\n")
        path = f.name
    cmd, env = psql(url, "-c", f"\\copy book_ticker FROM '{path}' WITH (FORMAT csv)")
    try:
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, timeout=600)
        return len(ticks) / (time.perf_counter() - started)
    finally:
        os.unlink(path)


async def asyncpg_copy_rows_per_s(url: str, ticks: list[BookTick], batch: int = 10_000) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for i in range(0, len(ticks), batch):
            await copy_book_ticks(conn, ticks[i : i + batch])
        return len(ticks) / (time.perf_counter() - started)
    finally:
        await conn.close()


def measure(url: str, n: int) -> tuple[float, float]:
    """(psql rows/s, asyncpg rows/s) for ``n`` rows each, on a schema-loaded database."""
    ticks = book_ticks(n)
    psql_rate = psql_copy_rows_per_s(url, ticks)
    asyncpg_rate = asyncio.run(asyncpg_copy_rows_per_s(url, ticks))
    return psql_rate, asyncpg_rate


def main() -> None:
    from bench.common import durable_cluster, machine, result
    from quaint.store.schema import apply_schema

    print(machine())
    n = 500_000

    async def load_schema(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await apply_schema(conn)
        finally:
            await conn.close()

    with durable_cluster() as url:
        asyncio.run(load_schema(url))
        psql_rate, asyncpg_rate = measure(url, n)
    print(
        f"{n:,} book_ticker rows: psql \\copy {psql_rate:,.0f} rows/s,"
        f" asyncpg COPY {asyncpg_rate:,.0f} rows/s"
    )
    result("copy_ceiling_psql_rows_per_s", psql_rate, "rows/s")
    result("copy_ceiling_asyncpg_rows_per_s", asyncpg_rate, "rows/s")
