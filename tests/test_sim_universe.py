"""The simulator at the market's size (issue 17): --symbol-count, skewed book rates, scheduled
listings, halts and delistings in exchangeInfo, REST, truth and the streams, and the counts of
incoming control messages."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect

from quaint.binance.models import MINUTE_MS, KlineEvent
from quaint.binance.parse import decode_frame
from quaint.binance.universe import ALL, parse_listed, parse_spec, resolve
from simulator.__main__ import load_settings
from simulator.app import book_rounds
from simulator.listings import MAX_BOOK_PERIOD, book_period
from simulator.settings import SimSettings
from tests.support.simulator import SimHandle, running_simulator
from tests.support.waiting import wait_until

START = 1_700_000_040_000 + 1_000  # one second into a minute
M0 = START - START % MINUTE_MS


async def exchange_info(sim: SimHandle, query: str = "") -> tuple[int, dict[str, object]]:
    url = f"{sim.rest_url}/api/v3/exchangeInfo{query}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, orjson.loads(await resp.read())


def test_symbol_count_lists_that_many_distinct_valid_symbols() -> None:
    s = SimSettings.without_env(symbol_count=2000, symbols=["BTCUSDT", "ETHUSDT"])
    assert len(s.symbols) == len(set(s.symbols)) == 2000
    assert s.symbols[:2] == ["BTCUSDT", "ETHUSDT"]
    quotes = Counter(
        next(q for q in ("FDUSD", "USDT", "USDC", "BTC", "TRY") if x.endswith(q)) for x in s.symbols
    )
    assert quotes["USDT"] > quotes["FDUSD"] > 0 and quotes["BTC"] > 0


def test_book_rates_are_skewed() -> None:
    assert [book_period(r) for r in (0, 1, 2)] == [1, 1, 1]
    assert book_period(1999) == MAX_BOOK_PERIOD
    symbols = [f"S{i}USDT" for i in range(2000)]
    rounds = book_rounds(symbols, skew=True)
    updates = Counter(sym for r in rounds for sym, _ in r)
    assert updates["S0USDT"] == MAX_BOOK_PERIOD  # every round
    assert updates["S1999USDT"] == 1  # once in MAX_BOOK_PERIOD rounds
    # Most symbols are rare: the busiest 1% make more updates than the rarest half.
    ranked = [updates[s] for s in symbols]
    assert sum(ranked[:20]) > sum(ranked[1000:])
    assert book_rounds(symbols, skew=False) == [[(s, f"{s.lower()}@bookTicker") for s in symbols]]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--listing", "NEWUSDT"], "SYMBOL@TIME"),
        (["--listing", "NEWUSDT@soon"], "bad time"),
        (["--halt", "ETHUSDT@+5"], "START..END"),
    ],
)
def test_bad_schedules_are_one_clear_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


async def test_two_thousand_symbols_in_exchange_info() -> None:
    async with running_simulator(speed=0, start=START, symbol_count=2000, book_rate=0) as sim:
        status, body = await exchange_info(sim)
        assert status == 200
        listed = parse_listed(body)
        assert len(listed) == 2000
        assert len(resolve(parse_spec([ALL]), listed).trading) == 2000
        usdt = resolve(parse_spec(["*USDT"]), listed).trading
        assert usdt == {x for x in sim.state.market.symbols if x.endswith("USDT")}


async def test_listing_halt_and_delisting_everywhere() -> None:
    schedule: dict[str, Any] = {
        "listing": ["NEWUSDT@+3"],
        "halt": ["ETHUSDT@+2..+4"],
        "delisting": ["OLDUSDT@+5"],
    }
    async with running_simulator(speed=0, start=START, book_rate=0, **schedule) as sim:

        async def statuses() -> dict[str, str]:
            _, body = await exchange_info(sim)
            return {x.symbol: x.status for x in parse_listed(body)}

        assert await statuses() == {"BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "OLDUSDT": "TRADING"}
        code, _ = await exchange_info(sim, "?symbol=NEWUSDT")
        assert code == 400  # not listed yet: an invalid symbol, as on Binance
        sim.clock.set(advance_ms=2 * MINUTE_MS)
        assert (await statuses())["ETHUSDT"] == "BREAK"
        sim.clock.set(advance_ms=MINUTE_MS)
        assert (await statuses())["NEWUSDT"] == "TRADING"
        sim.clock.set(advance_ms=3 * MINUTE_MS)  # +6: halt over, OLDUSDT gone
        assert await statuses() == {"BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "NEWUSDT": "TRADING"}

        def minutes(symbol: str) -> list[int]:
            return [
                (c.open_time - M0) // MINUTE_MS
                for c in sim.truth(symbol, M0 - 3 * MINUTE_MS, M0 + 6 * MINUTE_MS)
            ]

        assert minutes("NEWUSDT") == [3, 4, 5]
        assert minutes("ETHUSDT") == [-3, -2, -1, 0, 1, 4, 5]
        assert minutes("OLDUSDT") == [-3, -2, -1, 0, 1, 2, 3, 4]
        async with aiohttp.ClientSession() as session:
            url = f"{sim.rest_url}/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime={M0}&limit=10"
            async with session.get(url) as resp:
                rows = orjson.loads(await resp.read())
        assert [(r[0] - M0) // MINUTE_MS for r in rows] == [0, 1, 4, 5, 6]  # 6: the open minute


async def test_a_listing_streams_from_its_first_minute_on_an_open_subscription() -> None:
    sim_args: dict[str, Any] = {"speed": 0, "start": START, "book_rate": 20, "listing": ["NEWUSDT@+2"]}
    async with running_simulator(**sim_args) as sim, connect(sim.ws_url + "/stream") as ws:
        streams = ["newusdt@kline_1m", "newusdt@bookTicker"]
        await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}).decode())
        assert orjson.loads(await ws.recv()) == {"result": None, "id": 1}
        sim.clock.set(speed=60)
        closed: list[int] = []
        books_before = 0
        async with asyncio.timeout(60):
            while len(closed) < 2:
                event = decode_frame(await ws.recv(), 0).event
                if not isinstance(event, KlineEvent):
                    books_before += not closed and sim.clock.now_ms() < M0 + 2 * MINUTE_MS - 1000
                    continue
                open_time = event.candle.open_time
                assert open_time >= M0 + 2 * MINUTE_MS
                if event.is_closed:
                    closed.append((open_time - M0) // MINUTE_MS)
        assert closed == [2, 3]
        assert books_before == 0


async def test_control_messages_are_counted_and_the_peak_kept() -> None:
    async with running_simulator(speed=0, start=START, book_rate=0) as sim:
        async with connect(sim.ws_url + "/ws") as ws:
            for i in range(3):
                await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
                await ws.recv()
        await wait_until(lambda: sim.stats.ws_control_messages == 3, 30, "three control messages counted")
        assert 1 <= sim.stats.ws_incoming_peak_1s <= 3
        assert sim.stats.ws_closed_by_reason["too many messages"] == 0
