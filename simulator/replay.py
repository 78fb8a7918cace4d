"""Load a data.binance.vision spot kline CSV for replay instead of the random walk.

The archives have 12 columns and no header (some tools add one; it is skipped).
Spot archives use milliseconds before 2025-01-01 and microseconds from then on;
both are accepted and normalised to milliseconds.
"""

from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from pathlib import Path

from quaint.binance.models import MINUTE_MS, Candle

_MICROS_THRESHOLD = 10**14


class ReplayError(ValueError):
    pass


def _ms(value: str) -> int:
    n = int(value)
    return n // 1000 if n >= _MICROS_THRESHOLD else n


def parse_row(row: list[str], symbol: str, line: int) -> Candle:
    if len(row) < 11:
        raise ReplayError(f"line {line}: expected 12 columns, got {len(row)}")
    try:
        open_time = _ms(row[0])
        candle = Candle(
            symbol=symbol,
            open_time=open_time,
            close_time=open_time + MINUTE_MS - 1,
            open=Decimal(row[1]),
            high=Decimal(row[2]),
            low=Decimal(row[3]),
            close=Decimal(row[4]),
            volume=Decimal(row[5]),
            quote_asset_volume=Decimal(row[7]),
            number_of_trades=int(row[8]),
            taker_buy_base_asset_volume=Decimal(row[9]),
            taker_buy_quote_asset_volume=Decimal(row[10]),
        )
    except (ValueError, InvalidOperation) as exc:
        raise ReplayError(f"line {line}: {exc}") from None
    if open_time % MINUTE_MS or _ms(row[6]) != candle.close_time:
        raise ReplayError(f"line {line}: not a 1m kline (open {row[0]}, close {row[6]})")
    if not candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high:
        raise ReplayError(f"line {line}: open/close outside [low, high]")
    return candle


def load_csv(path: Path, symbol: str) -> dict[int, Candle]:
    """open time (ms) -> Candle for every row of ``path``."""
    candles: dict[int, Candle] = {}
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or (line == 1 and not row[0].strip().isdigit()):
                continue  # blank line or a header
            candle = parse_row(row, symbol, line)
            candles[candle.open_time] = candle
    if not candles:
        raise ReplayError(f"{path}: no klines")
    return candles
