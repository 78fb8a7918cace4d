"""Models -> Binance's wire shapes (used by the simulator and by tests).

The inverse of :mod:`quaint.binance.parse`: ``parse(encode(x)) == x`` for every model.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from quaint.binance.models import BookTick, Candle


def format_decimal(value: Decimal, places: int = 8) -> str:
    """Binance's fixed 8-decimal strings ("0.34064000")."""
    return f"{value:.{places}f}"


def rest_kline_row(candle: Candle) -> list[Any]:
    """A ``GET /api/v3/klines`` row: 12 fields, the last one Binance's unused "0"."""
    f = format_decimal
    return [
        candle.open_time,
        f(candle.open),
        f(candle.high),
        f(candle.low),
        f(candle.close),
        f(candle.volume),
        candle.close_time,
        f(candle.quote_asset_volume),
        candle.number_of_trades,
        f(candle.taker_buy_base_asset_volume),
        f(candle.taker_buy_quote_asset_volume),
        "0",
    ]


def kline_event_payload(
    candle: Candle,
    *,
    event_time: int,
    is_closed: bool,
    first_trade_id: int,
    last_trade_id: int,
    interval: str = "1m",
) -> dict[str, Any]:
    """The data of a ``<symbol>@kline_<interval>`` event, keys in Binance's order."""
    f = format_decimal
    return {
        "e": "kline",
        "E": event_time,
        "s": candle.symbol,
        "k": {
            "t": candle.open_time,
            "T": candle.close_time,
            "s": candle.symbol,
            "i": interval,
            "f": first_trade_id,
            "L": last_trade_id,
            "o": f(candle.open),
            "c": f(candle.close),
            "h": f(candle.high),
            "l": f(candle.low),
            "v": f(candle.volume),
            "n": candle.number_of_trades,
            "x": is_closed,
            "q": f(candle.quote_asset_volume),
            "V": f(candle.taker_buy_base_asset_volume),
            "Q": f(candle.taker_buy_quote_asset_volume),
            "B": "0",
        },
    }


def book_ticker_payload(tick: BookTick) -> dict[str, Any]:
    """The data of a spot ``<symbol>@bookTicker`` event (no event time, by design)."""
    f = format_decimal
    return {
        "u": tick.update_id,
        "s": tick.symbol,
        "b": f(tick.bid_price),
        "B": f(tick.bid_qty),
        "a": f(tick.ask_price),
        "A": f(tick.ask_qty),
    }


def combined(stream: str, data: dict[str, Any]) -> dict[str, Any]:
    """The combined-stream envelope ``{"stream": ..., "data": ...}``."""
    return {"stream": stream, "data": data}


def kline_stream(symbol: str, interval: str = "1m") -> str:
    return f"{symbol.lower()}@kline_{interval}"


def book_ticker_stream(symbol: str) -> str:
    return f"{symbol.lower()}@bookTicker"
