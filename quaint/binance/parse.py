"""Pure parsers for Binance spot market-data payloads (no I/O, no clock).

Every function takes decoded JSON (or raw frame text) and returns a model from
:mod:`quaint.binance.models`, or raises :class:`ProtocolError` naming the bad field.
Callers that read from the network count and log those errors; nothing here
decides what to do about them.

Nothing here has state that changes: a payload decodes the same whatever was decoded
before. What a live connection knows in advance (the streams it subscribed to) is given
to a :class:`quaint.binance.decoder.FrameDecoder` when it is made, and only makes
decoding faster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from quaint.binance.errors import ProtocolError
from quaint.binance.models import (
    ApiError,
    BookTick,
    Candle,
    CandleRow,
    Event,
    KlineEvent,
    ServerShutdown,
    StreamFrame,
    SubscriptionResult,
)

_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
_STREAM = re.compile(r"^[a-z0-9]{2,20}@[A-Za-z0-9_]{1,32}$")
# Timestamps at or above this are microseconds (1e14 ms is the year 5138, 1e14 µs is
# 1973): Binance's spot archives switched to µs on 2025-01-01 and REST can answer in µs.
_MICROS_THRESHOLD = 10**14
_MAX_JSON_BYTES = 1 << 20
_DIGITS = frozenset("0123456789")
_NUMERIC_MIN_EXPONENT = -16383
_NUMERIC_MAX_ADJUSTED = 131071
# What PostgreSQL's numeric input reads to exactly the value and scale Decimal() gives:
# plain ASCII digits with an optional fraction. Anything else Decimal() accepts (exponents,
# underscores, non-ASCII digits, whitespace, "1.", ".5") goes through str(Decimal), which
# numeric always reads the same way.
PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_NO_NAMES: frozenset[str] = frozenset()


def parse_timestamp(value: object, field: str) -> int:
    """An integer epoch time in ms or µs -> ms. Floats, bools and negatives are refused."""
    if type(value) is not int:
        raise ProtocolError(field, f"expected an integer timestamp, got {type(value).__name__}")
    if value < 0:
        raise ProtocolError(field, "negative timestamp")
    return value // 1000 if value >= _MICROS_THRESHOLD else value


def parse_int(value: object, field: str, *, minimum: int = 0) -> int:
    if type(value) is not int:
        raise ProtocolError(field, f"expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise ProtocolError(field, f"must be >= {minimum}")
    return value


def parse_decimal(value: object, field: str) -> Decimal:
    """A decimal string -> exact Decimal. Binance sends strings; a JSON number is
    refused because it may already have been rounded through a float."""
    if type(value) is str and len(value) <= 64 and value[:1] in _DIGITS:
        # Fast path (every price and quantity of the stream): a string that starts with
        # an ASCII digit is neither negative nor NaN/Infinity, so only Decimal() can fail,
        # or an exponent take it beyond what NUMERIC stores.
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise ProtocolError(field, f"not a decimal: {value[:32]!r}") from None
        if "e" in value or "E" in value:
            _check_numeric_range(result, field)
        return result
    if type(value) is not str:
        raise ProtocolError(field, f"expected a decimal string, got {type(value).__name__}")
    if len(value) > 64:
        raise ProtocolError(field, "decimal string too long")
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise ProtocolError(field, f"not a decimal: {value[:32]!r}") from None
    if not result.is_finite():
        raise ProtocolError(field, "not a finite number")
    if result < 0:
        raise ProtocolError(field, "negative value")
    _check_numeric_range(result, field)
    return result


def _check_numeric_range(value: Decimal, field: str) -> None:
    """Refuse what PostgreSQL's NUMERIC cannot store (at most 131072 digits before the
    point, 16383 after it): "1e200000" is a valid Decimal, and one such value would make
    the database refuse a whole batch. Only an exponent can get there within 64 chars."""
    exponent = value.as_tuple().exponent
    too_small = isinstance(exponent, int) and exponent < _NUMERIC_MIN_EXPONENT
    if too_small or (value and value.adjusted() > _NUMERIC_MAX_ADJUSTED):  # a zero is stored as 0
        raise ProtocolError(field, "out of the range NUMERIC stores")


def parse_decimal_text(value: object, field: str) -> str:
    """:func:`parse_decimal`'s checks and errors, the value kept as text that NUMERIC reads
    to the value and scale of ``parse_decimal(value)``: the exchange's own string when it
    is plain digits (no ``Decimal`` is made), else ``str()`` of the parsed ``Decimal``."""
    if type(value) is str and len(value) <= 64 and PLAIN_DECIMAL.fullmatch(value) is not None:
        return value
    return str(parse_decimal(value, field))


def parse_symbol(value: object, field: str, known: frozenset[str] = _NO_NAMES) -> str:
    """An upper-case symbol; ``known`` symbols (validated by whoever made the set) are
    accepted by one lookup."""
    if type(value) is str and value in known:
        return value
    if type(value) is not str or not _SYMBOL.match(value):
        raise ProtocolError(field, "expected an upper-case symbol such as BTCUSDT")
    return value


def json_object(value: object, field: str) -> Mapping[str, Any]:
    """A decoded JSON object, else a ProtocolError naming ``field``."""
    if type(value) is dict:  # what orjson returns; isinstance(x, Mapping) is an ABC check, slow
        return value
    if not isinstance(value, Mapping):
        raise ProtocolError(field, f"expected an object, got {type(value).__name__}")
    return value


def _get(data: Mapping[str, Any], key: str, path: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise ProtocolError(f"{path}{key}", "missing") from None


def _check_prices(
    open_time: int, close_time: int, o: Decimal, h: Decimal, lo: Decimal, c: Decimal, path: str
) -> None:
    if close_time <= open_time:
        raise ProtocolError(f"{path}close_time", "not after open_time")
    if not lo <= min(o, c) <= max(o, c) <= h:
        raise ProtocolError(f"{path}high/low", "open/close outside [low, high]")


def check_candle(candle: Candle, path: str = "") -> Candle:
    """Reject candles whose numbers contradict each other (low above high, ...)."""
    _check_prices(
        candle.open_time, candle.close_time, candle.open, candle.high, candle.low, candle.close, path
    )
    return candle


def check_candle_row(row: CandleRow, path: str = "") -> CandleRow:
    """:func:`check_candle` for a row of exact strings (temporary ``Decimal`` for the
    comparison only)."""
    o, h, lo, c = Decimal(row.open), Decimal(row.high), Decimal(row.low), Decimal(row.close)
    _check_prices(row.open_time, row.close_time, o, h, lo, c, path)
    return row


def parse_kline_event(data: Mapping[str, Any], known: frozenset[str] = _NO_NAMES) -> KlineEvent:
    """The payload of a ``<symbol>@kline_<interval>`` event (``e == "kline"``); its
    decimals stay the exchange's strings (:class:`CandleRow`)."""
    if data.get("e") != "kline":
        raise ProtocolError("e", "expected 'kline'")
    symbol = parse_symbol(_get(data, "s", ""), "s", known)
    k = json_object(_get(data, "k", ""), "k")
    if k.get("s", symbol) != symbol:
        raise ProtocolError("k.s", "differs from s")
    interval = _get(k, "i", "k.")
    if type(interval) is not str or not interval:
        raise ProtocolError("k.i", "expected an interval such as '1m'")
    closed = _get(k, "x", "k.")
    if type(closed) is not bool:
        raise ProtocolError("k.x", "expected a boolean")
    text = parse_decimal_text
    row = CandleRow(
        symbol=symbol,
        open_time=parse_timestamp(_get(k, "t", "k."), "k.t"),
        close_time=parse_timestamp(_get(k, "T", "k."), "k.T"),
        open=text(_get(k, "o", "k."), "k.o"),
        high=text(_get(k, "h", "k."), "k.h"),
        low=text(_get(k, "l", "k."), "k.l"),
        close=text(_get(k, "c", "k."), "k.c"),
        volume=text(_get(k, "v", "k."), "k.v"),
        quote_asset_volume=text(_get(k, "q", "k."), "k.q"),
        number_of_trades=parse_int(_get(k, "n", "k."), "k.n"),
        taker_buy_base_asset_volume=text(_get(k, "V", "k."), "k.V"),
        taker_buy_quote_asset_volume=text(_get(k, "Q", "k."), "k.Q"),
    )
    return KlineEvent(
        event_time=parse_timestamp(_get(data, "E", ""), "E"),
        symbol=symbol,
        interval=interval,
        # -1 is Binance's "no trade in this candle" marker for f/L.
        first_trade_id=parse_int(_get(k, "f", "k."), "k.f", minimum=-1),
        last_trade_id=parse_int(_get(k, "L", "k."), "k.L", minimum=-1),
        is_closed=closed,
        row=check_candle_row(row, "k."),
    )


