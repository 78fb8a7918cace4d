"""``python -m quaint export``: files per symbol and month that reload (Parquet and CSV) to
exactly the stored values, streamed in chunks that cut across months, a progress line on a
terminal, and a clear error and exit code for every bad argument."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from quaint.binance.models import MINUTE_MS, Candle, datetime_to_ms
from quaint.data import read_candles
from quaint.data.export import export_candles, month_of, run_export
from quaint.store.candles import upsert_candles
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
# Across a month's end: two files per symbol.
START = datetime(2026, 1, 31, 21, 0, tzinfo=UTC)
MINUTES = 6 * 60
MONTHS = ["2026-01", "2026-02"]


def candle(symbol: str, m: int) -> Candle:
    t = datetime_to_ms(START) + m * MINUTE_MS
    o = Decimal(60000 + m) + Decimal(m % 97) / 10 ** (m % 9)  # 0..8 places
    return Candle(
        symbol=symbol,
        open_time=t,
        close_time=t + MINUTE_MS - 1,
        open=o,
        high=o + 1,
        low=o - Decimal("0.00000001"),
        close=o,
        volume=Decimal(m) / 1000,
        quote_asset_volume=Decimal(m * 7) / 100,
        number_of_trades=m,
        taker_buy_base_asset_volume=Decimal(m) / 4000,
        taker_buy_quote_asset_volume=Decimal("12345678901234567890.12345678"),
    )


async def seed(conn: asyncpg.Connection) -> None:
    for symbol in SYMBOLS:
        await upsert_candles(conn, [candle(symbol, m) for m in range(MINUTES) if m % 17 != 3], "archive")
    # candles_1m allows NULL there: exported as nulls (empty in CSV), not zeros.
    await conn.execute(
        "UPDATE candles_1m SET quote_asset_volume = NULL, number_of_trades = NULL"
        " WHERE extract(minute FROM time)::int % 25 = 0"
    )


def month_rows(table: pa.Table, symbol: str, month: str) -> list[dict[str, Any]]:
    rows = [r for r in table.to_pylist() if r["symbol"] == symbol and r["time"].strftime("%Y-%m") == month]
    for r in rows:
        del r["symbol"]  # the directory says it (Hive layout)
    return rows


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quaint", "export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
async def test_export_reloads_to_the_stored_values(
    db_pool: asyncpg.Pool, db_url: str, tmp_path: Path, fmt: str
) -> None:
    async with db_pool.acquire() as conn:
        await seed(conn)
    out = tmp_path / "export"
    args = ["--symbols", "btcusdt,ETHUSDT", "--since", "2026-01-31", "--until", "2026-02-02T00:00:00Z"]
    done = await asyncio.to_thread(cli, *args, "--format", fmt, "--out", str(out), "--dsn", db_url)
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout and f"into 4 {fmt} files" in done.stdout, done.stdout
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [f"symbol={s}/{m}.{fmt}" for s in SYMBOLS for m in MONTHS]
    stored = await read_candles(db_pool, SYMBOLS, START, output="arrow")
    assert isinstance(stored, pa.Table) and stored.num_rows > 600
    assert None in stored.column("number_of_trades").to_pylist()
    schema = stored.schema.remove(0)  # without symbol
    for symbol in SYMBOLS:
        for month in MONTHS:
            path = out / f"symbol={symbol}" / f"{month}.{fmt}"
            if fmt == "parquet":
                reloaded = pq.read_table(path)
            else:
                # The exact text of every decimal: read as decimals of the same scale, never floats.
                options = pa_csv.ConvertOptions(column_types=schema)
                reloaded = pa_csv.read_csv(path, convert_options=options)
            assert reloaded.schema == schema
            want = month_rows(stored, symbol, month)
            assert want and reloaded.to_pylist() == want, (symbol, month)
    # The whole directory as one dataset, symbol from the path.
    if fmt == "parquet":
        everything = pq.read_table(out)
        assert everything.num_rows == stored.num_rows


async def test_export_streams_in_chunks_across_months(db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Tiny parse chunks (a few rows each, cut anywhere in a month) give the same files."""
    async with db_pool.acquire() as conn:
        await seed(conn)
        done = await export_candles(
            conn,
            SYMBOLS,
            START,
            None,
            interval="15m",
            fmt="parquet",
            out=tmp_path,
            complete_only=True,
            parse_bytes=700,
        )
    stored = await read_candles(db_pool, SYMBOLS, START, interval="15m", complete_only=True, output="arrow")
    assert isinstance(stored, pa.Table)
    assert done.rows == stored.num_rows and len(done.files) == 4
    assert set(stored.column("minutes").to_pylist()) == {15}
    for symbol in SYMBOLS:
        for month in MONTHS:
            reloaded = pq.read_table(tmp_path / f"symbol={symbol}" / f"{month}.parquet")
            assert reloaded.to_pylist() == month_rows(stored, symbol, month)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_line_on_a_terminal(db_pool: asyncpg.Pool, db_url: str, tmp_path: Path) -> None:
    async with db_pool.acquire() as conn:
        await seed(conn)
    out, err = io.StringIO(), Terminal()
    code = await run_export(
        ["--symbols", "BTCUSDT", "--since", "2026-01-31", "--out", str(tmp_path), "--dsn", db_url], out, err
    )
    assert code == 0, err.getvalue()
    shown = err.getvalue()
    # The status line is redrawn in place and left on its line at the end.
    assert shown.startswith("\r\x1b[K") and shown.endswith("\n"), shown
    stored = await read_candles(db_pool, "BTCUSDT", START, output="arrow")
    # The last line counts every row once.
    assert shown.rsplit("\r\x1b[K", 1)[1].startswith(f"BTCUSDT 2026-02 100%  {stored.num_rows:,} rows  "), (
        shown
    )
    assert "rows/s" in shown, shown
    assert "exported" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-01-01", "--out", "x"], "the following arguments are required: --symbols"),
        (["--symbols", "BTCUSDT", "--since", "2026-01-01"], "the following arguments are required: --out"),
        (["--symbols", "BTC-USDT", "--since", "2026-01-01", "--out", "x"], "error: --symbols='BTC-USDT'"),
        (["--symbols", "BTCUSDT", "--since", "soon", "--out", "x"], "error: --since 'soon': not an ISO 8601"),
        (
            ["--symbols", "BTCUSDT", "--since", "2026-01-02", "--until", "2026-01-01", "--out", "x"],
            "error: --until (2026-01-01T00:00:00+00:00) must be after --since",
        ),
        (
            ["--symbols", "BTCUSDT", "--since", "2026-01-01", "--interval", "2h", "--out", "x"],
            "invalid choice: '2h'",
        ),
        (
            ["--symbols", "BTCUSDT", "--since", "2026-01-01", "--format", "xlsx", "--out", "x"],
            "invalid choice",
        ),
        (["--symbols", "BTCUSDT", "--since", "2026-01-01", "--out", "pyproject.toml"], "is not a directory"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_error(args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_database_errors_and_empty_ranges(db_url: str, tmp_path: Path) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    base = ["--symbols", "BTCUSDT", "--since", "2026-01-01", "--out", str(tmp_path)]
    done = await asyncio.to_thread(cli, *base, "--dsn", unreachable)
    assert done.returncode == 3 and "error: the database cannot be used" in done.stderr, done.stderr
    done = await asyncio.to_thread(cli, *base, "--dsn", db_url)  # nothing stored
    assert done.returncode == 1, done.stderr
    assert "note: no 1m candles of BTCUSDT stored in the range" in done.stderr
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    usage = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "quaint"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and usage.stderr.startswith("usage: python -m quaint export")


def test_without_the_extra_the_command_names_pip_install() -> None:
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from quaint.__main__ import main\n"
        "sys.exit(main(['export']))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: quaint.data needs pyarrow (the 'data' extra): pip install 'quaint2[data]'"
    )


def test_month_of_is_exact_at_the_bounds() -> None:
    def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
        return datetime_to_ms(datetime(year, month, day, hour, minute, tzinfo=UTC)) * 1000

    assert month_of(us(2026, 2, 1) - 1) == ("2026-01", us(2026, 2, 1))
    assert month_of(us(2026, 2, 1)) == ("2026-02", us(2026, 3, 1))
    assert month_of(us(2025, 12, 31, 23, 59)) == ("2025-12", us(2026, 1, 1))
