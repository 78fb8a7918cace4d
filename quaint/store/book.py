"""Book ticks into ``book_ticker`` with a plain COPY (no key: duplicates are dropped
upstream by (symbol, update_id), which is cheaper than a unique index). Text format
from the exact decimal strings: see :mod:`quaint.store.textcopy` for why."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from quaint.binance.models import BookTick, datetime_to_ms, ms_to_datetime
from quaint.store.textcopy import TextEncoder, copy_text

BOOK_COLUMNS = ("symbol", "time", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty")


def book_line(t: BookTick, encoder: TextEncoder) -> str:
    """One COPY text row; ``str(Decimal)`` is exact (the exchange's digits)."""
    return (
        f"{encoder.text(t.symbol)}\t{encoder.timestamp(t.received_at)}\t{t.update_id:d}\t"
        f"{t.bid_price!s}\t{t.bid_qty!s}\t{t.ask_price!s}\t{t.ask_qty!s}\n"
    )


async def copy_book_ticks(
    conn: asyncpg.Connection, ticks: Iterable[BookTick], encoder: TextEncoder | None = None
) -> int:
    """COPY ``ticks``; a long-lived writer passes its own ``encoder`` (see there)."""
    enc = encoder or TextEncoder()
    lines = [book_line(t, enc) for t in ticks]
    if lines:
        await copy_text(conn, "book_ticker", BOOK_COLUMNS, lines)
    return len(lines)


# The last tick received during each target minute [t, t + 60 s): receipt time never
# after the candle's close, so no look-ahead.
LAST_TICK_OF_MINUTES = """
SELECT t.target, b.update_id, b.bid_price, b.bid_qty, b.ask_price, b.ask_qty, b.time
FROM unnest($2::timestamptz[]) AS t(target)
JOIN LATERAL (
    SELECT update_id, bid_price, bid_qty, ask_price, ask_qty, time FROM book_ticker
    WHERE symbol = $1 AND time >= t.target AND time < t.target + interval '1 minute'
    ORDER BY time DESC LIMIT 1
) b ON true
"""


async def last_ticks_of_minutes(
    conn: asyncpg.Connection, symbol: str, minutes: list[int]
) -> dict[int, BookTick]:
    """The last stored tick of ``symbol`` received during each minute (open time ms ->
    tick); minutes without a tick are absent."""
    rows = await conn.fetch(LAST_TICK_OF_MINUTES, symbol, [ms_to_datetime(t) for t in minutes])
    return {
        datetime_to_ms(r["target"]): BookTick(
            symbol=symbol,
            update_id=r["update_id"],
            bid_price=r["bid_price"],
            bid_qty=r["bid_qty"],
            ask_price=r["ask_price"],
            ask_qty=r["ask_qty"],
            received_at=datetime_to_ms(r["time"]),
        )
        for r in rows
    }
