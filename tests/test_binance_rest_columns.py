"""REST klines as columns (the gap handler's path) against the Candle path: the same
checks, the same first error, the same values, and the same rows in the database."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quaint.binance.errors import ProtocolError
from quaint.binance.models import Candle, KlineColumns
from quaint.binance.parse import parse_book_ticker, parse_rest_klines
from quaint.binance.rest_parse import parse_rest_kline_columns
from quaint.store.candles import upsert_candles, upsert_kline_columns

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
REST_BODY = json.loads((FIXTURES / "rest_api_v3_klines_response.json").read_text())
T0 = 1_763_985_600_000  # 2025-11-24T12:00:00Z
M = 60_000

# Every spelling Decimal() reads, not only the exchange's plain digits: exponents,
# underscores, non-ASCII digits, surrounding whitespace, signs, "1." and ".5".
plain = st.from_regex(r"[0-9]{1,18}(\.[0-9]{1,12})?", fullmatch=True)
digits = st.from_regex(r"[0-9]{1,8}", fullmatch=True)
odd = st.one_of(
    st.builds(lambda m, e, x: f"{m}{x}{e}", digits, st.integers(-30, 30), st.sampled_from("eE")),
    st.builds(lambda a, b: f"{a}_{b}", digits, digits),
    st.builds(lambda s: s.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")), plain),
    st.builds(lambda s, w: f"{w}{s}{w}", plain, st.sampled_from([" ", "\t", "\n", " \n"])),
    st.builds(lambda s, p: p + s, plain, st.sampled_from(["+", "-"])),
    st.builds(lambda s: s + ".", digits),
    st.builds(lambda s: "." + s, digits),
    st.sampled_from(["0", "00", "-0", "0.000", "1e0", "0E-8", "1e-8", "1" * 64, "1" * 65, "١"]),
)
decimal_text = plain | odd
junk = st.one_of(
    st.sampled_from(["", "NaN", "-1", "Infinity", "-inf", "1e", "abc", "1..2", "0x10", "1,5", "٫5"]),
    st.floats(allow_nan=True),
    st.integers(-5, 5),
    st.none(),
    st.booleans(),
    st.text(max_size=8),
)


@st.composite
def rows(draw: st.DrawFn, valid: bool = False) -> list[Any]:
    """A kline row whose decimals come in any spelling: ordered so the row is valid
    (``valid``), or anything, including junk and out-of-order prices."""
    t = T0 + draw(st.integers(0, 10_000)) * M
    values = [draw(decimal_text) for _ in range(8)]
    if valid:
        values = [v for v in values if _value(v) is not None] + ["1"] * 8
        lo, o, c, hi = sorted(values[:4], key=lambda v: _value(v) or 0)
        o, c = draw(st.permutations([o, c]))
        values = [o, hi, lo, c, *values[4:8]]
    elif draw(st.booleans()):
        values[draw(st.integers(0, 7))] = draw(junk)
    o, h, lo, c, v, q, tb, tq = values
    counts = st.integers(0, 2**63 - 1)
    trades = draw(counts if valid else counts | st.sampled_from([-1, 2**63, 1.5, "7"]))
    close = t + M - 1 if valid or draw(st.booleans()) else draw(st.integers(t - M, t + M) | junk)
    return [t, o, h, lo, c, v, close, q, trades, tb, tq, "0"]


def _value(text: str) -> Decimal | None:
    try:
        d = Decimal(text)
    except ArithmeticError:
        return None
    return d if d.is_finite() and d >= 0 and len(text) <= 64 else None


def both(body: Any) -> tuple[Any, Any]:
    """(result or ProtocolError) of each path."""
    out: list[list[Candle] | KlineColumns | ProtocolError] = []
    for parse in (parse_rest_klines, parse_rest_kline_columns):
        try:
            out.append(parse(body, "BTCUSDT"))
        except ProtocolError as exc:
            out.append(exc)
    return out[0], out[1]


@settings(max_examples=1500, deadline=None)
@given(st.lists(rows(), max_size=4) | st.lists(rows(valid=True), max_size=4))
def test_columns_check_and_convert_exactly_as_candles(body: list[list[Any]]) -> None:
    candles, columns = both(body)
    if any(type(r[8]) is int and r[8] >= 2**63 for r in body) and isinstance(columns, ProtocolError):
        return  # the bigint column's range: refused here, by the database on the Candle path
    if isinstance(candles, ProtocolError):
        assert isinstance(columns, ProtocolError), (body, columns)
        assert (columns.field, columns.reason) == (candles.field, candles.reason)
    else:
        assert isinstance(columns, KlineColumns), (body, columns)
        assert columns.candles() == candles
        # Same value and scale: what str(Decimal) of the Candle path sends.
        for col, name in zip(columns.decimals, ("open", "high", "low", "close", "volume"), strict=False):
            assert [Decimal(x).as_tuple() for x in col] == [getattr(k, name).as_tuple() for k in candles]


def test_plain_strings_are_kept_as_sent_and_others_normalised() -> None:
    row = [T0, "0001.50", "2.0e0", "1_0E-1", " 1.5 ", "1e2", T0 + M - 1, "١٢", 3, "1.", ".5", "0"]
    cols = parse_rest_kline_columns([row], "BTCUSDT")
    assert [c[0] for c in cols.decimals] == ["0001.50", "2.0", "1.0", "1.5", "1E+2", "12", "1", "0.5"]
    assert parse_rest_kline_columns(REST_BODY, "BTCUSDT").candles() == parse_rest_klines(REST_BODY, "BTCUSDT")
    with pytest.raises(ProtocolError, match="number of trades: out of range"):
        parse_rest_kline_columns([[T0, "1", "1", "1", "1", "1", T0 + M - 1, "1", 2**63, "1", "1", "0"]], "X")


def test_take_selects_rows_and_shares_strings() -> None:
    cols = parse_rest_kline_columns(REST_BODY, "BTCUSDT")
    part = cols.take([0, 3])
    assert part.candles() == [cols.candles()[0], cols.candles()[3]]
    assert part.decimals[0][1] is cols.decimals[0][3]


# ---- the database stores the same rows either way ---------------------------------------------

_n = itertools.count()
ONCE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
COLUMNS = """symbol, time, open::text, high::text, low::text, close::text, volume::text,
             quote_asset_volume::text, taker_buy_base_asset_volume::text,
             taker_buy_quote_asset_volume::text, number_of_trades, source"""


@settings(ONCE, max_examples=100)
@given(st.lists(rows(valid=True), min_size=1, max_size=6, unique_by=lambda r: r[0]))
async def test_columns_and_candles_store_identical_rows(db_pool: asyncpg.Pool, body: list[list[Any]]) -> None:
    body.sort(key=lambda r: r[0])
    a, b = f"CA{next(_n)}USDT", f"CB{next(_n)}USDT"
    async with db_pool.acquire() as conn:
        assert await upsert_candles(conn, parse_rest_klines(body, a), "rest") == len(body)
        assert await upsert_kline_columns(conn, parse_rest_kline_columns(body, b), "rest") == len(body)
        # Rewriting the same page either way is a no-op; an empty page writes nothing.
        assert await upsert_kline_columns(conn, parse_rest_kline_columns(body, a), "rest") == 0
        assert await upsert_kline_columns(conn, parse_rest_kline_columns([], b), "rest") == 0
        got = {
            s: [
                tuple(r)[1:]
                for r in await conn.fetch(
                    f"SELECT {COLUMNS} FROM candles_1m WHERE symbol = $1 ORDER BY time", s
                )
            ]
            for s in (a, b)
        }
    assert got[a] == got[b] and len(got[a]) == len(body)


# ---- what NUMERIC cannot store is refused when parsed, not by the database ---------------


@pytest.mark.parametrize("text", ["1e131072", "1E+200000", "1e-16384", "1.5e-16383", "0.0e-16383"])
def test_decimals_beyond_numeric_are_protocol_errors(text: str) -> None:
    row = [T0, "1", "1", "1", "1", text, T0 + M - 1, "1", 2, "1", "1", "0"]
    for parse in (parse_rest_klines, parse_rest_kline_columns):
        with pytest.raises(ProtocolError, match="range NUMERIC stores"):
            parse([row], "BTCUSDT")
    book = {"u": 1, "s": "BTCUSDT", "b": "1", "B": text, "a": "2", "A": "1"}
    with pytest.raises(ProtocolError, match="range NUMERIC stores"):
        parse_book_ticker(book, 0)


async def test_the_largest_and_finest_decimals_parsed_are_stored_exactly(db_pool: asyncpg.Pool) -> None:
    """The bounds are PostgreSQL's own: its extremes pass the parser and the database."""
    row = [T0, "1", "1", "1", "1", "1e131071", T0 + M - 1, "1e-16383", 2, "1", "1", "0"]
    async with db_pool.acquire() as conn:
        assert await upsert_kline_columns(conn, parse_rest_kline_columns([row], "BTCUSDT"), "rest") == 1
        volume, quote = await conn.fetchrow(
            "SELECT volume = 1e131071, quote_asset_volume = 1e-16383 FROM candles_1m WHERE symbol = 'BTCUSDT'"
        )
    assert volume and quote
