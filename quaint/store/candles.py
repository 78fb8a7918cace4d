"""Candles into ``candles_1m``: one idempotent upsert on (symbol, time) from arrays
(``unnest``), a single round trip (a staging-table COPY took five: savepoint, COPY
in two, upsert, release; a closed candle's receipt-to-commit latency is mostly round
trips). Rewriting an identical candle changes nothing.

Prices and quantities travel as their exact strings and the server casts them to
NUMERIC: exact, and far cheaper on the client than asyncpg's binary Decimal encoding
(see :mod:`quaint.store.textcopy`). A :class:`CandleRow` (a WebSocket candle) and a
:class:`KlineColumns` page (REST) already hold the exchange's strings; a ``Candle``'s
``Decimal`` prints them back exactly (the exchange's digits, or ``1E-8`` notation that
``numeric`` reads to the same value and scale).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from quaint.binance.models import MINUTE_MS, Candle, CandleRow, KlineColumns, datetime_to_ms, ms_to_datetime

# DISTINCT ON: one batch may hold the same candle twice (overlapping connections);
# ON CONFLICT DO UPDATE may not touch a row twice in one statement.
# Rows go in in time order, then symbol, in every statement (the feeder's batches of many
# symbols and the gap handler's pages alike): TimescaleDB creates a chunk under a
# ShareUpdateExclusiveLock on the hypertable held until commit, so a statement that
# created a chunk and then waited for a key another writer holds deadlocked with that
# writer when it reached the new chunk too (40P01, seen under load; reproduced in
# tests/test_store_concurrency.py). In time order a statement has written all its older
# rows before it creates a chunk, so nobody it waits for can be waiting for its lock.
# The WHERE clause makes an identical rewrite a no-op, so the returned count is the
# number of candles that were new or corrected.
UPSERT = """
INSERT INTO candles_1m AS c (symbol, time, open, high, low, close, volume, quote_asset_volume,
    taker_buy_base_asset_volume, taker_buy_quote_asset_volume, number_of_trades, source)
SELECT d.* FROM (
    SELECT DISTINCT ON (u.symbol, u.time) u.symbol, u.time, u.open::numeric, u.high::numeric,
        u.low::numeric, u.close::numeric, u.volume::numeric, u.quote::numeric, u.taker_base::numeric,
        u.taker_quote::numeric, u.trades, $12::text
    FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[])
        AS u(symbol, time, open, high, low, close, volume, quote, taker_base, taker_quote, trades)
    ORDER BY u.symbol, u.time
) AS d
ORDER BY d.time, d.symbol
ON CONFLICT (symbol, time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_asset_volume = EXCLUDED.quote_asset_volume,
    taker_buy_base_asset_volume = EXCLUDED.taker_buy_base_asset_volume,
    taker_buy_quote_asset_volume = EXCLUDED.taker_buy_quote_asset_volume,
    number_of_trades = EXCLUDED.number_of_trades, source = EXCLUDED.source, ingested_at = now()
WHERE (c.open, c.high, c.low, c.close, c.volume, c.quote_asset_volume, c.taker_buy_base_asset_volume,
       c.taker_buy_quote_asset_volume, c.number_of_trades)
   IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
       EXCLUDED.quote_asset_volume, EXCLUDED.taker_buy_base_asset_volume,
       EXCLUDED.taker_buy_quote_asset_volume, EXCLUDED.number_of_trades)
"""


def candle_columns(
    candles: Iterable[Candle | CandleRow],
) -> tuple[list[str], list[datetime], list[list[str]], list[int]]:
    """Parameters of :data:`UPSERT`: symbols, open times, the eight decimal columns
    as exact strings (in the statement's order; ``str()`` of a row's string is that
    string), numbers of trades."""
    symbols: list[str] = []
    times: list[datetime] = []
    decimals: list[list[str]] = [[] for _ in range(8)]
    o, h, lo, c, v, q, tb, tq = decimals
    trades: list[int] = []
    for k in candles:
        symbols.append(k.symbol)
        times.append(ms_to_datetime(k.open_time))
        o.append(str(k.open))
        h.append(str(k.high))
        lo.append(str(k.low))
        c.append(str(k.close))
        v.append(str(k.volume))
        q.append(str(k.quote_asset_volume))
        tb.append(str(k.taker_buy_base_asset_volume))
        tq.append(str(k.taker_buy_quote_asset_volume))
        trades.append(k.number_of_trades)
    return symbols, times, decimals, trades


async def upsert_candles(conn: asyncpg.Connection, candles: Iterable[Candle | CandleRow], source: str) -> int:
    """Write candles (``source`` = ws | rest | archive); returns rows new or changed.
    One statement: atomic on its own, and inside the caller's transaction if any."""
    symbols, times, decimals, trades = candle_columns(candles)
    if not symbols:
        return 0
    status = await conn.execute(UPSERT, symbols, times, *decimals, trades, source)
    return int(status.rsplit(" ", 1)[1])


async def upsert_kline_columns(conn: asyncpg.Connection, page: KlineColumns, source: str) -> int:
    """:func:`upsert_candles` for a parsed REST page: its columns go to the statement as
    they are (the decimals are already exact strings), no record per row is built."""
    if not page.open_times:
        return 0
    times = [ms_to_datetime(t) for t in page.open_times]
    symbols = [page.symbol] * len(times)
    status = await conn.execute(UPSERT, symbols, times, *page.decimals, page.trades, source)
    return int(status.rsplit(" ", 1)[1])


NEWEST_OPEN_TIMES = """
SELECT symbol, max(time) AS t FROM candles_1m WHERE symbol = ANY($1::text[]) GROUP BY symbol
"""


async def newest_open_times(conn: asyncpg.Connection, symbols: list[str]) -> dict[str, int]:
    """Each symbol's newest stored minute (open time, ms); symbols with none are absent."""
    rows = await conn.fetch(NEWEST_OPEN_TIMES, symbols)
    return {row["symbol"]: datetime_to_ms(row["t"]) for row in rows}


# A stored candle's (or bar's) values, by their column names, which are also the field names
# of Candle and quaint.store.rollups.Bar.
VALUE_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_asset_volume",
    "number_of_trades",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
)


def row_values(row: asyncpg.Record) -> dict[str, Any]:
    """The :data:`VALUE_COLUMNS` of a fetched row, as keyword arguments."""
    return {name: row[name] for name in VALUE_COLUMNS}


async def fetch_candles(conn: asyncpg.Connection, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
    """Stored candles of ``symbol`` with open time in [start_ms, end_ms), oldest first."""
    rows = await conn.fetch(
        """SELECT symbol, time, open, high, low, close, volume, quote_asset_volume, number_of_trades,
                  taker_buy_base_asset_volume, taker_buy_quote_asset_volume
           FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3 ORDER BY time""",
        symbol,
        ms_to_datetime(start_ms),
        ms_to_datetime(end_ms),
    )
    out = []
    for r in rows:
        open_ms = datetime_to_ms(r["time"])
        out.append(
            Candle(symbol=r["symbol"], open_time=open_ms, close_time=open_ms + MINUTE_MS - 1, **row_values(r))
        )
    return out
