"""REST klines pages as columns (pure): the gap handler's backfill path.

:func:`parse_rest_kline_columns` makes the same checks, raises the same first error
and gives the same values as :func:`quaint.binance.parse.parse_rest_klines`, but keeps
the exchange's own decimal strings in column lists instead of a ``Candle`` with eight
``Decimal`` per row: what a backfilling process holds at its peak (see
:class:`quaint.binance.models.KlineColumns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from quaint.binance.errors import ProtocolError
from quaint.binance.models import KlineColumns
from quaint.binance.parse import PLAIN_DECIMAL, parse_decimal_text, parse_int, parse_timestamp

_BIGINT_MAX = 2**63 - 1  # number_of_trades is a bigint column
_REST_DECIMALS = {
    1: "open",
    2: "high",
    3: "low",
    4: "close",
    5: "volume",
    7: "quote asset volume",
    9: "taker buy base volume",
    10: "taker buy quote volume",
}


def _rest_decimal(row: Sequence[Any], j: int, i: int) -> str:
    """Field ``j`` of row ``i`` by :func:`parse_decimal_text`; its fast path is repeated
    here so that a plain value needs no field name built (8 per row)."""
    value = row[j]
    if type(value) is str and len(value) <= 64 and PLAIN_DECIMAL.fullmatch(value) is not None:
        return value
    return parse_decimal_text(value, f"[{i}][{j}] {_REST_DECIMALS[j]}")


def parse_rest_kline_columns(body: object, symbol: str) -> KlineColumns:
    """A whole ``GET /api/v3/klines`` body as columns: the same checks, errors and values
    as :func:`parse_rest_klines` (``KlineColumns.candles()`` equals its result), without
    a ``Candle`` or eight ``Decimal`` per row kept (see :class:`KlineColumns`); and a
    number of trades that does not fit the bigint column is refused here."""
    if not isinstance(body, list):
        raise ProtocolError("body", "expected an array of klines")
    n = len(body)
    opens: list[int] = []
    closes: list[int] = []
    decimals: tuple[list[str], ...] = tuple([] for _ in range(8))
    trades: list[int] = []
    for i in range(n):
        row = body[i]
        # type() first: orjson's lists skip the ABC check.
        if (type(row) is not list or len(row) != 12) and (
            not isinstance(row, Sequence) or isinstance(row, str | bytes) or len(row) != 12
        ):
            raise ProtocolError(f"[{i}]", "expected an array of 12 fields")
        # Field by field in row order, as parse_rest_kline: the same first error.
        t = parse_timestamp(row[0], f"[{i}][0] open time")
        o, h, lo, c, v = (_rest_decimal(row, j, i) for j in (1, 2, 3, 4, 5))
        close_time = parse_timestamp(row[6], f"[{i}][6] close time")
        q = _rest_decimal(row, 7, i)
        count = parse_int(row[8], f"[{i}][8] number of trades")
        if count > _BIGINT_MAX:
            raise ProtocolError(f"[{i}][8] number of trades", "out of range")
        tb, tq = _rest_decimal(row, 9, i), _rest_decimal(row, 10, i)
        if close_time <= t:
            raise ProtocolError(f"[{i}] close_time", "not after open_time")
        # Temporary Decimals for the comparison only (freed at once; none is kept).
        dl, dh, do, dc = Decimal(lo), Decimal(h), Decimal(o), Decimal(c)
        if not dl <= min(do, dc) <= max(do, dc) <= dh:
            raise ProtocolError(f"[{i}] high/low", "open/close outside [low, high]")
        for col, text in zip(decimals, (o, h, lo, c, v, q, tb, tq), strict=True):
            col.append(text)
        opens.append(t)
        closes.append(close_time)
        trades.append(count)
    for i in range(1, n):
        if opens[i] <= opens[i - 1]:
            raise ProtocolError(f"[{i}][0] open time", "not increasing")
    return KlineColumns(symbol, opens, closes, decimals, trades)