def parse_book_ticker(
    data: Mapping[str, Any], received_at: int, known: frozenset[str] = _NO_NAMES
) -> BookTick:
    """The payload of a spot ``<symbol>@bookTicker`` event. It has no event time,
    so the caller's receipt time (ms) is recorded instead."""
    try:
        # Fast path, the feed's most frequent frame: plain lookups; a missing key takes
        # the path below, which names it.
        s, u, b, bq, a, aq = data["s"], data["u"], data["b"], data["B"], data["a"], data["A"]
    except KeyError:
        pass
    else:
        if type(u) is int and u >= 0:
            d = parse_decimal
            return BookTick(
                parse_symbol(s, "s", known), u, d(b, "b"), d(bq, "B"), d(a, "a"), d(aq, "A"), received_at
            )
    return BookTick(
        symbol=parse_symbol(_get(data, "s", ""), "s", known),
        update_id=parse_int(_get(data, "u", ""), "u"),
        bid_price=parse_decimal(_get(data, "b", ""), "b"),
        bid_qty=parse_decimal(_get(data, "B", ""), "B"),
        ask_price=parse_decimal(_get(data, "a", ""), "a"),
        ask_qty=parse_decimal(_get(data, "A", ""), "A"),
        received_at=received_at,
    )


def parse_rest_kline(row: object, symbol: str, index: int = 0) -> Candle:
    """One row of ``GET /api/v3/klines`` (12 positional fields) for ``symbol``."""
    path = f"[{index}]"
    if not isinstance(row, Sequence) or isinstance(row, str | bytes) or len(row) != 12:
        raise ProtocolError(path, "expected an array of 12 fields")
    candle = Candle(
        symbol=symbol,
        open_time=parse_timestamp(row[0], f"{path}[0] open time"),
        open=parse_decimal(row[1], f"{path}[1] open"),
        high=parse_decimal(row[2], f"{path}[2] high"),
        low=parse_decimal(row[3], f"{path}[3] low"),
        close=parse_decimal(row[4], f"{path}[4] close"),
        volume=parse_decimal(row[5], f"{path}[5] volume"),
        close_time=parse_timestamp(row[6], f"{path}[6] close time"),
        quote_asset_volume=parse_decimal(row[7], f"{path}[7] quote asset volume"),
        number_of_trades=parse_int(row[8], f"{path}[8] number of trades"),
        taker_buy_base_asset_volume=parse_decimal(row[9], f"{path}[9] taker buy base volume"),
        taker_buy_quote_asset_volume=parse_decimal(row[10], f"{path}[10] taker buy quote volume"),
    )
    return check_candle(candle, f"{path} ")


