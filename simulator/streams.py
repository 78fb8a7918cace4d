"""WebSocket stream names, subscription requests and the incoming-rate rule (sans-I/O).

Messages and codes follow Binance's "Error Messages" table for WebSocket Streams:
code 0 unknown property, 1 bad value type, 2 invalid request, 3 invalid JSON.
Ids may be 64-bit signed integers, alphanumeric strings of at most 36 characters,
or null, and are echoed back.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from quaint.binance.encode import book_ticker_stream, kline_stream

StreamKind = Literal["kline", "bookTicker"]
MAX_STREAMS = 1024
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_STREAM_RE = re.compile(r"^([A-Za-z0-9]{2,20})@(kline_([0-9]+[smhdwM])|bookTicker)$")
_ID_STR_RE = re.compile(r"^[A-Za-z0-9\-_]{1,36}$")
_INT64 = 1 << 63


class StreamError(ValueError):
    """An unknown or malformed stream name; the message is sent to the client."""


@dataclass(frozen=True, slots=True)
class Stream:
    name: str  # normalised: lower-case symbol, e.g. "btcusdt@kline_1m"
    symbol: str  # upper-case, e.g. "BTCUSDT"
    kind: StreamKind


def parse_stream(raw: str, symbols: frozenset[str]) -> Stream:
    """Validate one stream name against what the simulator serves."""
    m = _STREAM_RE.match(raw)
    if m is None:
        raise StreamError(f"Invalid request: unknown stream '{raw[:64]}'")
    symbol = m.group(1).upper()
    if symbol not in symbols:
        raise StreamError(f"Invalid request: unknown symbol in stream '{raw[:64]}'")
    if m.group(3) is not None:
        if m.group(3) != "1m":
            raise StreamError(
                f"Invalid request: unsupported stream '{raw[:64]}' (only kline_1m is simulated)"
            )
        return Stream(name=kline_stream(symbol), symbol=symbol, kind="kline")
    return Stream(name=book_ticker_stream(symbol), symbol=symbol, kind="bookTicker")


def parse_stream_list(raw: str, symbols: frozenset[str], max_streams: int = MAX_STREAMS) -> list[Stream]:
    """``a/b/c`` from a URL (``/stream?streams=`` or ``/ws/a/b``)."""
    names = [n for n in raw.split("/") if n]
    if len(names) > max_streams:
        raise StreamError(f"Invalid request: too many streams ({len(names)} > {max_streams})")
    streams = {s.name: s for s in (parse_stream(n, symbols) for n in names)}
    return list(streams.values())


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer a control message with, and how subscriptions changed."""

    payload: dict[str, Any]
    added: tuple[Stream, ...] = ()
    removed: tuple[Stream, ...] = ()


def _error(code: int, msg: str, ident: object = None, *, with_id: bool = False) -> Reply:
    payload: dict[str, Any] = {"code": code, "msg": msg}
    if with_id:
        payload["id"] = ident
    return Reply(payload=payload)


_MISSING = object()


@dataclass
class Subscriptions:
    """One connection's subscription state and its control-message handling."""

    symbols: frozenset[str]
    combined: bool
    max_streams: int = MAX_STREAMS
    streams: dict[str, Stream] = field(default_factory=dict)

    def handle(self, text: str) -> Reply:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return _error(3, f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        if not isinstance(msg, dict):
            return _error(2, "Invalid request: expected an object")
        ident = msg.get("id", _MISSING)
        valid_id = (
            ident is None
            or (type(ident) is int and -_INT64 <= ident < _INT64)
            or (type(ident) is str and _ID_STR_RE.match(ident) is not None)
        )
        if ident is _MISSING or not valid_id:
            return _error(2, "Invalid request: request ID must be an unsigned integer")
        method = msg.get("method")
        if method is None:
            return _error(2, "Invalid request: missing field `method`", ident, with_id=True)
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            return _error(
                2,
                f"Invalid request: unknown variant `{method}`, expected one of {expected}",
                ident,
                with_id=True,
            )
        params = msg.get("params", [])
        if not isinstance(params, list):
            return _error(2, "Invalid request: params must be an array", ident, with_id=True)
        if method == "LIST_SUBSCRIPTIONS":
            return Reply(payload={"result": sorted(self.streams), "id": ident})
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(method, params, ident)
        if not all(isinstance(p, str) for p in params):
            return _error(2, "Invalid request: stream names must be strings", ident, with_id=True)
        try:
            wanted = {s.name: s for s in (parse_stream(p, self.symbols) for p in params)}
        except StreamError as exc:
            return _error(2, str(exc), ident, with_id=True)
        if method == "SUBSCRIBE":
            added = [s for n, s in wanted.items() if n not in self.streams]
            if len(self.streams) + len(added) > self.max_streams:
                return _error(
                    2,
                    f"Invalid request: too many streams (limit {self.max_streams} per connection)",
                    ident,
                    with_id=True,
                )
            self.streams.update((s.name, s) for s in added)
            return Reply(payload={"result": None, "id": ident}, added=tuple(added))
        removed = [self.streams.pop(n) for n in wanted if n in self.streams]
        return Reply(payload={"result": None, "id": ident}, removed=tuple(removed))

    def _property(self, method: str, params: list[Any], ident: object) -> Reply:
        if not params or not isinstance(params[0], str):
            return _error(2, "Invalid request: property name must be a string", ident, with_id=True)
        if params[0] != "combined":
            return _error(0, "Unknown property", ident, with_id=True)
        if method == "GET_PROPERTY":
            return Reply(payload={"result": self.combined, "id": ident})
        if len(params) != 2 or type(params[1]) is not bool:
            return _error(1, "Invalid value type: expected Boolean", ident, with_id=True)
        self.combined = params[1]
        return Reply(payload={"result": None, "id": ident})


class IncomingRateLimit:
    """Binance allows 5 incoming messages (text, ping or pong frames) per second per
    connection; more gets the connection closed. Sliding one-second window."""

    def __init__(self, per_second: int = 5) -> None:
        self.per_second = per_second
        self.peak = 0  # most messages seen in any one-second window
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        times = self._times
        while times and times[0] <= now - 1.0:
            times.popleft()
        times.append(now)
        self.peak = max(self.peak, len(times))
        return len(times) <= self.per_second
