"""The parser's hot-path shortcuts decide exactly as the full path does.

* ``parse_decimal``'s fast path (strings starting with an ASCII digit) against the
  reference rules: same value or the same refusal, for any input;
* ``open_kline_symbol`` (open candle updates, numbers not converted) names a symbol
  only for frames the full parse accepts as an open ``1m`` kline of that symbol, or
  refuses for one of the numbers it skipped;
* the bookTicker fast path gives the same tick as the field-by-field path.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quaint.binance.errors import ProtocolError
from quaint.binance.models import BookTick, KlineEvent
from quaint.binance.parse import (
    decode_frame,
    frame_from_json,
    open_kline_symbol,
    parse_book_ticker,
    parse_decimal,
    parse_int,
    parse_symbol,
)

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
OPEN = json.loads((FIXTURES / "ws_combined_kline_1m_open_last_before_close.json").read_text())
CLOSED = json.loads((FIXTURES / "ws_combined_kline_1m_closed.json").read_text())
BOOK = json.loads((FIXTURES / "ws_combined_bookTicker.json").read_text())
# What open_kline_symbol does not look at: an error there may only name one of these.
SKIPPED = {"E", "k.t", "k.T", "k.f", "k.L", "k.n", "k.o", "k.c", "k.h", "k.l", "k.v", "k.q", "k.V", "k.Q"}
SKIPPED |= {"k.close_time", "k.high/low"}

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)


def reference_decimal(value: object) -> Decimal | str:
    """The rules as first written (no fast path); a refusal as its reason."""
    if type(value) is not str:
        return "expected a decimal string"
    if len(value) > 64:
        return "too long"
    try:
        result = Decimal(value)
    except InvalidOperation:
        return "not a decimal"
    if not result.is_finite():
        return "not a finite"
    if result < 0:
        return "negative"
    # PostgreSQL's NUMERIC: at most 131072 digits before the point and 16383 after it.
    exponent = result.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -16383 or (result != 0 and result.adjusted() >= 131072):
        return "range NUMERIC"
    return result


def outcome(value: object) -> Decimal | str:
    try:
        return parse_decimal(value, "x")
    except ProtocolError as exc:
        reasons = (
            "expected a decimal string", "too long", "not a decimal", "not a finite", "negative",
            "range NUMERIC",
        )  # fmt: skip
        return next(k for k in reasons if k in exc.reason)


@settings(max_examples=3000, deadline=None)
@given(
    scalars
    | st.from_regex(r"\A[0-9 _.eE+-]{0,20}\Z")
    | st.text(alphabet="0123456789.", max_size=70)
    | st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3})?[eE][+-]?1[0-9]{4,5}\Z")  # around NUMERIC's limits
)
def test_decimal_fast_path_decides_as_the_rules(value: Any) -> None:
    expected, got = reference_decimal(value), outcome(value)
    assert got == expected
    if isinstance(got, Decimal):
        assert isinstance(expected, Decimal) and got.as_tuple() == expected.as_tuple()


def test_open_kline_symbol_after_the_stream_was_seen_once() -> None:
    raw = orjson.dumps(OPEN)
    event = decode_frame(raw, 0).event  # the full parse validates (and remembers) the names
    assert isinstance(event, KlineEvent) and not event.is_closed
    assert open_kline_symbol(orjson.loads(raw)) == "FTMUSDT"
    assert open_kline_symbol(OPEN["data"]) == "FTMUSDT"  # a raw /ws payload
    assert open_kline_symbol(CLOSED) is None
    assert open_kline_symbol(BOOK) is None
    assert open_kline_symbol({**OPEN, "stream": "btcusdt@kline_1m"}) is None  # another symbol's stream
    assert open_kline_symbol({**OPEN, "stream": "neverseen@kline_1m"}) is None  # not validated yet
    five = {**OPEN, "data": {**OPEN["data"], "k": {**OPEN["data"]["k"], "i": "5m"}}}
    assert open_kline_symbol(five) is None
    assert open_kline_symbol([OPEN]) is None


def _mutated(frame: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    def mutate(where: str, key: str, value: Any, delete: bool) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(frame))
        node = copy if where == "top" else copy["data"] if where == "data" else copy["data"]["k"]
        if delete:
            node.pop(key, None)
        else:
            node[key] = value
        return copy

    keys = sorted({*frame, *frame["data"], *frame["data"]["k"]})
    where = st.sampled_from(["top", "data", "k"])
    return st.builds(mutate, where, st.sampled_from(keys), scalars, st.booleans())


@settings(max_examples=3000, deadline=None)
@given(_mutated(OPEN))
def test_open_kline_shortcut_never_hides_what_the_full_parse_would_decide(frame: dict[str, Any]) -> None:
    decode_frame(orjson.dumps(OPEN), 0)  # the stream name is known, as on a live connection
    symbol = open_kline_symbol(frame)
    if symbol is None:
        return  # the full parse decides
    try:
        event = frame_from_json(frame, 0).event
    except ProtocolError as exc:
        refused: str | None = exc.field
    else:
        refused = None
        assert isinstance(event, KlineEvent)
        assert (event.symbol, event.interval, event.is_closed) == (symbol, "1m", False)
    assert refused is None or refused in SKIPPED


def reference_book(data: dict[str, Any], received_at: int) -> BookTick:
    """bookTicker field by field, in the original order (no fast path)."""

    def get(key: str) -> Any:
        if key not in data:
            raise ProtocolError(key, "missing")
        return data[key]

    return BookTick(
        parse_symbol(get("s"), "s"), parse_int(get("u"), "u"), parse_decimal(get("b"), "b"),
        parse_decimal(get("B"), "B"), parse_decimal(get("a"), "a"), parse_decimal(get("A"), "A"), received_at,
    )  # fmt: skip


def _decide(parse: Any, data: dict[str, Any]) -> BookTick | str:
    try:
        result: BookTick = parse(data, 7)
    except ProtocolError as exc:
        return exc.field
    return result


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(sorted(BOOK["data"])), scalars, st.booleans())
def test_book_ticker_fast_path_agrees_with_the_field_by_field_path(
    key: str, value: Any, delete: bool
) -> None:
    data = dict(BOOK["data"])
    if delete:
        del data[key]
    else:
        data[key] = value
    assert _decide(parse_book_ticker, data) == _decide(reference_book, data)


def test_book_ticker_fast_path_result() -> None:
    tick = decode_frame(orjson.dumps(BOOK), 123).event
    assert isinstance(tick, BookTick) and tick.received_at == 123
    assert str(tick.bid_price) == BOOK["data"]["b"] and str(tick.ask_qty) == BOOK["data"]["A"]
    with pytest.raises(ProtocolError, match="s"):
        decode_frame(orjson.dumps({**BOOK, "data": {**BOOK["data"], "s": "bad symbol"}}), 0)
