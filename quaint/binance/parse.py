"""Pure parsers for Binance spot market-data payloads (no I/O, no clock).

Every function takes decoded JSON (or raw frame text) and returns a model from
:mod:`quaint.binance.models`, or raises :class:`ProtocolError` naming the bad field.
Callers that read from the network count and log those errors; nothing here
decides what to do about them.
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
# Hot-path caches of names already validated (a feed repeats the same few hundred
# symbols and streams); bounded, so garbage input cannot grow them without limit.
_CACHE_MAX = 8192
_valid_symbols: set[str] = set()
_stream_symbols: dict[str, str] = {}  # valid stream name -> the upper-case symbol it names


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


def parse_symbol(value: object, field: str) -> str:
    if type(value) is str and value in _valid_symbols:
        return value
    if type(value) is not str or not _SYMBOL.match(value):
        raise ProtocolError(field, "expected an upper-case symbol such as BTCUSDT")
    if len(_valid_symbols) < _CACHE_MAX:
        _valid_symbols.add(value)
    return value


def _mapping(value: object, field: str) -> Mapping[str, Any]:
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


def check_candle(candle: Candle, path: str = "") -> Candle:
    """Reject candles whose numbers contradict each other (low above high, ...)."""
    if candle.close_time <= candle.open_time:
        raise ProtocolError(f"{path}close_time", "not after open_time")
    if not candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high:
        raise ProtocolError(f"{path}high/low", "open/close outside [low, high]")
    return candle


def parse_kline_event(data: Mapping[str, Any]) -> KlineEvent:
    """The payload of a ``<symbol>@kline_<interval>`` event (``e == "kline"``)."""
    if data.get("e") != "kline":
        raise ProtocolError("e", "expected 'kline'")
    symbol = parse_symbol(_get(data, "s", ""), "s")
    k = _mapping(_get(data, "k", ""), "k")
    if k.get("s", symbol) != symbol:
        raise ProtocolError("k.s", "differs from s")
    interval = _get(k, "i", "k.")
    if type(interval) is not str or not interval:
        raise ProtocolError("k.i", "expected an interval such as '1m'")
    closed = _get(k, "x", "k.")
    if type(closed) is not bool:
        raise ProtocolError("k.x", "expected a boolean")
    candle = Candle(
        symbol=symbol,
        open_time=parse_timestamp(_get(k, "t", "k."), "k.t"),
        close_time=parse_timestamp(_get(k, "T", "k."), "k.T"),
        open=parse_decimal(_get(k, "o", "k."), "k.o"),
        high=parse_decimal(_get(k, "h", "k."), "k.h"),
        low=parse_decimal(_get(k, "l", "k."), "k.l"),
        close=parse_decimal(_get(k, "c", "k."), "k.c"),
        volume=parse_decimal(_get(k, "v", "k."), "k.v"),
        quote_asset_volume=parse_decimal(_get(k, "q", "k."), "k.q"),
        number_of_trades=parse_int(_get(k, "n", "k."), "k.n"),
        taker_buy_base_asset_volume=parse_decimal(_get(k, "V", "k."), "k.V"),
        taker_buy_quote_asset_volume=parse_decimal(_get(k, "Q", "k."), "k.Q"),
    )
    return KlineEvent(
        event_time=parse_timestamp(_get(data, "E", ""), "E"),
        symbol=symbol,
        interval=interval,
        # -1 is Binance's "no trade in this candle" marker for f/L.
        first_trade_id=parse_int(_get(k, "f", "k."), "k.f", minimum=-1),
        last_trade_id=parse_int(_get(k, "L", "k."), "k.L", minimum=-1),
        is_closed=closed,
        candle=check_candle(candle, "k."),
    )


def parse_book_ticker(data: Mapping[str, Any], received_at: int) -> BookTick:
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
            return BookTick(
                parse_symbol(s, "s"), u, parse_decimal(b, "b"), parse_decimal(bq, "B"),
                parse_decimal(a, "a"), parse_decimal(aq, "A"), received_at,
            )  # fmt: skip
    return BookTick(
        symbol=parse_symbol(_get(data, "s", ""), "s"),
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
    data = _mapping(body, "body")
    code = _get(data, "code", "")
    msg = _get(data, "msg", "")
    if type(code) is not int:
        raise ProtocolError("code", "expected an integer")
    if type(msg) is not str:
        raise ProtocolError("msg", "expected a string")
    return ApiError(code=code, msg=msg)


def parse_event(data: Mapping[str, Any], received_at: int) -> Event:
    """Any payload a market-data socket sends, told apart by its keys."""
    kind = data.get("e")
    if kind == "kline":
        return parse_kline_event(data)
    if kind == "serverShutdown":
        return ServerShutdown(event_time=parse_timestamp(_get(data, "E", ""), "E"))
    if "u" in data and "b" in data and "a" in data:
        return parse_book_ticker(data, received_at)
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


def _stream_symbol(stream: object) -> str:
    """The upper-case symbol a valid stream name is about (``btcusdt@x`` -> ``BTCUSDT``)."""
    if type(stream) is str:
        symbol = _stream_symbols.get(stream)
        if symbol is not None:
            return symbol
        if _STREAM.match(stream):
            # The name is [a-z0-9]@..., so comparing upper-cased against a valid
            # (upper-case) payload symbol is the same as comparing lower-cased.
            symbol = stream.split("@", 1)[0].upper()
            if len(_stream_symbols) < _CACHE_MAX:
                _stream_symbols[stream] = symbol
            return symbol
    raise ProtocolError("stream", "expected '<symbol>@<stream>' in lower case")


def load_frame(raw: str | bytes) -> Any:
    """A WebSocket text frame's JSON (size-capped); :func:`frame_from_json` goes on."""
    if len(raw) > _MAX_JSON_BYTES:
        raise ProtocolError("frame", "larger than 1 MiB")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("frame", f"invalid JSON ({exc.msg})") from None


