"""Property-based fuzzing of the protocol parsers: whatever arrives, the only exception
that escapes is ProtocolError, and valid payloads round-trip exactly."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from quaint.binance.encode import book_ticker_payload, combined, kline_event_payload, rest_kline_row
from quaint.binance.errors import ProtocolError
from quaint.binance.models import BookTick, Candle, KlineEvent
from quaint.binance.parse import decode_frame, parse_rest_klines

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
CLOSED = json.loads((FIXTURES / "ws_combined_kline_1m_closed.json").read_text())
BOOK = json.loads((FIXTURES / "ws_combined_bookTicker.json").read_text())
REST_ROW = json.loads((FIXTURES / "rest_api_v3_klines_response.json").read_text())[0]

# Integers up to 2**70: beyond 64 bits too, which JSON allows and orjson refuses to decode.
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


def parses_or_refuses(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(raw, 0)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    parses_or_refuses(raw)


@settings(max_examples=1500, deadline=None)
@given(json_values)
def test_random_json(value: Any) -> None:
    parses_or_refuses(json.dumps(value).encode())


def _mutations(frame: dict[str, Any], inner: str | None) -> st.SearchStrategy[bytes]:
    """Real frames with one field replaced by an arbitrary value or deleted."""
    target = frame["data"][inner] if inner else frame["data"]
    keys = sorted(target)

    def mutate(key: str, value: Any, delete: bool) -> bytes:
        copy = json.loads(json.dumps(frame))
        node = copy["data"][inner] if inner else copy["data"]
        if delete:
            node.pop(key)
        else:
            node[key] = value
        # json, not orjson: it writes NaN and >64-bit integers, which the parser must refuse.
        return json.dumps(copy).encode()

    return st.builds(mutate, st.sampled_from(keys), json_scalars, st.booleans())


@settings(max_examples=2000, deadline=None)
@given(_mutations(CLOSED, "k") | _mutations(CLOSED, None) | _mutations(BOOK, None))
def test_mutated_real_frames(raw: bytes) -> None:
    parses_or_refuses(raw)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.lists(json_scalars, min_size=10, max_size=13), max_size=4))
def test_random_rest_bodies(body: list[list[Any]]) -> None:
    with contextlib.suppress(ProtocolError):
        parse_rest_klines(body, "BTCUSDT")


prices = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000000"), places=8)


@st.composite
def candles(draw: st.DrawFn) -> Candle:
    a, b, c, d = sorted(draw(st.lists(prices, min_size=4, max_size=4)))
    o, cl = draw(st.permutations([b, c]))
    t = draw(st.integers(0, 70_000_000)) * 60_000  # up to ~2103: ms, not µs
    return Candle(
        "BTCUSDT",
        t,
        t + 59_999,
        o,
        d,
        a,
        cl,
        draw(prices),
        draw(prices),
        draw(st.integers(0, 10**6)),
        draw(prices),
        draw(prices),
    )


@settings(max_examples=500, deadline=None)
@given(candles(), st.booleans())
def test_valid_payloads_round_trip_exactly(candle: Candle, closed: bool) -> None:
    payload = kline_event_payload(
        candle, event_time=candle.close_time + 1, is_closed=closed, first_trade_id=1, last_trade_id=2
    )
    event = decode_frame(orjson.dumps(combined("btcusdt@kline_1m", payload)), 0).event
    assert isinstance(event, KlineEvent)
    assert event.candle == candle
    assert parse_rest_klines([rest_kline_row(candle)], "BTCUSDT") == [candle]
    tick = BookTick("BTCUSDT", 7, candle.low, candle.volume, candle.high, candle.quote_asset_volume, 5)
    assert decode_frame(orjson.dumps(book_ticker_payload(tick)), 5).event == tick


def test_real_rest_row_still_parses() -> None:
    assert parse_rest_klines([REST_ROW], "BTCUSDT")[0].open_time == REST_ROW[0]
