"""The public reads: candles (1m and the rollups), book ticks and feature rows of one or many
symbols and a time range, into pandas, polars or Arrow.

Each ``read_*`` is a coroutine taking ``db``: an asyncpg connection or pool, or a
``postgresql://`` URL (a connection is opened and closed around the read). Each
``read_*_sync`` runs the same read in a fresh event loop for code that has none (a script,
a training job); ``db`` there is a URL, a :class:`~quaint.service.settings.Settings`, or None
for the services' own ``DB_*`` environment. Times are ``datetime`` (naive = UTC), ``date``
or ISO 8601 text; ranges are ``[start, end)``, ``end`` None meaning everything after
``start``. Rows come ordered by symbol, then time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Literal, TypeAlias, overload

import asyncpg

from quaint.data.tables import (
    DECIMALS,
    OUTPUTS,
    Decimals,
    Frame,
    Output,
    TextTable,
    check_choice,
    convert,
    expand_features,
)
from quaint.store import history
from quaint.store.book import BOOK_COLUMNS
from quaint.store.rollups import ROLLUPS

Database: TypeAlias = asyncpg.Connection | asyncpg.Pool | str
Instant: TypeAlias = datetime | date | str
Symbols: TypeAlias = str | Sequence[str]
INTERVALS = tuple(ROLLUPS)
CANDLE_INTEGERS = ("time", "number_of_trades", "minutes")

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow as pa


def to_datetime(value: Instant, name: str) -> datetime:
    """An aware UTC datetime from a datetime (naive = UTC), a date (its midnight, UTC) or
    ISO 8601 text (``2025-01-01``, ``2025-01-01T12:00:00Z``)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(
                f"{name} {text!r}: not an ISO 8601 date or time (e.g. 2025-01-01 or 2025-01-01T12:00:00Z)"
            ) from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    raise TypeError(f"{name}: expected a datetime, date or ISO 8601 text, not {type(value).__name__}")


def time_range(
    start: Instant, end: Instant | None, names: tuple[str, str] = ("start", "end")
) -> tuple[datetime, datetime | None]:
    lo = to_datetime(start, names[0])
    hi = None if end is None else to_datetime(end, names[1])
    if hi is not None and hi <= lo:
        raise ValueError(f"{names[1]} ({hi.isoformat()}) must be after {names[0]} ({lo.isoformat()})")
    return lo, hi


def symbol_list(symbols: Symbols, name: str = "symbols") -> list[str]:
    """Upper-case symbols from one name, a comma-separated list or a sequence of names."""
    names = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    out = [s.strip().upper() for s in names if isinstance(s, str) and s.strip()]
    bad = [s for s in out if not s.isalnum()]
    if not out or bad or len(out) != len(names):
        raise ValueError(f"{name}={symbols!r}: expected names such as 'BTCUSDT' or ['BTCUSDT', 'ETHUSDT']")
    return list(dict.fromkeys(out))


@contextlib.asynccontextmanager
async def connection(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """A connection from ``db`` for one read (a URL's own one is closed afterwards)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    elif isinstance(db, str):
        conn = await asyncpg.connect(db)
        try:
            yield conn
        finally:
            await conn.close()
    else:
        yield db


def check_options(output: Output, decimals: Decimals) -> None:
    check_choice("output", output, OUTPUTS)
    check_choice("decimals", decimals, DECIMALS)
    if decimals == "object" and output != "pandas":
        raise ValueError(f"decimals='object' (Decimal objects) is for output='pandas', not {output!r}")


@overload
async def read_candles(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Literal["pandas"] = "pandas",
    decimals: Decimals = ...,
) -> pd.DataFrame: ...


@overload
async def read_candles(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Literal["polars"],
    decimals: Decimals = ...,
) -> pl.DataFrame: ...


@overload
async def read_candles(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Literal["arrow"],
    decimals: Decimals = ...,
) -> pa.Table: ...


@overload
async def read_candles(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Output,
    decimals: Decimals = ...,
) -> Frame: ...


async def read_candles(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Output = "pandas",
    decimals: Decimals = "exact",
) -> Frame:
    """Candles of ``interval`` (1m, 5m, 15m, 1h, 4h, 1d) with open time in [start, end):
    ``symbol, time`` (the open time, UTC), the nine values of ``candles_1m`` and ``minutes``
    (1-minute candles in the bucket; 1 for 1m). ``complete_only`` drops the buckets that
    miss minutes (an outage-cut or still open bar). Decimals exact unless ``decimals="float64"``."""
    check_choice("interval", interval, INTERVALS)
    check_options(output, decimals)
    names, (lo, hi) = symbol_list(symbols), time_range(start, end)
    sink = TextTable(history.CANDLE_COLUMNS, CANDLE_INTEGERS, history.CANDLE_DECIMALS, decimals)
    async with connection(db) as conn:
        await history.copy_candles(conn, sink, names, lo, hi, interval=interval, complete_only=complete_only)
    return convert(sink.finish(), output, decimals)


@overload
async def read_book_ticks(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Literal["pandas"] = "pandas",
    decimals: Decimals = ...,
) -> pd.DataFrame: ...


@overload
async def read_book_ticks(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Literal["polars"],
    decimals: Decimals = ...,
) -> pl.DataFrame: ...


@overload
async def read_book_ticks(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Literal["arrow"],
    decimals: Decimals = ...,
) -> pa.Table: ...


@overload
async def read_book_ticks(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Output,
    decimals: Decimals = ...,
) -> Frame: ...


async def read_book_ticks(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Output = "pandas",
    decimals: Decimals = "exact",
) -> Frame:
    """Book ticks received in [start, end): ``symbol, time`` (receipt, UTC, µs), ``update_id``,
    ``bid_price, bid_qty, ask_price, ask_qty``."""
    check_options(output, decimals)
    names, (lo, hi) = symbol_list(symbols), time_range(start, end)
    sink = TextTable(BOOK_COLUMNS, ("time", "update_id"), history.BOOK_DECIMALS, decimals)
    async with connection(db) as conn:
        await history.copy_book_ticks_out(conn, sink, names, lo, hi)
    return convert(sink.finish(), output, decimals)


@overload
async def read_features(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Literal["pandas"] = "pandas",
) -> pd.DataFrame: ...


@overload
async def read_features(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Literal["polars"],
) -> pl.DataFrame: ...


@overload
async def read_features(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Literal["arrow"],
) -> pa.Table: ...


@overload
async def read_features(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Output,
) -> Frame: ...


async def read_features(
    db: Database,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Output = "pandas",
) -> Frame:
    """``feature_cache`` rows for the minutes in [start, end) (of ``version``, or all):
    ``symbol, time`` (the minute described), ``version`` and one column per feature of the
    JSON document (``ret_1``, ``rsi_14``, ``warm``, ...; README "ML features")."""
    check_choice("output", output, OUTPUTS)
    names, (lo, hi) = symbol_list(symbols), time_range(start, end)
    sink = TextTable(history.FEATURE_COLUMNS, ("time",))
    async with connection(db) as conn:
        await history.copy_feature_rows(conn, sink, names, lo, hi, version)
    return convert(expand_features(sink.finish()), output)
