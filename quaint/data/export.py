"""``python -m quaint export``: candles of one interval for some symbols and a time range into
Parquet or CSV files, one per symbol and month (``OUT/symbol=BTCUSDT/2025-01.parquet``, the
Hive layout: ``pyarrow.parquet.read_table(OUT)`` reads it all back with ``symbol`` as a column).

Streamed: one COPY per symbol, parsed a few MB at a time, and each month written as soon as
the next one begins, so memory holds one symbol-month (at most 44,640 1-minute rows) whatever
the range. Decimals are exact (``decimal128(38, s)``, s >= 8: see :mod:`quaint.data.tables`);
CSV holds their exact text and ISO 8601 UTC times. Files are written whole under a temporary
name, then renamed: an interrupted export leaves no half file. Exit 0 when done; 1 when no
candle of the range is stored; 2 for bad arguments or settings; 3 when the database cannot
be used (as the services). DB settings are the services' ``DB_*`` (or ``--dsn``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from quaint.data.read import CANDLE_INTEGERS, INTERVALS, symbol_list, time_range
from quaint.data.tables import PARSE_BYTES, TextTable, unify
from quaint.service.local_suite import refusal, running_local_suite
from quaint.service.settings import Settings, load_settings
from quaint.service.terminal import StatusLine
from quaint.store import history
from quaint.store.errors import describe
from quaint.store.pool import connect_kwargs

FORMATS = ("parquet", "csv")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXIT_OK, EXIT_NOTHING, EXIT_BAD_ARGUMENTS, EXIT_DATABASE = 0, 1, 2, 3


@dataclass
class Progress:
    """What has been exported so far; ``show`` gets one line of it now and then."""

    since_us: int
    until_us: int
    show: Callable[[str], None] | None = None
    rows: int = 0
    bytes_in: int = 0  # COPY text received
    files: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    shown_at: float = 0.0

    def update(self, symbol: str, month: str, last_us: int, sink: TextTable, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.show is None or (not force and now - self.shown_at < 0.2):
            return
        self.shown_at = now
        elapsed = max(now - self.started, 1e-9)
        rows, mb = self.rows + sink.rows, (self.bytes_in + sink.bytes) / 1e6
        pct = 100 * min(1.0, max(0.0, (last_us - self.since_us) / max(self.until_us - self.since_us, 1)))
        self.show(
            f"{symbol} {month} {pct:3.0f}%  {rows:,} rows  {mb:,.1f} MB  "
            f"{rows / elapsed:,.0f} rows/s  {len(self.files)} files"
        )


def month_of(micros: int) -> tuple[str, int]:
    """``YYYY-MM`` of a time (µs) and the start of the month after it (µs)."""
    t = EPOCH + timedelta(microseconds=micros)  # integers: exact at a month's first µs
    nxt = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    return f"{t.year:04d}-{t.month:02d}", (nxt - EPOCH) // timedelta(microseconds=1)


def write_file(table: pa.Table, path: Path, fmt: str) -> None:
    """``table`` into ``path`` whole: written under a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        pq.write_table(table, tmp)
    else:
        pa_csv.write_csv(table, tmp)
    os.replace(tmp, path)


class MonthFiles:
    """Takes one symbol's parsed tables in time order; writes each month as it completes."""

    def __init__(self, symbol: str, out: Path, fmt: str, progress: Progress, sink: TextTable) -> None:
        self.symbol, self.out, self.fmt, self.progress, self.sink = symbol, out, fmt, progress, sink
        self.month: str | None = None
        self.month_end = 0
        self.tables: list[pa.Table] = []

    def __call__(self, table: pa.Table) -> None:
        times = table.column("time").cast(pa.int64())  # µs since the epoch
        while table.num_rows:
            first = times[0].as_py()
            if self.month is None or first >= self.month_end:
                self.flush()
                self.month, self.month_end = month_of(first)
            # Rows come in time order: those before the month's end are its rows.
            inside = pc.sum(pc.less(times, pa.scalar(self.month_end)).cast(pa.int64())).as_py() or 0
            self.tables.append(table.slice(0, inside))
            table, times = table.slice(inside), times.slice(inside)
        last = self.tables[-1].column("time").cast(pa.int64())[-1].as_py() if self.tables else 0
        self.progress.update(self.symbol, self.month or "", last, self.sink)

    def flush(self) -> None:
        if self.month is None or not self.tables:
            return
        month = unify(self.tables).drop_columns("symbol")
        path = self.out / f"symbol={self.symbol}" / f"{self.month}.{self.fmt}"
        write_file(month, path, self.fmt)
        self.progress.files.append(path)
        self.tables = []


