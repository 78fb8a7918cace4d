"""Unit tests of the simulator's market model (sans-I/O, no event loop)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quaint.binance.encode import format_decimal, rest_kline_row
from quaint.binance.models import MINUTE_MS, Candle
from quaint.binance.parse import check_candle, parse_rest_kline
from quaint.binance.symbols import make_profile, split_symbol
from simulator.market import CHECKPOINTS, MarketModel
from simulator.replay import ReplayError, load_csv

T0 = 1_700_000_040_000  # a minute boundary (2023-11-14)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "FTMUSDT", "ETHBTC", "ZZZUSDT"]
minutes = st.integers(min_value=T0 // MINUTE_MS - 600_000, max_value=T0 // MINUTE_MS + 600_000)


@pytest.fixture(scope="module")
def model() -> MarketModel:
    return MarketModel(seed=7, symbols=SYMBOLS)


def test_same_seed_same_candles_different_seed_different(model: MarketModel) -> None:
    again = MarketModel(seed=7, symbols=SYMBOLS)
    other = MarketModel(seed=8, symbols=SYMBOLS)
    for symbol in SYMBOLS:
        assert model.candle(symbol, T0) == again.candle(symbol, T0)
        assert model.candle(symbol, T0) != other.candle(symbol, T0)


def test_batch_equals_single_minute_evaluation(model: MarketModel) -> None:
    # Pure function of the minute: a REST page computed in one batch must equal the
    # candles computed one by one (the live stream's way), bit for bit.
    for symbol in ("BTCUSDT", "FTMUSDT"):
        batch = model.candles(symbol, T0 - 37 * MINUTE_MS, 700)
        fresh = MarketModel(seed=7, symbols=SYMBOLS)
        for i in range(0, 700, 53):
            assert batch[i] == fresh.candle(symbol, T0 + (i - 37) * MINUTE_MS)


@settings(max_examples=200, deadline=None)
@given(minute=minutes, symbol=st.sampled_from(SYMBOLS))
def test_candles_are_consistent_and_continuous(minute: int, symbol: str) -> None:
    model = MarketModel(seed=3, symbols=SYMBOLS)
    first, second = model.candles(symbol, minute * MINUTE_MS, 2)
    assert first is not None and second is not None
    check_candle(first)  # the project's own consistency rule (low <= open/close <= high)
    assert first.close == second.open  # continuous: each candle opens at the previous close
    assert first.close_time == first.open_time + MINUTE_MS - 1
    assert first.number_of_trades >= 1
    assert (
        Decimal(0) < first.taker_buy_base_asset_volume <= first.volume
        or first.taker_buy_base_asset_volume == 0
    )
    assert first.taker_buy_quote_asset_volume <= first.quote_asset_volume
    # quote volume = volume x a volume-weighted price inside the candle's range
    assert first.volume * first.low <= first.quote_asset_volume + Decimal("1e-8") * 2
    assert first.quote_asset_volume <= first.volume * first.high
    prof = model.profiles[symbol]
    for price in (first.open, first.high, first.low, first.close):
        assert price.scaleb(8) % prof.tick == 0
    for qty in (first.volume, first.taker_buy_base_asset_volume):
        assert qty.scaleb(8) % prof.step == 0


def test_realistic_magnitudes(model: MarketModel) -> None:
    def close(symbol: str) -> Decimal:
        candle = model.candle(symbol, T0)
        assert candle is not None
        return candle.close

    assert Decimal(10_000) < close("BTCUSDT") < Decimal(200_000)
    assert Decimal(500) < close("ETHUSDT") < Decimal(10_000)
    assert Decimal("0.005") < close("ETHBTC") < Decimal("0.5")
    btc = model.candle("BTCUSDT", T0)
    assert btc is not None and Decimal(1) < btc.volume < Decimal(1_000)
    assert model.profiles["BTCUSDT"].tick == 1_000_000  # 0.01 USDT


def test_price_wanders_but_stays_plausible_over_history(model: MarketModel) -> None:
    closes = []
    for day in range(0, 400, 10):
        candle = model.candle("BTCUSDT", T0 - day * 86_400_000)
        assert candle is not None
        closes.append(candle.close)
    assert max(closes) / min(closes) > Decimal("1.05")  # it moves...
    assert max(closes) / min(closes) < Decimal(4)  # ...but stays one market
    minute_moves = [abs(c.close / c.open - 1) for c in model.candles("BTCUSDT", T0, 500) if c is not None]
    assert max(minute_moves) < Decimal("0.02")  # no absurd 1-minute jumps


def test_exact_eight_decimal_wire_format(model: MarketModel) -> None:
    candle = model.candle("FTMUSDT", T0)
    assert candle is not None
    row = rest_kline_row(candle)
    for text in row[1:6] + row[7:8] + row[9:11]:
        assert isinstance(text, str)
        whole, _, frac = text.partition(".")
        assert len(frac) == 8 and whole.isdigit()
    # parse(encode(x)) == x: nothing is lost between the model and the wire.
    assert parse_rest_kline(row, "FTMUSDT") == candle
    assert format_decimal(candle.open) == row[1]


def test_partials_accumulate_to_the_final_candle(model: MarketModel) -> None:
    final = model.candle("BTCUSDT", T0)
    previous = None
    for j in range(CHECKPOINTS + 1):
        found = model.partial("BTCUSDT", T0, j)
        assert found is not None
        candle, first, last = found
        check_candle(candle)
        assert candle.open == final.open if final else False
        if j == 0:
            assert candle.number_of_trades == 0 and (first, last) == (-1, -1)
        else:
            assert last - first + 1 == candle.number_of_trades
        if previous is not None:
            assert candle.high >= previous.high and candle.low <= previous.low
            assert candle.volume >= previous.volume and candle.number_of_trades >= previous.number_of_trades
            assert candle.quote_asset_volume >= previous.quote_asset_volume
        previous = candle
    assert previous == final


def test_book_ticks_straddle_the_last_price(model: MarketModel) -> None:
    for i in range(200):
        at = T0 + i * 731
        tick = model.book("ETHUSDT", at, 1_000 + i)
        last = model.last_price("ETHUSDT", at)
        assert tick is not None and last is not None
        assert tick.bid_price < tick.ask_price
        assert tick.bid_price <= Decimal(last).scaleb(-8) + Decimal("0.01")
        assert tick.bid_qty > 0 and tick.ask_qty > 0


def test_profiles_split_symbols() -> None:
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert split_symbol("BTCFDUSD") == ("BTC", "FDUSD")
    assert split_symbol("SOLUSDT") == ("SOL", "USDT")
    prof = make_profile(1, "ZZZUSDT")
    assert prof == make_profile(1, "ZZZUSDT")
    assert 0.001 <= prof.base_price <= 100


# Rows in the layout of data.binance.vision spot archives (ms before 2025, µs after).
CSV_MS = (
    "1704067200000,42283.58000000,42298.62000000,42261.02000000,42298.61000000,35.92724000,"
    "1704067259999,1519032.50584910,1327,17.95574000,759213.43390310,0\n"
    "1704067260000,42298.62000000,42320.00000000,42298.61000000,42320.00000000,21.96730000,"
    "1704067319999,929256.36853450,1208,16.09100000,680696.71453950,0\n"
)
CSV_US = (
    "1735689600000000,93576.00000000,93610.93000000,93537.50000000,93610.93000000,8.21827000,"
    "1735689659999999,768978.15899800,2278,3.84383000,359679.39813370,0\n"
)


def test_replay_csv_ms_and_us(tmp_path: Path) -> None:
    ms_file, us_file = tmp_path / "ms.csv", tmp_path / "us.csv"
    ms_file.write_text("open_time,open,high,low,close,volume,close_time,q,n,V,Q,ignore\n" + CSV_MS)
    us_file.write_text(CSV_US)
    rows = load_csv(ms_file, "BTCUSDT")
    assert sorted(rows) == [1704067200000, 1704067260000]
    assert rows[1704067200000].open == Decimal("42283.58000000")
    us_rows = load_csv(us_file, "BTCUSDT")
    assert list(us_rows) == [1735689600000] and us_rows[1735689600000].close_time == 1735689659999
    model = MarketModel(seed=0, symbols=["BTCUSDT"], replay={"BTCUSDT": rows})
    assert model.candle("BTCUSDT", 1704067200000) == rows[1704067200000]
    assert model.candle("BTCUSDT", 1704067320000) is None  # outside the file: no data
    partial = model.partial("BTCUSDT", 1704067260000, 10)
    assert partial is not None
    check_candle(partial[0])
    first_id = 1704067260000 // MINUTE_MS * 1_000_000
    assert model.partial("BTCUSDT", 1704067260000, CHECKPOINTS) == (
        rows[1704067260000],
        first_id,
        first_id + 1207,
    )


def test_replay_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("1704067200000,1,2,3\n")
    with pytest.raises(ReplayError, match="12 columns"):
        load_csv(bad, "BTCUSDT")
    inverted = tmp_path / "inv.csv"
    inverted.write_text(CSV_MS.replace("42261.02000000", "42300.00000000", 1))
    with pytest.raises(ReplayError, match="outside"):
        load_csv(inverted, "BTCUSDT")


def test_candle_type_is_the_shared_model(model: MarketModel) -> None:
    assert isinstance(model.candle("BTCUSDT", T0), Candle)
