"""Parsers against every real captured Binance frame, and their error paths."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from quaint.binance.encode import book_ticker_payload, combined, kline_event_payload, rest_kline_row
from quaint.binance.errors import ProtocolError
from quaint.binance.models import (
    ApiError,
    BookTick,
    KlineEvent,
    ServerShutdown,
    SubscriptionResult,
    datetime_to_ms,
    ms_to_datetime,
)
from quaint.binance.parse import (
    decode_frame,
    parse_api_error,
    parse_decimal,
    parse_rest_klines,
    parse_timestamp,
)

FIXTURES = Path(__file__).parent / "fixtures" / "binance"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def captured_frames() -> list[tuple[float, str]]:
    lines = (FIXTURES / "cryptofeed_binance_combined_stream_kline1m_bookTicker.jsonl").read_text()
    return [(d["recv_ts"], d["raw"]) for d in map(json.loads, lines.splitlines())]


def test_every_captured_frame_parses_exactly() -> None:
    frames = captured_frames()
    assert len(frames) == 515
    kinds = {"book": 0, "kline": 0, "closed": 0}
    for recv_ts, raw in frames:
        received = int(recv_ts * 1000)
        frame = decode_frame(raw, received)
        data = json.loads(raw)["data"]
        assert frame.stream == json.loads(raw)["stream"]
        if isinstance(frame.event, BookTick):
            kinds["book"] += 1
            tick = frame.event
            assert tick.received_at == received
            assert (tick.symbol, tick.update_id) == (data["s"], data["u"])
            # Exactness: the Decimal prints back to the very string the exchange sent.
            assert [str(tick.bid_price), str(tick.bid_qty), str(tick.ask_price), str(tick.ask_qty)] == [
                data["b"],
                data["B"],
                data["a"],
                data["A"],
            ]
            assert book_ticker_payload(tick) == data
        else:
            assert isinstance(frame.event, KlineEvent)
            kinds["kline"] += 1
            kinds["closed"] += frame.event.is_closed
            k = data["k"]
            c = frame.event.candle
            assert (c.open_time, c.close_time, c.number_of_trades) == (k["t"], k["T"], k["n"])
            assert str(c.quote_asset_volume) == k["q"]
            assert (
                kline_event_payload(
                    c,
                    event_time=data["E"],
                    is_closed=k["x"],
                    first_trade_id=k["f"],
                    last_trade_id=k["L"],
                )
                == data
            )
    assert kinds == {"book": 496, "kline": 19, "closed": 2}


def test_closed_and_last_open_frame_agree() -> None:
    closed = decode_frame(json.dumps(load("ws_combined_kline_1m_closed.json")), 0).event
    last_open = decode_frame(json.dumps(load("ws_combined_kline_1m_open_last_before_close.json")), 0).event
    assert isinstance(closed, KlineEvent) and isinstance(last_open, KlineEvent)
    assert closed.is_closed and not last_open.is_closed
    assert closed.candle == last_open.candle
    assert closed.candle.close == Decimal("0.33964000")
    assert closed.event_time - closed.candle.close_time == 1388


def test_book_ticker_fixture_has_no_event_time() -> None:
    raw = (FIXTURES / "ws_combined_bookTicker.json").read_text()
    tick = decode_frame(raw, 1_700_000_000_123).event
    assert isinstance(tick, BookTick)
    assert tick.received_at == 1_700_000_000_123
    assert tick.bid_price < tick.ask_price


def test_rest_klines_fixture() -> None:
    body = load("rest_api_v3_klines_response.json")
    candles = parse_rest_klines(body, "BTCUSDT")
    assert len(candles) == 10
    assert [c.open_time for c in candles] == [body[0][0] + 60_000 * i for i in range(10)]
    assert [rest_kline_row(c) for c in candles] == body
    assert candles[0].open == Decimal("60685.22000000")


def test_rest_error_fixture() -> None:
    assert parse_api_error(load("rest_error_response.json")) == ApiError(-1121, "Invalid symbol.")


def test_microsecond_timestamps_become_milliseconds() -> None:
    assert parse_timestamp(1_735_689_600_000_000, "t") == 1_735_689_600_000
    assert parse_timestamp(1_735_689_600_000, "t") == 1_735_689_600_000
    row = [1_735_689_600_000_000, "1", "2", "0.5", "1.5", "3", 1_735_689_659_999_999, "4", 5, "1", "2", "0"]
    (candle,) = parse_rest_klines([row], "BTCUSDT")
    assert (candle.open_time, candle.close_time) == (1_735_689_600_000, 1_735_689_659_999)


def test_datetime_round_trip_is_exact() -> None:
    for ms in (0, 1_628_952_419_999, 1_735_689_600_001):
        assert datetime_to_ms(ms_to_datetime(ms)) == ms


def test_control_frames() -> None:
    ack = decode_frame(b'{"result":null,"id":"abc"}', 0).event
    assert ack == SubscriptionResult(id="abc", result=None)
    listing = decode_frame(b'{"result":["btcusdt@bookTicker"],"id":3}', 0).event
    assert listing == SubscriptionResult(id=3, result=["btcusdt@bookTicker"])
    # GET_PROPERTY answers with the property's value (Binance's docs: {"result": true, "id": 2}).
    assert decode_frame(b'{"result":true,"id":2}', 0).event == SubscriptionResult(id=2, result=True)
    assert decode_frame(b'{"result":false,"id":2}', 0).event == SubscriptionResult(id=2, result=False)
    for bad in (b'{"result":1,"id":2}', b'{"result":"true","id":2}', b'{"result":[1],"id":2}'):
        with pytest.raises(ProtocolError, match="result"):
            decode_frame(bad, 0)
    assert decode_frame(b'{"e":"serverShutdown","E":5}', 0).event == ServerShutdown(5)
    assert decode_frame(b'{"code":2,"msg":"Invalid request"}', 0).event == ApiError(2, "Invalid request")


def closed_kline() -> dict[str, Any]:
    data: dict[str, Any] = load("ws_combined_kline_1m_closed.json")
    return data


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["data"]["k"].__setitem__("o", 0.34064), "k.o"),  # a float, not a string
        (lambda d: d["data"]["k"].__setitem__("c", "NaN"), "k.c"),
        (lambda d: d["data"]["k"].__setitem__("h", "-1"), "k.h"),
        (lambda d: d["data"]["k"].__setitem__("v", "12abc"), "k.v"),
        (lambda d: d["data"]["k"].__setitem__("t", "1628952360000"), "k.t"),
        (lambda d: d["data"]["k"].__setitem__("x", "true"), "k.x"),
        (lambda d: d["data"]["k"].__setitem__("n", True), "k.n"),
        (lambda d: d["data"]["k"].pop("Q"), "k.Q"),
        (lambda d: d["data"]["k"].__setitem__("l", "9"), "k.high/low"),
        (lambda d: d["data"].__setitem__("s", "ftmusdt"), "s"),
        (lambda d: d["data"].__setitem__("k", []), "k"),
        (lambda d: d.__setitem__("stream", "BTC USDT"), "stream"),
        (lambda d: d.__setitem__("stream", "btcusdt@kline_1m"), "stream"),  # symbol mismatch
        (lambda d: d["data"].__setitem__("e", "trade"), "e"),
    ],
)
def test_malformed_kline_frames_name_the_field(mutate: Any, field: str) -> None:
    frame = closed_kline()
    mutate(frame)
    with pytest.raises(ProtocolError) as info:
        decode_frame(orjson.dumps(frame), 0)
    assert info.value.field == field


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1,2]", b"null", b'{"stream":"a@b"}', b"{" * 10_000, b'{"data":1,"stream":1}'],
)
def test_garbage_frames_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(raw, 0)


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="1 MiB"):
        decode_frame(b" " * (2 << 20), 0)


@pytest.mark.parametrize(
    "body",
    [
        {},
        [[1, 2, 3]],
        [["x"] * 12],
        "[]",
        [[0, "1", "1", "1", "1", "1", 59_999, "1", 1, "1", "1", "0"]] * 2,  # not increasing
    ],
)
def test_bad_rest_bodies(body: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_rest_klines(body, "BTCUSDT")


def test_parse_decimal_keeps_every_digit() -> None:
    value = parse_decimal("60685.22000001", "x")
    assert value == Decimal("60685.22000001") and str(value) == "60685.22000001"
    assert combined("a@b", {"k": 1}) == {"stream": "a@b", "data": {"k": 1}}
