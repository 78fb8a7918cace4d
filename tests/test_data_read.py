"""quaint.data reads the stored rows exactly: candles of every interval (against the store's own
fetch_bars), book ticks and feature rows, into pandas, polars and Arrow; complete_only drops
exactly the partial buckets; the sync wrappers agree with the async reads; bad arguments
are clear errors."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import asyncpg
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from quaint.binance.models import MINUTE_MS, BookTick, Candle, datetime_to_ms
from quaint.data import (
    Frame,
    read_book_ticks,
    read_candles,
    read_candles_sync,
    read_features,
    read_features_sync,
)
from quaint.data.read import CANDLE_INTEGERS
from quaint.data.tables import Output, TextTable
from quaint.service.settings import Settings, db_fields_from_url
from quaint.store.book import copy_book_ticks
from quaint.store.candles import VALUE_COLUMNS, upsert_candles
from quaint.store.features import FeatureRow, upsert_features
from quaint.store.history import CANDLE_COLUMNS, CANDLE_DECIMALS, copy_candles
from quaint.store.rollups import ROLLUPS, fetch_bars

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
# Not on a day boundary: the first and last 1h/4h/1d buckets are partial.
START = datetime(2026, 3, 1, 7, 13, tzinfo=UTC)
T0 = datetime_to_ms(START)
MINUTES = 2 * 24 * 60 + 97
OUTPUTS: tuple[Output, ...] = ("pandas", "polars", "arrow")


def candles(symbol: str, seed: int) -> list[Candle]:
    """Mixed scales (0..8 places), holes, NULL-able columns present."""
    rng = random.Random(seed)
    out = []
    for m in range(MINUTES):
        if rng.random() < 0.03 or 600 <= m < 700:  # scattered missing minutes and an outage
            continue
        o, c = (Decimal(rng.randint(1, 10**9)) / 10 ** rng.randint(0, 8) for _ in range(2))
        t = T0 + m * MINUTE_MS
        out.append(
            Candle(
                symbol=symbol,
                open_time=t,
                close_time=t + MINUTE_MS - 1,
                open=o,
                high=max(o, c) + Decimal(rng.randint(0, 999)) / 1000,
                low=min(o, c) - Decimal(rng.randint(0, 999)) / 10**8,
                close=c,
                volume=Decimal(rng.randint(0, 10**12)) / 10**8,
                quote_asset_volume=Decimal(rng.randint(0, 10**12)) / 10**6,
                number_of_trades=rng.randint(0, 5000),
                taker_buy_base_asset_volume=Decimal(rng.randint(0, 10**10)) / 10**8,
                taker_buy_quote_asset_volume=Decimal(rng.randint(0, 10**10)) / 10**7,
            )
        )
    return out


async def seed(conn: asyncpg.Connection) -> None:
    for i, symbol in enumerate(SYMBOLS):
        await upsert_candles(conn, candles(symbol, i), "rest")


def rows_of(frame: Frame) -> list[dict[str, Any]]:
    """Rows as dicts of Python values (Decimal, int, str, ms times) from any output type."""
    if isinstance(frame, pa.Table):
        rows = frame.to_pylist()
    elif isinstance(frame, pl.DataFrame):
        rows = frame.to_dicts()
    else:
        assert isinstance(frame, pd.DataFrame)
        rows = [
            {str(k): (None if v is None or v is pd.NaT else v) for k, v in r.items()}
            for r in frame.astype(object).to_dict("records")
        ]
    for r in rows:
        r["time"] = datetime_to_ms(
            r["time"].to_pydatetime() if isinstance(r["time"], pd.Timestamp) else r["time"]
        )
    return rows


async def expected_bars(conn: asyncpg.Connection, interval: str, lo: int, hi: int) -> list[dict[str, Any]]:
    out = []
    for symbol in SYMBOLS:
        for b in await fetch_bars(conn, symbol, interval, lo, hi - 1, 10**6):
            row = {"symbol": symbol, "time": b.open_time, "minutes": b.minutes}
            row.update({c: getattr(b, c) for c in VALUE_COLUMNS})
            out.append(row)
    return out


@pytest.mark.parametrize("output", OUTPUTS)
async def test_candles_of_every_interval_equal_the_stored_rows(db_pool: asyncpg.Pool, output: Any) -> None:
    async with db_pool.acquire() as conn:
        await seed(conn)
        lo, hi = T0 + 31 * MINUTE_MS, T0 + (MINUTES - 200) * MINUTE_MS
        for interval in ROLLUPS:
            want = await expected_bars(conn, interval, lo, hi)
            got = await read_candles(
                db_pool,
                SYMBOLS,
                datetime.fromtimestamp(lo / 1000, UTC),
                datetime.fromtimestamp(hi / 1000, UTC),
                interval=interval,
                output=output,
            )
            assert len(want) > 0
            # Decimal equality is exact (Decimal("1.5") == Decimal("1.50000000"), nothing rounded).
            assert rows_of(got) == want, interval


async def test_arrow_types_are_exact_decimals_or_float64_by_choice(
    db_pool: asyncpg.Pool,
) -> None:
    async with db_pool.acquire() as conn:
        await seed(conn)
        # One value with 10 places: the column widens to scale 10 instead of rounding it.
        await conn.execute(
            "UPDATE candles_1m SET volume = 1.2345678901 WHERE symbol = $1 AND time = $2", "BTCUSDT", START
        )
        # Several chunks (one per COPY read here), typed one by one: the one with the wide value
        # is widened alone, then every chunk is cast to its scale.
        sink = TextTable(CANDLE_COLUMNS, CANDLE_INTEGERS, CANDLE_DECIMALS, parse_bytes=2000)
        await copy_candles(conn, sink, SYMBOLS, START, None)
    table = sink.finish()
    assert table.num_rows > 0
    assert table.schema.field("open").type == pa.decimal128(38, 8)
    assert table.schema.field("volume").type == pa.decimal128(38, 10)
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.column("volume")[0].as_py() == Decimal("1.2345678901")
    assert table.column("volume").num_chunks > 1
    assert rows_of(table)[1:] == rows_of(await read_candles(db_pool, SYMBOLS, START, output="arrow"))[1:]
    floats = await read_candles(db_pool, "BTCUSDT", START, output="pandas", decimals="float64")
    assert isinstance(floats, pd.DataFrame)
    assert floats["open"].dtype == "float64" and floats["volume"].iloc[0] == 1.2345678901
    exact = await read_candles(db_pool, "BTCUSDT", START, output="pandas")
    assert isinstance(exact, pd.DataFrame)
    # Arrow-backed, each column at the narrowest precision that holds it (scale kept), every
    # value a Decimal; the old object columns of Decimal on request.
    volume = exact["volume"].dtype
    assert isinstance(volume, pd.ArrowDtype) and isinstance(volume.pyarrow_dtype, pa.Decimal128Type)
    assert volume.pyarrow_dtype.scale == 10 and volume.pyarrow_dtype.precision < 38
    assert isinstance(exact["open"].iloc[0], Decimal) and exact["volume"].iloc[0] == Decimal("1.2345678901")
    objects = await read_candles(db_pool, "BTCUSDT", START, output="pandas", decimals="object")
    assert isinstance(objects, pd.DataFrame)
    assert objects["open"].dtype == object and isinstance(objects["open"].iloc[0], Decimal)
    assert list(objects["volume"]) == list(exact["volume"])
    assert list(floats["open"]) == [float(v) for v in exact["open"]]
    # Narrow enough for Arrow's exact arithmetic (38 digits would not hold even a difference).
    spread = exact["high"] - exact["low"]
    assert list(spread) == [h - lo for h, lo in zip(objects["high"], objects["low"], strict=True)]
    turnover = exact["close"] * exact["volume"]
    with localcontext(prec=100):  # Python's default 28 digits would round the products
        products = [c * v for c, v in zip(objects["close"], objects["volume"], strict=True)]
    assert list(turnover) == products
    frame = await read_candles(db_pool, "BTCUSDT", START, output="polars")
    assert isinstance(frame, pl.DataFrame) and frame.schema["open"] == pl.Decimal(38, 8)


async def test_complete_only_drops_exactly_the_partial_buckets(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await seed(conn)
        lo, hi = T0, T0 + MINUTES * MINUTE_MS
        for interval, (_, width) in ROLLUPS.items():
            full = int(width.total_seconds()) // 60
            everything = await expected_bars(conn, interval, lo - 86_400_000, hi + 86_400_000)
            want = [b for b in everything if b["minutes"] == full]
            got = rows_of(
                await read_candles(
                    conn,
                    SYMBOLS,
                    "2026-02-28",
                    "2026-03-05",
                    interval=interval,
                    complete_only=True,
                    output="arrow",
                )
            )
            assert got == want, interval
            if interval != "1m":
                assert len(want) < len(everything), interval  # there were partial ones to drop


async def test_book_ticks_equal_the_stored_rows(db_pool: asyncpg.Pool) -> None:
    ticks = [
        BookTick(
            s,
            10 + i,
            Decimal(f"{60000 + i}.{i:02d}"),
            Decimal("1.23400001"),
            Decimal(f"{60001 + i}.5"),
            Decimal("0.000001"),
            T0 + i * 250 + k,
        )
        for i in range(400)
        for k, s in enumerate(SYMBOLS)
    ]
    async with db_pool.acquire() as conn:
        await copy_book_ticks(conn, ticks)
    want = sorted(
        (
            {
                "symbol": t.symbol,
                "time": t.received_at,
                "update_id": t.update_id,
                "bid_price": t.bid_price,
                "bid_qty": t.bid_qty,
                "ask_price": t.ask_price,
                "ask_qty": t.ask_qty,
            }
            for t in ticks
            if T0 + 1000 <= t.received_at < T0 + 50_000
        ),
        key=lambda r: (r["symbol"], r["time"]),
    )
    lo, hi = (
        datetime.fromtimestamp((T0 + 1000) / 1000, UTC),
        datetime.fromtimestamp((T0 + 50_000) / 1000, UTC),
    )
    for output in OUTPUTS:
        got = await read_book_ticks(db_pool, ["ethusdt", "BTCUSDT"], lo, hi, output=output)
        assert rows_of(got) == want, output


def feature_rows() -> list[FeatureRow]:
    rows = []
    for m in range(30):
        doc: dict[str, Any] = {
            "ret_1": m / 7,
            "rsi_14": None if m < 14 else 50 + m / 3,
            "warm": m > 20,
            "window_minutes": m + 1,
        }
        if m % 2:
            doc["spread_bps"] = 1.5 + m  # a key some rows lack
        for s in SYMBOLS:
            rows.append(FeatureRow(s, T0 + m * MINUTE_MS, doc, "v1"))
        rows.append(FeatureRow("BTCUSDT", T0 + m * MINUTE_MS, {"ret_1": 0.0}, "v2"))
    return rows


async def test_features_expand_to_columns(db_pool: asyncpg.Pool) -> None:
    rows = feature_rows()
    async with db_pool.acquire() as conn:
        await upsert_features(conn, rows)
    frame = await read_features(db_pool, SYMBOLS, START, version="v1", output="pandas")
    assert isinstance(frame, pd.DataFrame)
    # Every row's keys, sorted by name (the first rows have no spread_bps).
    assert list(frame.columns) == [
        "symbol",
        "time",
        "version",
        "ret_1",
        "rsi_14",
        "spread_bps",
        "warm",
        "window_minutes",
    ]
    want = sorted((r for r in rows if r.version == "v1"), key=lambda r: (r.symbol, r.time))
    got = rows_of(frame)
    assert len(got) == len(want) == 60
    for g, w in zip(got, want, strict=True):
        assert (g["symbol"], g["time"], g["version"]) == (w.symbol, w.time, "v1")
        for key in ("ret_1", "rsi_14", "warm", "window_minutes", "spread_bps"):
            value = g[key]
            assert (None if pd.isna(value) else value) == w.features.get(key), key
    every = await read_features(db_pool, "BTCUSDT", START, output="arrow")
    assert isinstance(every, pa.Table) and every.num_rows == 60
    assert set(every.column("version").to_pylist()) == {"v1", "v2"}


async def test_sync_reads_agree_with_async_ones(db_pool: asyncpg.Pool, db_url: str) -> None:
    async with db_pool.acquire() as conn:
        await seed(conn)
        await upsert_features(conn, feature_rows())

    def sync_read(output: Output) -> Frame:
        return read_candles_sync(db_url, SYMBOLS, START, interval="15m", output=output)

    for output in OUTPUTS:
        async_frame = await read_candles(db_url, SYMBOLS, START, interval="15m", output=output)
        sync_frame = await asyncio.to_thread(sync_read, output)
        assert rows_of(sync_frame) == rows_of(async_frame)
        assert type(sync_frame) is type(async_frame)
    sync_features = await asyncio.to_thread(read_features_sync, db_url, SYMBOLS, START, output="arrow")
    assert sync_features == await read_features(db_pool, SYMBOLS, START, output="arrow")
    # Settings (what None builds from the DB_* environment): connected as the services connect.
    settings = Settings(**db_fields_from_url(db_url))
    by_settings = await asyncio.to_thread(read_features_sync, settings, SYMBOLS, START, output="arrow")
    assert by_settings == sync_features
    with pytest.raises(RuntimeError, match="inside one"):
        read_candles_sync(db_url, SYMBOLS, START)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": "2h"}, "interval='2h': expected one of '1m', '5m'"),
        ({"output": "numpy"}, "output='numpy': expected one of 'pandas', 'polars', 'arrow'"),
        ({"decimals": "float32"}, "decimals='float32'"),
        ({"output": "arrow", "decimals": "object"}, "decimals='object' .* for output='pandas', not 'arrow'"),
        ({"start": "yesterday"}, "start 'yesterday': not an ISO 8601 date"),
        ({"end": "2026-02-01"}, "end .* must be after start"),
        ({"symbols": "BTC-USDT"}, "symbols='BTC-USDT': expected names such as"),
        ({"symbols": []}, "symbols=\\[\\]: expected names"),
    ],
)
async def test_bad_arguments_are_clear_errors(
    db_pool: asyncpg.Pool, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"symbols": SYMBOLS, "start": "2026-03-01", **kwargs}
    with pytest.raises(ValueError, match=message):
        await read_candles(db_pool, **args)


def test_without_the_extra_the_import_names_pip_install() -> None:
    code = "import sys; sys.modules['polars'] = None\nimport quaint.data"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: quaint.data needs polars (the 'data' extra): pip install 'quaint2[data]'"
        " (in this repository: pip install -e '.[data]')"
    )