async def export_candles(
    conn: asyncpg.Connection,
    symbols: Sequence[str],
    since: datetime,
    until: datetime | None,
    *,
    interval: str,
    fmt: str,
    out: Path,
    complete_only: bool = False,
    progress: Progress | None = None,
    parse_bytes: int = PARSE_BYTES,
) -> Progress:
    """Export (see the module doc); returns what was written. ``parse_bytes``: COPY text
    parsed at a time (the memory held besides the month's tables)."""
    end = until or datetime.now(UTC)
    done = progress or Progress(int(since.timestamp() * 1e6), int(end.timestamp() * 1e6))
    for symbol in symbols:
        sink = TextTable(
            history.CANDLE_COLUMNS, CANDLE_INTEGERS, history.CANDLE_DECIMALS, parse_bytes=parse_bytes
        )
        sink.on_table = files = MonthFiles(symbol, out, fmt, done, sink)
        await history.copy_candles(
            conn, sink, [symbol], since, until, interval=interval, complete_only=complete_only
        )
        sink.finish()
        files.flush()
        done.update(symbol, files.month or "-", done.until_us, sink, force=True)
        done.rows += sink.rows
        done.bytes_in += sink.bytes
    return done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quaint export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    parser.add_argument("--since", required=True, help="ISO 8601 date or time (UTC when no offset)")
    parser.add_argument(
        "--until", default=None, help="exclusive end; default: everything stored after --since"
    )
    parser.add_argument(
        "--interval", default="1m", choices=INTERVALS, help="candles_1m or a rollup (default 1m)"
    )
    parser.add_argument("--complete-only", action="store_true", help="drop buckets that miss minutes")
    parser.add_argument("--format", default="parquet", choices=FORMATS, help="default parquet")
    parser.add_argument("--out", required=True, type=Path, help="directory (created if missing)")
    parser.add_argument("--dsn", default=None, help="postgresql:// URL; default: the DB_* settings")
    return parser


async def connect(dsn: str | None) -> asyncpg.Connection:
    if dsn is not None:
        return await asyncpg.connect(dsn, timeout=60)
    settings = load_settings(Settings)
    return await asyncpg.connect(**connect_kwargs(settings), timeout=settings.db_connect_timeout_s)


async def run_export(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        symbols = symbol_list(args.symbols, "--symbols")
        since, until = time_range(args.since, args.until, ("--since", "--until"))
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_BAD_ARGUMENTS
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out}: exists and is not a directory", file=err)
        return EXIT_BAD_ARGUMENTS
    if args.dsn is None and (run_dir := running_local_suite(os.environ)) is not None:
        print(refusal("quaint export", run_dir), file=err)
        return EXIT_BAD_ARGUMENTS
    try:
        conn = await connect(args.dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as exc:
        print(f"error: the database cannot be used: {describe(exc)}", file=err)
        return EXIT_DATABASE
    bar = StatusLine(err) if err.isatty() else None
    end = until or datetime.now(UTC)
    progress = Progress(int(since.timestamp() * 1e6), int(end.timestamp() * 1e6), bar.show if bar else None)
    try:
        await export_candles(
            conn,
            symbols,
            since,
            until,
            interval=args.interval,
            fmt=args.format,
            out=args.out,
            complete_only=args.complete_only,
            progress=progress,
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
        print(f"error: the database stopped the export: {describe(exc)}", file=err)
        return EXIT_DATABASE
    except OSError as exc:
        print(f"error: cannot write under --out {args.out}: {exc}", file=err)
        return EXIT_NOTHING
    finally:
        if bar is not None:
            bar.finish()
        await conn.close()
    empty = sorted({*symbols} - {p.parent.name.partition("=")[2] for p in progress.files})
    for symbol in empty:
        print(f"note: no {args.interval} candles of {symbol} stored in the range", file=err)
    elapsed = time.monotonic() - progress.started
    print(
        f"exported {progress.rows:,} {args.interval} candles of {len(symbols) - len(empty)} of "
        f"{len(symbols)} symbols into "
        f"{len(progress.files)} {args.format} files under {args.out} in {elapsed:.1f} s",
        file=out,
    )
    return EXIT_OK if progress.rows else EXIT_NOTHING


def main(argv: Sequence[str]) -> int:
    return asyncio.run(run_export(argv))
