"""Book ticks into ``book_ticker`` with a plain binary COPY (no key: duplicates are
dropped upstream by (symbol, update_id), which is cheaper than a unique index)."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from quaint.binance.models import BookTick, ms_to_datetime

BOOK_COLUMNS = ("symbol", "time", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty")


async def copy_book_ticks(conn: asyncpg.Connection, ticks: Iterable[BookTick]) -> int:
    records = [
        (t.symbol, ms_to_datetime(t.received_at), t.update_id, t.bid_price, t.bid_qty, t.ask_price, t.ask_qty)
        for t in ticks
    ]
    if records:
        await conn.copy_records_to_table("book_ticker", records=records, columns=BOOK_COLUMNS)
    return len(records)
