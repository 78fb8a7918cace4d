"""Feature maths (pure): closed candles (+ book state) of one symbol -> one JSON document.

Features for minute *t* (a candle's open time) use only candles with open time <= *t*
(all closed by *t* + 60 s) and the book state received before *t*'s closed candle:
no look-ahead. Every indicator is computed over the **window** = the run of
consecutive minutes ending at *t*, at most ``LOOKBACK_MINUTES`` (120) long; a
missing minute cuts the run, so a value never silently spans a gap. With full history
the window is always 120 minutes, so a minute's features are the same whenever they
are computed. Normalisation statistics use the **60 minutes before t** (``NORM_WINDOW``;
the current value is not part of its own mean).

Floats in JSON are always finite. A feature whose history is too short is ``null``;
``warm`` is true when the window is at least ``WARMUP_MINUTES`` (62) long, and then
every candle feature is a number. Degenerate denominators take a documented neutral
value instead of NaN/inf (column "flat market").

| key | definition | needs |
| --- | --- | --- |
| ret_k (k = 1, 5, 15, 60) | close_t / close_{t-k} - 1 | k+1 min |
| logret_k (k = 1, 5, 15, 60) | ln(close_t / close_{t-k}) | k+1 min |
| logret_1_z | (logret_1 - mean) / sd of the 60 previous 1-min log returns | 62 min |
| realized_vol_k (k = 15, 60) | sqrt(sum of squared 1-min log returns, last k min), not annualised | k+1 min |
| rsi_14 | Wilder's RSI(14), 0..100: SMA seed on the window's first 14 changes, then smoothed | 15 min |
| macd | (EMA12 - EMA26 of closes, SMA-seeded) / close_t | 26 min |
| macd_signal | EMA9 of the MACD line / close_t | 34 min |
| macd_hist | macd - macd_signal | 34 min |
| bb_pct_b | Bollinger %B(20, 2): (close - (SMA20 - 2 sd)) / (4 sd), population sd | 20 min |
| volume_z | (volume_t - mean) / sd of the 60 previous volumes | 61 min |
| trades_z | (trades_t - mean) / sd of the 60 previous trade counts | 61 min |
| taker_buy_ratio | taker buy base volume_t / volume_t, 0..1 | 1 min |
| vwap_dev | close_t / VWAP_60 - 1; VWAP_60 = sum(quote volume) / sum(volume) over t-59..t | 60 min |
| spread_bps | (ask - bid) / mid * 10^4, book tick in force at t's close | a tick |
| book_imbalance | (bid_qty - ask_qty) / (bid_qty + ask_qty), -1..1 | a tick |
| warm | window >= 62 min: every candle feature above is a number | |
| window_minutes | length of the window used (<= 120) | |
| has_book | spread_bps and book_imbalance come from a tick (else null) | |

Flat market (a zero denominator) gives a neutral value, never NaN: z-scores 0,
realized_vol 0, rsi_14 50 (no moves; 100 if no losses), macd 0, bb_pct_b 0.5,
taker_buy_ratio 0.5 and vwap_dev 0 when volume is 0, book_imbalance 0 for an empty book.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from quaint.binance.models import MINUTE_MS, BookTick, Candle

LOOKBACK_MINUTES = 120
NORM_WINDOW = 60
WARMUP_MINUTES = NORM_WINDOW + 2
RETURN_HORIZONS = (1, 5, 15, 60)
VOL_HORIZONS = (15, 60)
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_WIDTH = 20, 2.0

CANDLE_FEATURES = (
    *(f"ret_{k}" for k in RETURN_HORIZONS),
    *(f"logret_{k}" for k in RETURN_HORIZONS),
    "logret_1_z",
    *(f"realized_vol_{k}" for k in VOL_HORIZONS),
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_pct_b",
    "volume_z",
    "trades_z",
    "taker_buy_ratio",
    "vwap_dev",
)
BOOK_FEATURES = ("spread_bps", "book_imbalance")


def contiguous_window(
    candles: Sequence[Candle], target: int, lookback: int = LOOKBACK_MINUTES
) -> list[Candle]:
    """The run of consecutive minutes ending at ``target`` (oldest first, <= lookback
    long) from candles sorted by open time; empty if ``target`` itself is missing."""
    by_time = {c.open_time: c for c in candles if c.open_time <= target}
    out: list[Candle] = []
    t = target
    while len(out) < lookback and t in by_time:
        out.append(by_time[t])
        t -= MINUTE_MS
    out.reverse()
    return out


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def pstdev(xs: Sequence[float]) -> float:
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def zscore(x: float, history: Sequence[float]) -> float:
    """Standard score of ``x`` against ``history``; 0 when history has no spread."""
    sd = pstdev(history)
    return 0.0 if sd == 0 else (x - mean(history)) / sd


def ema(xs: Sequence[float], period: int) -> list[float]:
    """EMA seeded with the SMA of the first ``period`` values: result[i] is the EMA at
    xs[period - 1 + i] (empty when there are fewer than ``period`` values)."""
    if len(xs) < period:
        return []
    alpha = 2.0 / (period + 1)
    out = [mean(xs[:period])]
    for x in xs[period:]:
        out.append(out[-1] + alpha * (x - out[-1]))
    return out


def rsi(closes: Sequence[float], period: int = RSI_PERIOD) -> float | None:
    if len(closes) < period + 1:
        return None
    changes = [b - a for a, b in pairwise(closes)]
    gain = sum(max(d, 0.0) for d in changes[:period]) / period
    loss = sum(max(-d, 0.0) for d in changes[:period]) / period
    for d in changes[period:]:
        gain = (gain * (period - 1) + max(d, 0.0)) / period
        loss = (loss * (period - 1) + max(-d, 0.0)) / period
    if loss == 0:
        return 100.0 if gain > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + gain / loss)


def macd(closes: Sequence[float]) -> tuple[float, float, float] | None:
    """(macd, signal, histogram) at the last close, in price units."""
    fast, slow = ema(closes, MACD_FAST), ema(closes, MACD_SLOW)
    if not slow:
        return None
    offset = MACD_SLOW - MACD_FAST  # fast[i + offset] and slow[i] are at the same close
    line = [fast[i + offset] - s for i, s in enumerate(slow)]
    signal = ema(line, MACD_SIGNAL)
    if not signal:
        return None
    return line[-1], signal[-1], line[-1] - signal[-1]


def percent_b(closes: Sequence[float], period: int = BB_PERIOD, width: float = BB_WIDTH) -> float | None:
    if len(closes) < period:
        return None
    recent = closes[-period:]
    sd = pstdev(recent)
    if sd == 0:
        return 0.5
    lower = mean(recent) - width * sd
    return (closes[-1] - lower) / (2 * width * sd)


def _log_ratio(a: float, b: float) -> float | None:
    return math.log(a / b) if a > 0 and b > 0 else None


def book_features(tick: BookTick | None) -> dict[str, float | None]:
    if tick is None:
        return {"spread_bps": None, "book_imbalance": None}
    bid, ask = float(tick.bid_price), float(tick.ask_price)
    bq, aq = float(tick.bid_qty), float(tick.ask_qty)
    mid = (bid + ask) / 2
    return {
        "spread_bps": (ask - bid) / mid * 10_000 if mid > 0 else None,
        "book_imbalance": (bq - aq) / (bq + aq) if bq + aq > 0 else 0.0,
    }


def compute_features(candles: Sequence[Candle], target: int, book: BookTick | None) -> dict[str, Any] | None:
    """Features of minute ``target`` from stored candles (any order/extent) and the
    book tick in force at its close; ``None`` when ``target`` has no candle."""
    window = contiguous_window(sorted(candles, key=lambda c: c.open_time), target)
    if not window:
        return None
    n = len(window)
    close = [float(c.close) for c in window]
    f: dict[str, Any] = dict.fromkeys(CANDLE_FEATURES)
    last = close[-1]
    for k in RETURN_HORIZONS:
        if n > k:
            prev = close[-1 - k]
            f[f"ret_{k}"] = last / prev - 1 if prev > 0 else None
            f[f"logret_{k}"] = _log_ratio(last, prev)
    logrets = [_log_ratio(b, a) for a, b in pairwise(close)]
    lr = [x for x in logrets if x is not None]
    if len(lr) == len(logrets):  # every price positive: the usual case
        for k in VOL_HORIZONS:
            if len(lr) >= k:
                f[f"realized_vol_{k}"] = math.sqrt(sum(x * x for x in lr[-k:]))
        if len(lr) >= NORM_WINDOW + 1:
            f["logret_1_z"] = zscore(lr[-1], lr[-1 - NORM_WINDOW : -1])
    f["rsi_14"] = rsi(close)
    m = macd(close)
    if m is not None and last > 0:
        f["macd"], f["macd_signal"], f["macd_hist"] = (x / last for x in m)
    f["bb_pct_b"] = percent_b(close)
    current = window[-1]
    volume = float(current.volume)
    if n > NORM_WINDOW:
        prior = window[-1 - NORM_WINDOW : -1]
        f["volume_z"] = zscore(volume, [float(c.volume) for c in prior])
        f["trades_z"] = zscore(float(current.number_of_trades), [float(c.number_of_trades) for c in prior])
    f["taker_buy_ratio"] = float(current.taker_buy_base_asset_volume) / volume if volume > 0 else 0.5
    if n >= NORM_WINDOW:
        recent = window[-NORM_WINDOW:]
        base = sum(float(c.volume) for c in recent)
        vwap = sum(float(c.quote_asset_volume) for c in recent) / base if base > 0 else 0.0
        f["vwap_dev"] = last / vwap - 1 if vwap > 0 else 0.0
    f.update(book_features(book))
    # Belt and braces: nothing non-finite may reach JSON, whatever the inputs were.
    for key, value in f.items():
        if isinstance(value, float) and not math.isfinite(value):
            f[key] = None
    f["warm"] = n >= WARMUP_MINUTES and all(f[k] is not None for k in CANDLE_FEATURES)
    f["window_minutes"] = n
    f["has_book"] = book is not None and f["spread_bps"] is not None
    return f
