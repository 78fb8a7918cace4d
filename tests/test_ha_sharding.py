"""Shards of the feeder (issue 18): ``SHARD_INDEX``/``SHARD_COUNT``/``REPLICAS`` as a pure
function of the symbol's name (quaint.sharding), and the settings that refuse what cannot
work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from feeder.settings import FeederSettings
from quaint.service.settings import describe_errors
from quaint.sharding import home_shard, in_shard, shard_symbols
from tests.support.feeder import running_feeder, settings_for
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.ha

SYMBOLS = [f"S{i:03d}USDT" for i in range(300)]


@pytest.mark.parametrize(("count", "replicas"), [(1, 1), (2, 1), (3, 2), (5, 2), (4, 4)])
def test_every_symbol_is_streamed_by_exactly_replicas_shards(count: int, replicas: int) -> None:
    shards = [shard_symbols(SYMBOLS, i, count, replicas) for i in range(count)]
    for sym in SYMBOLS:
        assert sum(sym in shard for shard in shards) == replicas
    # The load is split: no shard has more than twice its share (300 symbols: far from the edge).
    share = len(SYMBOLS) * replicas / count
    assert all(len(shard) <= 2 * share for shard in shards)


def test_the_home_shard_is_stable_and_independent_of_the_other_symbols() -> None:
    # Fixed values: the same on every host, Python version and run (sha256, not hash()): a
    # change here moves symbols between running shards.
    assert [home_shard(s, 7) for s in ("BTCUSDT", "ETHUSDT", "BNBUSDT")] == [4, 1, 5]
    assert [home_shard(s, 1024) for s in ("BTCUSDT", "ETHUSDT")] == [233, 366]
    alone = shard_symbols(["BTCUSDT"], home_shard("BTCUSDT", 4), 4)
    assert alone == ["BTCUSDT"]
    assert shard_symbols(["ETHUSDT", "BTCUSDT"], home_shard("BTCUSDT", 4), 4).count("BTCUSDT") == 1
    # With replicas the home shard and the next ones (mod the count).
    home = home_shard("BTCUSDT", 4)
    assert [in_shard("BTCUSDT", i, 4, 2) for i in range(4)] == [(i - home) % 4 < 2 for i in range(4)]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"shard_index": 2, "shard_count": 2}, "SHARD_INDEX must be below SHARD_COUNT"),
        ({"shard_count": 2, "replicas": 3}, "REPLICAS must be <= SHARD_COUNT"),
        ({"shard_count": 2, "symbols": "*USDT"}, "SHARD_COUNT > 1 needs SYMBOLS as names"),
    ],
)
def test_impossible_shards_are_refused_at_start(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        FeederSettings.model_validate(values)
    assert any(message in line for line in describe_errors(info.value)), describe_errors(info.value)


def test_a_shard_with_no_symbol_is_refused() -> None:
    only = "BTCUSDT"
    empty = next(i for i in range(2) if not in_shard(only, i, 2))
    with pytest.raises(ValidationError, match="gets none of SYMBOLS"):
        FeederSettings(symbols=only, shard_index=empty, shard_count=2)
    kept = FeederSettings(symbols=only, shard_index=1 - empty, shard_count=2)
    assert kept.shard_symbols(["BTCUSDT", "ETHUSDT"]) == shard_symbols(["BTCUSDT", "ETHUSDT"], 1 - empty, 2)


async def test_two_shards_stream_the_two_halves(db_url: str) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
    async with running_simulator(speed=0, symbols=symbols) as sim:
        streamed: list[list[str]] = []
        for index in range(2):
            settings = settings_for(
                db_url,
                sim.ws_url,
                symbols=symbols,
                binance_rest_url=sim.rest_url,
                shard_index=index,
                shard_count=2,
            )
            async with running_feeder(settings) as handle:
                streamed.append(handle.feeder.symbols)
                await wait_until(lambda: bool(sim.state.hub.connections), 30, "the shard connected")
    assert streamed == [shard_symbols(symbols, i, 2) for i in range(2)]
    assert sorted(streamed[0] + streamed[1]) == sorted(symbols)
