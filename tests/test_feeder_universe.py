"""The feeder follows the universe at run time (issue 17), against the simulator and a real
database: SYMBOLS=*USDT resolved at start, a listing streamed without a restart, a halt and a
delisting unsubscribed, a resumed symbol subscribed again; one data_quality_logs row per change;
the simulator's count of incoming control messages never over Binance's limit."""

from __future__ import annotations

from typing import Any

import orjson

from quaint.binance.models import MINUTE_MS
from tests.support.feeder import (
    SIM_START,
    FeederHandle,
    metric_value,
    minute_of,
    quality_rows,
    sim_and_feeder,
    stored_candles,
    until_sim,
)
from tests.support.simulator import SimHandle
from tests.support.waiting import wait_for, wait_until

M0 = minute_of(SIM_START)
SCHEDULE: dict[str, Any] = {
    "listing": ["NEWUSDT@+3"],
    "halt": ["ETHUSDT@+5..+9"],
    "delisting": ["OLDUSDT@+6"],
    "book_rate": 5,
}


def subscribed(sim: SimHandle, symbol: str) -> bool:
    return sim.state.hub.has_subscribers(f"{symbol.lower()}@kline_1m")


async def events(db_url: str, kind: str) -> list[str]:
    return [r["symbol"] for r in await quality_rows(db_url, kind)]


async def test_the_feeder_follows_listings_halts_and_delistings(db_url: str) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "OLDUSDT"]
    async with sim_and_feeder(
        db_url,
        symbols,
        sim={**SCHEDULE, "symbols": [*symbols, "ETHBTC"]},
        feeder_symbols=["*USDT"],
        universe_refresh_s=1.0,
    ) as (sim, f):
        feeder = f.feeder
        assert sorted(feeder.symbols) == ["BTCUSDT", "ETHUSDT", "OLDUSDT"]  # ETHBTC: not *USDT
        assert not subscribed(sim, "ETHBTC")

        # The listing: subscribed on the open connection, streamed, stored as the exchange has it.
        async def new_stored() -> bool:
            got = await stored_candles(db_url, "NEWUSDT", M0, M0 + 60 * MINUTE_MS)
            return len(got) >= 2

        await wait_for(new_stored, 60, "the new listing's candles stored")
        assert len(feeder.slots) == 1  # it had room: SUBSCRIBE, not a new connection
        got = await stored_candles(db_url, "NEWUSDT", M0, M0 + 60 * MINUTE_MS)
        assert got == sim.truth("NEWUSDT", got[0].open_time, got[-1].open_time + MINUTE_MS)
        assert got[0].open_time >= M0 + 3 * MINUTE_MS

        # The halt and the delisting: unsubscribed; then the halt ends and ETHUSDT is back.
        await wait_until(lambda: not subscribed(sim, "OLDUSDT"), 60, "the delisted symbol unsubscribed")
        await until_sim(sim, M0 + 10 * MINUTE_MS)
        await wait_until(lambda: subscribed(sim, "ETHUSDT"), 60, "the resumed symbol subscribed again")

        async def eth_back() -> bool:
            got = await stored_candles(db_url, "ETHUSDT", M0 + 9 * MINUTE_MS, M0 + 60 * MINUTE_MS)
            return len(got) >= 2

        await wait_for(eth_back, 60, "ETHUSDT's candles after the halt stored")
        halted = await stored_candles(db_url, "ETHUSDT", M0 + 5 * MINUTE_MS, M0 + 9 * MINUTE_MS)
        assert halted == []
        assert sorted(feeder.symbols) == ["BTCUSDT", "ETHUSDT", "NEWUSDT"]

        async def all_events_written() -> bool:
            return await events(db_url, "symbol_resumed") == ["ETHUSDT"]

        await wait_for(all_events_written, 60, "the universe events written")
        assert await events(db_url, "symbol_listed") == ["NEWUSDT"]
        assert await events(db_url, "symbol_halted") == ["ETHUSDT"]
        assert await events(db_url, "symbol_delisted") == ["OLDUSDT"]
        await check_metrics(f)
    stats = sim.stats
    assert (
        stats.ws_control_messages >= 3
    )  # SUBSCRIBE (listing), UNSUBSCRIBE x2 or batched, SUBSCRIBE (resume)
    assert stats.ws_closed_by_reason["too many messages"] == 0
    assert stats.ws_incoming_peak_1s <= 5
    assert stats.ws_total == 1  # every change on the one open connection


async def check_metrics(f: FeederHandle) -> None:
    status, body = await f.get("/metrics")
    assert status == 200
    text = body.decode()
    for kind in ("listed", "halted", "resumed", "delisted"):
        assert metric_value(text, "feeder_universe_changes_total", event=kind) == 1
    assert metric_value(text, "feeder_symbols") == 3
    assert metric_value(text, "feeder_ws_control_messages_total", method="subscribe") >= 2
    status, body = await f.get("/health?symbol=NEWUSDT")
    health = orjson.loads(body)
    assert list(health["symbols"]) == ["NEWUSDT"]  # the detail asked for
    assert sum(health["symbol_states"].values()) == 3


async def test_a_listing_without_room_gets_a_connection_of_its_own(db_url: str) -> None:
    # One symbol per connection (2 streams): the listing cannot go on an open one.
    async with sim_and_feeder(
        db_url,
        ["BTCUSDT", "ETHUSDT"],
        sim={"listing": ["NEWUSDT@+2"], "book_rate": 5},
        feeder_symbols=["*USDT"],
        universe_refresh_s=1.0,
        streams_per_connection=2,
    ) as (sim, f):
        assert len(f.feeder.slots) == 2

        async def new_stored() -> bool:
            return bool(await stored_candles(db_url, "NEWUSDT", M0, M0 + 60 * MINUTE_MS))

        await wait_for(new_stored, 60, "the new listing's candles stored")
        assert len(f.feeder.slots) == 3 and f.feeder.slots[2].symbols == ["NEWUSDT"]
        got = await stored_candles(db_url, "NEWUSDT", M0, M0 + 60 * MINUTE_MS)
        assert got == sim.truth("NEWUSDT", got[0].open_time, got[-1].open_time + MINUTE_MS)
        assert sim.stats.ws_total == 3 and sim.stats.ws_control_messages == 0
        assert 2 in f.feeder.slot_of.values() and f.feeder.slot_of["NEWUSDT"] == 2
