"""Reading the stored history out in bulk: candles of any interval (``candles_1m`` and the
rollups), book ticks and feature rows for many symbols and a time range, streamed as
``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` in chunks (what :mod:`quaint.data` parses into
Arrow, and what ``python -m quaint export`` writes out in bounded memory).

CSV from COPY is the server's own fastest output path: NUMERIC values leave as their exact
text (no ``Decimal`` is made per value), and a client that parses columns in bulk keeps up
with ``psql``. Times leave as integer microseconds since the epoch (exact; no time zone or
text format to parse). Every value is a bind parameter (asyncpg inlines them server-side
with ``quote_literal`` for COPY, which takes no parameters); only relation names from
:data:`quaint.store.rollups.ROLLUPS` are put into the text.

Each row is one line: no column can hold a newline (``jsonb::text`` escapes them inside
strings), so a reader may cut the stream at any newline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg

from quaint.store.book import BOOK_COLUMNS
from quaint.store.candles import VALUE_COLUMNS
from quaint.store.rollups import ROLLUPS

# What each COPY below sends, in order. ``time`` is microseconds since the epoch.
CANDLE_COLUMNS = ("symbol", "time", *VALUE_COLUMNS, "minutes")
CANDLE_DECIMALS = tuple(c for c in VALUE_COLUMNS if c != "number_of_trades")
BOOK_DECIMALS = ("bid_price", "bid_qty", "ask_price", "ask_qty")
FEATURE_COLUMNS = ("symbol", "time", "version", "features")

Sink = Callable[[bytes], Awaitable[None]]

# (symbol, time) order on every read: the primary key's order for candles_1m and
# feature_cache, the (symbol, time DESC) index backwards for book_ticker.
_RANGE = (
    "symbol = ANY($1::text[]) AND time >= $2::timestamptz AND time < coalesce($3::timestamptz, 'infinity')"
)
_MICROS = "(extract(epoch FROM time) * 1000000)::bigint"


def bucket_minutes(interval: str) -> int:
    """The minutes of one complete bucket of ``interval`` (a key of ROLLUPS)."""
    return int(ROLLUPS[interval][1].total_seconds()) // 60


def candles_query(interval: str, *, complete_only: bool) -> str:
    """The SELECT behind :func:`copy_candles` ($1 symbols, $2 start, $3 end or NULL, and $4 the
    bucket's minutes when ``complete_only``); ``interval`` is a key of ROLLUPS."""
    if interval not in ROLLUPS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {', '.join(ROLLUPS)}")
    relation = ROLLUPS[interval][0]
    minutes = "1" if interval == "1m" else "minutes"
    # A 1-minute candle is always complete: no $4 there.
    complete = " AND minutes = $4::integer" if complete_only and interval != "1m" else ""
    return (
        f"SELECT symbol, {_MICROS}, {', '.join(VALUE_COLUMNS)}, {minutes} AS minutes"
        f" FROM {relation} WHERE {_RANGE}{complete} ORDER BY symbol, time"
    )


def candles_args(
    interval: str, symbols: Sequence[str], start: datetime, end: datetime | None, *, complete_only: bool
) -> list[object]:
    """The parameters of :func:`candles_query`."""
    args: list[object] = [list(symbols), start, end]
    if complete_only and interval != "1m":
        args.append(bucket_minutes(interval))
    return args


async def copy_candles(
    conn: asyncpg.Connection,
    sink: Sink,
    symbols: Sequence[str],
    start: datetime,
    end: datetime | None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
) -> None:
    """Stored candles (bars for a rollup ``interval``) of ``symbols`` with open time in
    [start, end) (``end`` None: all after ``start``), ordered by symbol and time, as CSV lines
    of :data:`CANDLE_COLUMNS` handed to ``sink`` chunk by chunk. ``complete_only`` keeps only
    the buckets that hold every minute (``minutes`` = the bucket's width)."""
    query = candles_query(interval, complete_only=complete_only)
    args = candles_args(interval, symbols, start, end, complete_only=complete_only)
    await conn.copy_from_query(query, *args, output=sink, format="csv")


BOOK_QUERY = (
    f"SELECT symbol, {_MICROS}, {', '.join(BOOK_COLUMNS[2:])} FROM book_ticker"
    f" WHERE {_RANGE} ORDER BY symbol, time, update_id"
)


async def copy_book_ticks_out(
    conn: asyncpg.Connection, sink: Sink, symbols: Sequence[str], start: datetime, end: datetime | None
) -> None:
    """Stored book ticks of ``symbols`` received in [start, end), ordered by symbol, receipt
    time and update id, as CSV lines of :data:`quaint.store.book.BOOK_COLUMNS` to ``sink``."""
    await conn.copy_from_query(BOOK_QUERY, list(symbols), start, end, output=sink, format="csv")


FEATURES_QUERY = (
    f"SELECT symbol, {_MICROS}, version, features_json::text FROM feature_cache"
    f" WHERE {_RANGE} AND ($4::text IS NULL OR version = $4::text) ORDER BY symbol, time, version"
)


async def copy_feature_rows(
    conn: asyncpg.Connection,
    sink: Sink,
    symbols: Sequence[str],
    start: datetime,
    end: datetime | None,
    version: str | None,
) -> None:
    """``feature_cache`` rows of ``symbols`` for the minutes in [start, end) (of ``version``,
    or every version when None) as CSV lines of :data:`FEATURE_COLUMNS` (the document as
    JSON text) to ``sink``."""
    await conn.copy_from_query(FEATURES_QUERY, list(symbols), start, end, version, output=sink, format="csv")


__all__ = [
    "BOOK_DECIMALS",
    "CANDLE_COLUMNS",
    "CANDLE_DECIMALS",
    "FEATURE_COLUMNS",
    "bucket_minutes",
    "candles_args",
    "candles_query",
    "copy_book_ticks_out",
    "copy_candles",
    "copy_feature_rows",
]
