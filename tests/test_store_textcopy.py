"""The writers' text paths: COPY text for book ticks, exact strings for candle NUMERICs.
Every decimal must arrive as the same NUMERIC (value and scale) whatever notation
``str(Decimal)`` picks, and timestamps exact to the millisecond."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from decimal import Decimal

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from quaint.binance.models import BookTick, Candle, CandleRow, datetime_to_ms, ms_to_datetime
from quaint.store.book import book_line, copy_book_ticks
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.textcopy import TextEncoder

T0 = 1_763_985_600_000  # 2025-11-24T12:00:00Z

# str() of these uses scientific notation (1E-8, 0E-8, 1E+5); NUMERIC must still get
# the exact value and scale.
ENCODER = TextEncoder()
AWKWARD = ["0.00000001", "0E-8", "1E+5", "0.00000000", "123456789012345678901234567890.123456789", "7"]


@given(st.integers(min_value=0, max_value=253_402_300_799_999))  # up to 9999-12-31
def test_timestamp_text_is_exact_to_the_millisecond(ms: int) -> None:
    text = ENCODER.timestamp(ms)
    assert text.endswith("+00") and len(text) == len("2025-11-24 12:00:00.000+00")
    assert text == ms_to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"


@given(st.lists(st.integers(min_value=0, max_value=253_402_300_799_999), max_size=30))
def test_what_an_encoder_returns_does_not_depend_on_what_it_encoded_before(times: list[int]) -> None:
    small = TextEncoder(cache_max=2)  # its caches are cleared or full after a few values
    for ms in times:
        assert small.timestamp(ms) == TextEncoder().timestamp(ms)
        assert small.text(f"S{ms % 7}\t") == TextEncoder().text(f"S{ms % 7}\t")


def test_text_fields_are_escaped_for_copy() -> None:
    assert ENCODER.text("BTCUSDT") == "BTCUSDT"
    assert ENCODER.text("a\tb\\c\nd\re") == "a\\tb\\\\c\\nd\\re"


def test_book_line_keeps_the_exchange_strings() -> None:
    tick = BookTick(
        "BTCUSDT", 7, Decimal("0.33989000"), Decimal("1565.6"), Decimal("1E-8"), Decimal("0"), T0 + 5
    )
    expected = "BTCUSDT\t2025-11-24 12:00:00.005+00\t7\t0.33989000\t1565.6\t1E-8\t0\n"
    assert book_line(tick, ENCODER) == expected


async def test_awkward_decimals_round_trip_exactly(db_pool: asyncpg.Pool) -> None:
    values = [Decimal(v) for v in AWKWARD]
    ticks = [BookTick("BTCUSDT", i, v, v, v, v, T0 + i) for i, v in enumerate(values)]
    candles = [
        Candle("BTCUSDT", T0 + i * 60_000, T0 + i * 60_000 + 59_999, v, v, v, v, v, v, 1, v, v)
        for i, v in enumerate(values)
    ]
    async with db_pool.acquire() as conn:
        assert await copy_book_ticks(conn, ticks, ENCODER) == len(values)
        assert await upsert_candles(conn, candles, "ws") == len(values)
        rows_as_text = [CandleRow.of(replace_time(c, 100)) for c in candles]  # the WebSocket path
        assert await upsert_candles(conn, rows_as_text, "ws") == len(values)
        rows = await conn.fetch("SELECT update_id, time, bid_price, ask_qty::text AS t FROM book_ticker")
        stored = await fetch_candles(conn, "BTCUSDT", T0, T0 + len(values) * 60_000)
        stored_rows = await fetch_candles(
            conn, "BTCUSDT", T0 + 100 * 60_000, T0 + (100 + len(values)) * 60_000
        )
    by_id = {r["update_id"]: r for r in rows}
    for i, v in enumerate(values):
        got = by_id[i]["bid_price"]
        assert got == v and scale(got) == scale(v)
        assert Decimal(by_id[i]["t"]) == v
        assert datetime_to_ms(by_id[i]["time"]) == T0 + i
    assert stored == candles
    assert [scale(c.close) for c in stored] == [scale(v) for v in values]
    assert stored_rows == [replace_time(c, 100) for c in candles]
    assert [scale(c.close) for c in stored_rows] == [scale(v) for v in values]


def replace_time(c: Candle, minutes: int) -> Candle:
    return replace(c, open_time=c.open_time + minutes * 60_000, close_time=c.close_time + minutes * 60_000)


def scale(d: Decimal) -> int:
    """NUMERIC's display scale: digits after the point (none for 1E+5 = 100000)."""
    return max(0, -int(d.as_tuple().exponent))


async def test_rewrites_change_only_what_differs_in_value(db_pool: asyncpg.Pool) -> None:
    x = Decimal("1.50")
    c = Candle("ETHUSDT", T0, T0 + 59_999, x, x, x, x, x, x, 3, Decimal("0.5"), Decimal("1"))
    async with db_pool.acquire() as conn:
        assert await upsert_candles(conn, [c, c], "ws") == 1  # a batch may hold a candle twice
        assert await upsert_candles(conn, [c], "rest") == 0
        same_value = dataclasses.replace(c, volume=Decimal("1.5"))
        assert await upsert_candles(conn, [same_value], "rest") == 0  # 1.5 == 1.50: no change
        corrected = dataclasses.replace(c, volume=Decimal("2.25"))
        assert await upsert_candles(conn, [corrected], "rest") == 1
        assert await upsert_candles(conn, [], "rest") == 0
        row = await conn.fetchrow("SELECT volume::text AS v, source FROM candles_1m")
    assert row is not None and (row["v"], row["source"]) == ("2.25", "rest")