def parse_rest_klines(body: object, symbol: str) -> list[Candle]:
    """A whole ``GET /api/v3/klines`` body; rows must be in strictly increasing time."""
    if not isinstance(body, list):
        raise ProtocolError("body", "expected an array of klines")
    candles = [parse_rest_kline(row, symbol, i) for i, row in enumerate(body)]
    for i in range(1, len(candles)):
        if candles[i].open_time <= candles[i - 1].open_time:
            raise ProtocolError(f"[{i}][0] open time", "not increasing")
    return candles


def parse_api_error(body: object) -> ApiError:
    data = json_object(body, "body")
    code = _get(data, "code", "")
    msg = _get(data, "msg", "")
    if type(code) is not int:
        raise ProtocolError("code", "expected an integer")
    if type(msg) is not str:
        raise ProtocolError("msg", "expected a string")
    return ApiError(code=code, msg=msg)


def parse_event(data: Mapping[str, Any], received_at: int, known: frozenset[str] = _NO_NAMES) -> Event:
    """Any payload a market-data socket sends, told apart by its keys (``known``: see
    :func:`parse_symbol`)."""
    kind = data.get("e")
    if kind == "kline":
        return parse_kline_event(data, known)
    if kind == "serverShutdown":
        return ServerShutdown(event_time=parse_timestamp(_get(data, "E", ""), "E"))
    if "u" in data and "b" in data and "a" in data:
        return parse_book_ticker(data, received_at, known)
    if "result" in data and "id" in data:
        ident = data["id"]
        if ident is not None and type(ident) not in (int, str):
            raise ProtocolError("id", "expected an integer, string or null")
        result = data["result"]
        if not (
            result is None
            or type(result) is bool
            or (isinstance(result, list) and all(isinstance(s, str) for s in result))
        ):
            raise ProtocolError("result", "expected null, a boolean or a list of stream names")
        return SubscriptionResult(id=ident, result=result)
    if "code" in data and "msg" in data:
        return parse_api_error(data)
    raise ProtocolError("e", f"unknown event {str(kind)[:32]!r}")


