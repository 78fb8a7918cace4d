"""Candles into ``candles_1m``: COPY into the session's staging table, then one
idempotent upsert on (symbol, time). Rewriting an identical candle changes nothing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from quaint.binance.models import Candle, datetime_to_ms, ms_to_datetime

STAGE_COLUMNS = (
    "symbol", "time", "open", "high", "low", "close", "volume", "quote_asset_volume",
    "taker_buy_base_asset_volume", "taker_buy_quote_asset_volume", "number_of_trades", "source",
)  # fmt: skip

# DISTINCT ON: one batch may hold the same candle twice (overlapping connections);
# ON CONFLICT DO UPDATE may not touch a row twice in one statement.
# The WHERE clause makes an identical rewrite a no-op, so the returned count is the
# number of candles that were new or corrected.
UPSERT_FROM_STAGE = """
INSERT INTO candles_1m AS c (symbol, time, open, high, low, close, volume, quote_asset_volume,
    taker_buy_base_asset_volume, taker_buy_quote_asset_volume, number_of_trades, source)
SELECT DISTINCT ON (symbol, time) symbol, time, open, high, low, close, volume, quote_asset_volume,
    taker_buy_base_asset_volume, taker_buy_quote_asset_volume, number_of_trades, source
FROM candles_stage ORDER BY symbol, time
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

CandleRecord = tuple[
    str, datetime, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, int, str
]


def candle_record(candle: Candle, source: str) -> CandleRecord:
    return (
        candle.symbol,
        ms_to_datetime(candle.open_time),
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.quote_asset_volume,
        candle.taker_buy_base_asset_volume,
        candle.taker_buy_quote_asset_volume,
        candle.number_of_trades,
        source,
    )


async def upsert_candles(
    conn: asyncpg.Connection, candles: Iterable[Candle] | Sequence[Candle], source: str
) -> int:
    """Write candles (``source`` = ws | rest | archive); returns rows new or changed.

    ``conn`` must come from :func:`quaint.store.pool.create_pool` (or have had
    :func:`prepare_connection` run), which creates the staging table.
    """
    records = [candle_record(c, source) for c in candles]
    if not records:
        return 0
    async with conn.transaction():
        await conn.copy_records_to_table("candles_stage", records=records, columns=STAGE_COLUMNS)
        status = await conn.execute(UPSERT_FROM_STAGE)
    return int(status.rsplit(" ", 1)[1])


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
            Candle(
                symbol=r["symbol"],
                open_time=open_ms,
                close_time=open_ms + 59_999,
                open=r["open"],
                high=r["high"],
                low=r["low"],
                close=r["close"],
                volume=r["volume"],
                quote_asset_volume=r["quote_asset_volume"],
                number_of_trades=r["number_of_trades"],
                taker_buy_base_asset_volume=r["taker_buy_base_asset_volume"],
                taker_buy_quote_asset_volume=r["taker_buy_quote_asset_volume"],
            )
        )
    return out