def _envelope(decoded: object, received_at: int) -> tuple[str | None, Event]:
    data = _mapping(decoded, "frame")
    if "stream" in data and "data" in data:
        stream = data["stream"]
        expected = _stream_symbol(stream)
        event = parse_event(_mapping(data["data"], "data"), received_at)
        symbol = getattr(event, "symbol", None)
        if symbol is not None and symbol != expected:
            raise ProtocolError("stream", "symbol differs from the payload's")
        return stream, event
    return None, parse_event(data, received_at)


def frame_from_json(decoded: object, received_at: int) -> StreamFrame:
    """Decoded frame JSON -> :class:`StreamFrame` (see :func:`decode_frame`)."""
    stream, event = _envelope(decoded, received_at)
    return StreamFrame(stream=stream, event=event)


def event_from_json(decoded: object, received_at: int) -> Event:
    """Like :func:`frame_from_json` (same checks), for callers that only want the
    event: no :class:`StreamFrame` is built on the hot path."""
    return _envelope(decoded, received_at)[1]


def decode_frame(raw: str | bytes, received_at: int) -> StreamFrame:
    """One WebSocket text frame -> :class:`StreamFrame`.

    Accepts the combined-stream envelope ``{"stream": ..., "data": ...}`` and raw
    payloads (``/ws/<stream>``, control answers). ``received_at`` is the caller's
    receipt time in ms (used for bookTicker, which carries no event time).
    """
    return frame_from_json(load_frame(raw), received_at)


def open_kline_symbol(decoded: object) -> str | None:
    """The symbol of a decoded frame that is a well-formed ``kline_1m`` update of a
    candle still open (``x: false``), judged without converting its numbers; ``None``
    for anything else, which :func:`frame_from_json` then parses in full.

    For consumers that store only closed candles: an open candle's numbers are
    replaced by the next update and never used, and on a busy feed validating them
    would cost as much as everything else together.
    """
    if type(decoded) is not dict:
        return None
    if "stream" in decoded and "data" in decoded:
        stream, data = decoded["stream"], decoded["data"]
        # Only a stream name already validated (cached) by a full parse: the first
        # frame of each stream takes the full path.
        expected = _stream_symbols.get(stream) if type(stream) is str else None
        if expected is None:
            return None
    else:
        data, expected = decoded, None
    if type(data) is not dict or data.get("e") != "kline":
        return None
    k = data.get("k")
    if type(k) is not dict or k.get("x") is not False or k.get("i") != "1m":
        return None
    symbol = data.get("s")
    if type(symbol) is not str or k.get("s", symbol) != symbol:
        return None
    if expected is not None and symbol != expected:
        return None
    return symbol if symbol in _valid_symbols else None