def stream_symbol(stream: object) -> str:
    """The upper-case symbol a valid stream name is about (``btcusdt@x`` -> ``BTCUSDT``)."""
    if type(stream) is str and _STREAM.match(stream):
        # The name is [a-z0-9]@..., so comparing upper-cased against a valid
        # (upper-case) payload symbol is the same as comparing lower-cased.
        return stream.split("@", 1)[0].upper()
    raise ProtocolError("stream", "expected '<symbol>@<stream>' in lower case")


def load_frame(raw: str | bytes) -> Any:
    """A WebSocket text frame's JSON (size-capped); :func:`frame_from_json` goes on."""
    if len(raw) > _MAX_JSON_BYTES:
        raise ProtocolError("frame", "larger than 1 MiB")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("frame", f"invalid JSON ({exc.msg})") from None


def frame_from_json(decoded: object, received_at: int) -> StreamFrame:
    """Decoded frame JSON -> :class:`StreamFrame` (see :func:`decode_frame`)."""
    data = json_object(decoded, "frame")
    if "stream" in data and "data" in data:
        stream = data["stream"]
        expected = stream_symbol(stream)
        event = parse_event(json_object(data["data"], "data"), received_at)
        symbol = getattr(event, "symbol", None)
        if symbol is not None and symbol != expected:
            raise ProtocolError("stream", "symbol differs from the payload's")
        return StreamFrame(stream=stream, event=event)
    return StreamFrame(stream=None, event=parse_event(data, received_at))


def decode_frame(raw: str | bytes, received_at: int) -> StreamFrame:
    """One WebSocket text frame -> :class:`StreamFrame`.

    Accepts the combined-stream envelope ``{"stream": ..., "data": ...}`` and raw
    payloads (``/ws/<stream>``, control answers). ``received_at`` is the caller's
    receipt time in ms (used for bookTicker, which carries no event time).
    """
    return frame_from_json(load_frame(raw), received_at)
