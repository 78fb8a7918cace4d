"""The parser's hot-path shortcuts decide exactly as the full path does.

* ``parse_decimal``'s fast path (strings starting with an ASCII digit) against the
  reference rules: same value or the same refusal, for any input;
* ``FrameDecoder.decode`` answers ``OPEN_KLINE`` (open candle updates, numbers not
  converted) only for frames the full parse accepts as an open ``1m`` kline of one of its
  symbols, or refuses for one of the numbers it skipped; for every other frame it decides
  exactly as the full parse;
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

from quaint.binance.decoder import OPEN_KLINE, FrameDecoder, OpenKline
from quaint.binance.errors import ProtocolError
from quaint.binance.models import BookTick, Event, KlineEvent
from quaint.binance.parse import (
    decode_frame,
    frame_from_json,
    parse_book_ticker,
    parse_decimal,
    parse_int,
    parse_symbol,
)

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
OPEN = json.loads((FIXTURES / "ws_combined_kline_1m_open_last_before_close.json").read_text())
CLOSED = json.loads((FIXTURES / "ws_combined_kline_1m_closed.json").read_text())
BOOK = json.loads((FIXTURES / "ws_combined_bookTicker.json").read_text())
# What the open-kline shortcut does not look at: an error there may only name one of these.
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
            "expected a decimal string",
            "too long",
            "not a decimal",
            "not a finite",
            "negative",
            "range NUMERIC",
        )
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


DECODER = FrameDecoder(["ftmusdt@kline_1m", "ftmusdt@bookTicker"])  # the fixtures' symbol, subscribed


def decided(decoder: FrameDecoder, frame: object) -> Event | OpenKline | str:
    """What ``decoder`` makes of ``frame``; a refusal as the field it names."""
    try:
        return decoder.decode(frame, 0)
    except ProtocolError as exc:
        return exc.field


def test_open_klines_of_subscribed_streams_skip_the_numbers() -> None:
    assert decided(DECODER, OPEN) is OPEN_KLINE
    assert decided(DECODER, OPEN["data"]) is OPEN_KLINE  # a raw /ws payload
    assert decided(FrameDecoder(), OPEN) is not OPEN_KLINE  # a decoder told no streams parses in full
    assert decided(DECODER, CLOSED) is not OPEN_KLINE
    assert decided(DECODER, BOOK) is not OPEN_KLINE
    assert (
        decided(DECODER, {**OPEN, "stream": "btcusdt@kline_1m"}) is not OPEN_KLINE
    )  # another symbol's stream
    assert decided(DECODER, {**OPEN, "stream": "neverseen@kline_1m"}) is not OPEN_KLINE  # not subscribed
    five = {**OPEN, "data": {**OPEN["data"], "k": {**OPEN["data"]["k"], "i": "5m"}}}
    assert decided(DECODER, five) is not OPEN_KLINE
    assert decided(DECODER, [OPEN]) is not OPEN_KLINE
    event = decided(DECODER, CLOSED)
    assert isinstance(event, KlineEvent) and event == frame_from_json(CLOSED, 0).event


def test_a_decoder_refuses_a_stream_name_that_is_not_one() -> None:
    with pytest.raises(ValueError, match="not a stream name"):
        FrameDecoder(["BTCUSDT@kline_1m"])


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


def full_parse(frame: object) -> Event | str:
    try:
        return frame_from_json(frame, 0).event
    except ProtocolError as exc:
        return exc.field


@settings(max_examples=3000, deadline=None)
@given(_mutated(OPEN) | _mutated(CLOSED))
def test_the_decoder_never_hides_what_the_full_parse_would_decide(frame: dict[str, Any]) -> None:
    fast, full = decided(DECODER, frame), full_parse(frame)
    if fast is not OPEN_KLINE:
        assert fast == full  # the same event, or a refusal naming the same field
        return
    if isinstance(full, str):
        assert full in SKIPPED  # refused only for a number the shortcut skipped
    else:
        assert isinstance(full, KlineEvent)
        assert (full.symbol, full.interval, full.is_closed) == ("FTMUSDT", "1m", False)


def reference_book(data: dict[str, Any], received_at: int) -> BookTick:
    """bookTicker field by field, in the original order (no fast path)."""

    def get(key: str) -> Any:
        if key not in data:
            raise ProtocolError(key, "missing")
        return data[key]

    return BookTick(
        parse_symbol(get("s"), "s"),
        parse_int(get("u"), "u"),
        parse_decimal(get("b"), "b"),
        parse_decimal(get("B"), "B"),
        parse_decimal(get("a"), "a"),
        parse_decimal(get("A"), "A"),
        received_at,
    )


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
