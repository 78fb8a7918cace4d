"""Binance spot market-data values as exact, immutable records.

Prices and quantities are ``Decimal`` built from the exchange's strings, so a value
travels string -> Decimal -> NUMERIC without ever being rounded through a float; on the
paths that only store them (a WebSocket candle, a REST page) they stay the exchange's
validated strings, which NUMERIC reads to the same value and scale (:class:`CandleRow`,
:class:`KlineColumns`). Times are integer milliseconds since the Unix epoch (UTC), the
exchange's own unit.
"""

from __future__ import annotations

from collections.abc import Sequence
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
class CandleRow:
    """A candle as it is stored: Candle's fields in Candle's order, the decimals as the
    exchange's validated strings (or ``str(Decimal)`` of them, see
    :func:`quaint.binance.parse.parse_decimal_text`), which ``numeric`` reads to exactly
    the value and scale ``Decimal`` gives. A closed WebSocket candle goes string ->
    NUMERIC with no ``Decimal`` made and printed back on the way."""

    symbol: str
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_asset_volume: str
    number_of_trades: int
    taker_buy_base_asset_volume: str
    taker_buy_quote_asset_volume: str

    @classmethod
    def of(cls, c: Candle) -> CandleRow:
        return cls(
            c.symbol,
            c.open_time,
            c.close_time,
            str(c.open),
            str(c.high),
            str(c.low),
            str(c.close),
            str(c.volume),
            str(c.quote_asset_volume),
            c.number_of_trades,
            str(c.taker_buy_base_asset_volume),
            str(c.taker_buy_quote_asset_volume),
        )

    def candle(self) -> Candle:
        return Candle(
            self.symbol,
            self.open_time,
            self.close_time,
            Decimal(self.open),
            Decimal(self.high),
            Decimal(self.low),
            Decimal(self.close),
            Decimal(self.volume),
            Decimal(self.quote_asset_volume),
            self.number_of_trades,
            Decimal(self.taker_buy_base_asset_volume),
            Decimal(self.taker_buy_quote_asset_volume),
        )


@dataclass(frozen=True, slots=True)
class KlineEvent:
    """A ``<symbol>@kline_<interval>`` stream event. ``row`` keeps the exchange's
    strings (what is stored); ``candle`` gives them as ``Decimal``."""

    event_time: int
    symbol: str
    interval: str
    first_trade_id: int
    last_trade_id: int
    is_closed: bool
    row: CandleRow

    @property
    def candle(self) -> Candle:
        return self.row.candle()


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
    """Answer to a control request, ``{"result": ..., "id": ...}``: ``None`` for
    SUBSCRIBE/UNSUBSCRIBE/SET_PROPERTY, the stream names for LIST_SUBSCRIPTIONS, the
    property's value (``combined``: a bool) for GET_PROPERTY."""

    id: int | str | None
    result: list[str] | bool | None


Event = KlineEvent | BookTick | ServerShutdown | SubscriptionResult | ApiError


@dataclass(frozen=True, slots=True)
class StreamFrame:
    """One decoded WebSocket text frame: the stream it came on (``None`` for raw
    ``/ws`` payloads and control answers) and its event."""

    stream: str | None
    event: Event


@dataclass(frozen=True, slots=True)
class KlineColumns:
    """A REST klines page of one symbol as columns, oldest first.

    Decimals are kept as the exchange's validated strings (or ``str(Decimal)`` of
    them, see :func:`quaint.binance.rest_parse.parse_rest_kline_columns`): a page of 1000
    rows then holds 8000 references to strings the JSON decoder already made, not
    1000 records of 8 ``Decimal`` each, which is what bounds a backfilling process's
    memory. :meth:`candles` gives the records when a caller wants them.
    """

    symbol: str
    open_times: list[int]
    close_times: list[int]
    # One list per decimal field, in Candle's order less number_of_trades: open, high, low,
    # close, volume, quote asset volume, taker buy base volume, taker buy quote volume.
    decimals: tuple[list[str], ...]
    trades: list[int]

    def __len__(self) -> int:
        return len(self.open_times)

    def take(self, indices: Sequence[int]) -> KlineColumns:
        """The rows at ``indices`` (in that order); the strings are shared, not copied."""
        return KlineColumns(
            self.symbol,
            [self.open_times[i] for i in indices],
            [self.close_times[i] for i in indices],
            tuple([col[i] for i in indices] for col in self.decimals),
            [self.trades[i] for i in indices],
        )

    def candles(self) -> list[Candle]:
        out = []
        for i, t in enumerate(self.open_times):
            o, h, lo, c, v, q, tb, tq = (Decimal(col[i]) for col in self.decimals)
            out.append(Candle(self.symbol, t, self.close_times[i], o, h, lo, c, v, q, self.trades[i], tb, tq))
        return out
