"""Binance spot market-data values as exact, immutable records.

Prices and quantities are ``Decimal`` built from the exchange's strings, so a value
travels string -> Decimal -> NUMERIC without ever being rounded through a float.
Times are integer milliseconds since the Unix epoch (UTC), the exchange's own unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

MINUTE_MS = 60_000


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch -> aware UTC datetime (exact to the millisecond)."""
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)


def datetime_to_ms(value: datetime) -> int:
    """Aware datetime -> milliseconds since the epoch; naive datetimes are refused."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: a timezone is required")
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@dataclass(frozen=True, slots=True)
class Candle:
    """One 1-minute candle (kline); ``open_time`` is the minute it describes."""

    symbol: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_asset_volume: Decimal
    number_of_trades: int
    taker_buy_base_asset_volume: Decimal
    taker_buy_quote_asset_volume: Decimal


@dataclass(frozen=True, slots=True)
class KlineEvent:
    """A ``<symbol>@kline_<interval>`` stream event."""

    event_time: int
    symbol: str
    interval: str
    first_trade_id: int
    last_trade_id: int
    is_closed: bool
    candle: Candle


@dataclass(frozen=True, slots=True)
class BookTick:
    """A ``<symbol>@bookTicker`` event. Spot bookTicker carries no event time, so
    ``received_at`` is the receipt time (ms) stamped by whoever read the frame."""

    symbol: str
    update_id: int
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal
    received_at: int


@dataclass(frozen=True, slots=True)
class ApiError:
    """Binance's error body ``{"code": -1121, "msg": "Invalid symbol."}``."""

    code: int
    msg: str


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """``{"e": "serverShutdown", "E": ms}``: the server will disconnect soon."""

    event_time: int


@dataclass(frozen=True, slots=True)
class SubscriptionResult:
    """Answer to SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS: ``{"result": ..., "id": ...}``."""

    id: int | str | None
    result: list[str] | None


Event = KlineEvent | BookTick | ServerShutdown | SubscriptionResult | ApiError


@dataclass(frozen=True, slots=True)
class StreamFrame:
    """One decoded WebSocket text frame: the stream it came on (``None`` for raw
    ``/ws`` payloads and control answers) and its event."""

    stream: str | None
    event: Event
