"""Book ticks into ``book_ticker`` with a plain COPY (no key: duplicates are dropped
upstream by (symbol, update_id), which is cheaper than a unique index). Text format
from the exact decimal strings: see :mod:`quaint.store.textcopy` for why."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from quaint.binance.models import BookTick
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
