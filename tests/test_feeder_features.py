"""Feature maths against hand-computed values (pure functions)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeder.core import features as F
from quaint.binance.models import MINUTE_MS, BookTick, Candle
from tests.support.feeder import T0, candle, tick


def series(closes: list[float]) -> list[Candle]:
    return [candle(i, c) for i, c in enumerate(closes)]


def at(i: int) -> int:
    return T0 + i * MINUTE_MS


def feats(candles: list[Candle], i: int | None = None, book: BookTick | None = None) -> dict[str, Any]:
    target = at(len(candles) - 1 if i is None else i)
    out = F.compute_features(candles, target, book)
    assert out is not None
    return out


def test_returns_and_log_returns() -> None:
    closes = [100.0] * 55 + [80.0, 90.0, 95.0, 98.0, 99.0, 100.0, 101.0]  # 62 closes
    f = feats(series(closes))
    assert f["ret_1"] == pytest.approx(101 / 100 - 1)
    assert f["ret_5"] == pytest.approx(101 / 90 - 1)
    assert f["ret_15"] == pytest.approx(101 / 100 - 1)
    assert f["ret_60"] == pytest.approx(101 / 100 - 1)
    assert f["logret_1"] == pytest.approx(math.log(1.01))
    assert f["logret_5"] == pytest.approx(math.log(101 / 90))


def test_ema_is_sma_seeded() -> None:
    # period 3, alpha 0.5: seed (1+2+3)/3 = 2, then 2 + .5(4-2) = 3, 3 + .5(5-3) = 4
    assert F.ema([1, 2, 3, 4, 5], 3) == [2, 3, 4]
    assert F.ema([1, 2], 3) == []


def test_rsi_by_hand() -> None:
    # 14 changes: ten +1, four -1 -> avg gain 10/14, avg loss 4/14, RS 2.5, RSI 100 - 100/3.5
    closes = [100.0]
    for d in [1] * 10 + [-1] * 4:
        closes.append(closes[-1] + d)
    assert F.rsi(closes) == pytest.approx(100 - 100 / 3.5)
    # one Wilder step with a +2 change: gain (10/14*13 + 2)/14, loss (4/14*13)/14 -> RS 158/52
    assert F.rsi([*closes, closes[-1] + 2]) == pytest.approx(100 - 100 / (1 + 158 / 52))
    assert F.rsi(closes[:14]) is None  # 13 changes: not enough
    assert F.rsi([1.0 + i for i in range(15)]) == 100.0  # no losses
    assert F.rsi([5.0] * 15) == 50.0  # no moves


def test_macd_of_a_ramp_is_the_ema_lag_difference() -> None:
    # On a linear ramp an SMA-seeded EMA(n) lags by exactly (n-1)/2 steps, so
    # MACD = (v - 5.5) - (v - 12.5) = 7 at every close, its signal 7, histogram 0.
    closes = [100.0 + i for i in range(34)]
    line, signal, hist = F.macd(closes) or (None, None, None)
    assert line == pytest.approx(7.0)
    assert signal == pytest.approx(7.0)
    assert hist == pytest.approx(0.0, abs=1e-9)
    assert F.macd(closes[:33]) is None  # the signal needs 26 + 9 - 1 closes
    f = feats(series(closes))
    assert f["macd"] == pytest.approx(7 / 133)  # normalised by the last close
    assert f["macd_hist"] == pytest.approx(0.0, abs=1e-12)


def test_bollinger_percent_b_by_hand() -> None:
    closes = [float(i) for i in range(1, 21)]  # mean 10.5, population sd sqrt(33.25)
    sd = math.sqrt(33.25)
    assert F.percent_b(closes) == pytest.approx((20 - (10.5 - 2 * sd)) / (4 * sd))
    assert F.percent_b([7.0] * 20) == 0.5  # collapsed bands: the middle, not NaN
    assert F.percent_b(closes[:19]) is None


def test_volume_and_trade_zscores() -> None:
    # previous 60 volumes alternate 1, 3: mean 2, sd 1; the current one is 5 -> z = 3
    candles = [candle(i, 100, volume=1 + 2 * (i % 2), trades=10 + 10 * (i % 2)) for i in range(60)]
    candles.append(candle(60, 100, volume=5, trades=35))
    f = feats(candles)
    assert f["volume_z"] == pytest.approx(3.0)
    assert f["trades_z"] == pytest.approx((35 - 15) / 5)
    flat = [candle(i, 100, volume=2) for i in range(61)]
    assert feats(flat)["volume_z"] == 0.0


def test_taker_ratio_and_vwap_deviation() -> None:
    candles = [candle(i, 100, volume=2, quote=200) for i in range(59)]  # VWAP 100
    candles.append(candle(59, 101, volume=4, quote=400, taker=3))
    f = feats(candles)
    assert f["taker_buy_ratio"] == pytest.approx(0.75)
    assert f["vwap_dev"] == pytest.approx(101 / 100 - 1)
    none_traded = feats([candle(0, 100, volume=0, quote=0, taker=0)])
    assert none_traded["taker_buy_ratio"] == 0.5


def test_realized_volatility() -> None:
    closes = [100.0 if i % 2 == 0 else 101.0 for i in range(16)]  # every |log return| = ln 1.01
    f = feats(series(closes))
    assert f["realized_vol_15"] == pytest.approx(math.sqrt(15) * math.log(1.01))
    assert f["realized_vol_60"] is None


def test_book_features() -> None:
    # bid 99.99 / ask 100.01: mid 100, spread 0.02 -> 2 bps; qty 3 vs 1 -> imbalance 0.5
    f = feats(series([100.0]), book=tick(1))
    assert f["spread_bps"] == pytest.approx(2.0)
    assert f["book_imbalance"] == pytest.approx(0.5)
    assert f["has_book"] is True
    assert F.book_features(tick(1, bid_qty="0", ask_qty="0"))["book_imbalance"] == 0.0
    nobook = feats(series([100.0]))
    assert nobook["spread_bps"] is None and nobook["has_book"] is False


def test_warm_up_is_explicit() -> None:
    closes = [100.0 + math.sin(i) for i in range(F.WARMUP_MINUTES)]
    cold = feats(series(closes[:-1]))
    warm = feats(series(closes))
    assert cold["warm"] is False and cold["logret_1_z"] is None
    assert cold["window_minutes"] == F.WARMUP_MINUTES - 1
    assert warm["warm"] is True
    assert all(isinstance(warm[k], float) for k in F.CANDLE_FEATURES)
    first = feats(series(closes[:1]))
    assert first["warm"] is False and first["ret_1"] is None and first["taker_buy_ratio"] == 0.5


def test_a_missing_minute_cuts_the_window() -> None:
    candles = series([100.0 + i for i in range(70)])
    del candles[40]
    f = feats(candles, 69)
    assert f["window_minutes"] == 29 and f["warm"] is False
    assert f["ret_15"] == pytest.approx(169 / 154 - 1)
    assert f["ret_60"] is None  # would span the gap
    assert F.compute_features(candles, at(40), None) is None  # no candle, no features


def test_no_look_ahead_and_a_fixed_window() -> None:
    closes = [100.0 + 3 * math.sin(i / 3) for i in range(200)]
    candles = series(closes)
    now = feats(candles[:150], 149)
    later = feats(candles, 149)  # computed again once 50 more minutes exist
    assert now == later
    fewer = feats(candles[20:150], 149)  # older history beyond the 120-minute window
    assert fewer == now
    assert now["window_minutes"] == F.LOOKBACK_MINUTES


positive = st.decimals(min_value="0.00000001", max_value="1000000", places=8, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(positive, st.decimals(min_value=0, max_value="1000", places=8), st.integers(0, 5)),
        min_size=1,
        max_size=80,
    ),
    st.booleans(),
)
def test_never_nan_or_infinity_in_json(rows: list[tuple[Decimal, Decimal, int]], with_book: bool) -> None:
    candles = [candle(i, close, volume=vol, trades=n) for i, (close, vol, n) in enumerate(rows)]
    book = tick(1, bid="0", ask="0") if with_book else None
    f = feats(candles, book=book)
    for key, value in f.items():
        assert value is None or isinstance(value, bool | int) or math.isfinite(value), key
    orjson.dumps(f)
