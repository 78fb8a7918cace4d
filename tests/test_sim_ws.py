"""WebSocket behaviour over real sockets: paths, control messages, wire shapes and
every stream fault. Timings are shortened through settings; waits are conditions
with deadlines, never bare sleeps."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from quaint.binance.errors import ProtocolError
from quaint.binance.models import (
    MINUTE_MS,
    ApiError,
    BookTick,
    KlineEvent,
    ServerShutdown,
    SubscriptionResult,
)
from quaint.binance.parse import decode_frame
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_until

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
START = 1_700_000_040_000 + 1_000  # one second into a minute


async def collect(ws: ClientConnection, done: Callable[[list[str]], bool], within: float = 30.0) -> list[str]:
    """Receive frames until ``done(frames)`` or the deadline (then fail)."""
    frames: list[str] = []
    async with asyncio.timeout(within):
        while not done(frames):
            raw = await ws.recv()
            assert isinstance(raw, str)
            frames.append(raw)
    return frames


async def closed_by_server(ws: ClientConnection, within: float = 5.0) -> ConnectionClosed:
    """Drain until the server closes the connection; return how it did."""
    return (await frames_until_closed(ws, within))[1]


async def frames_until_closed(
    ws: ClientConnection, within: float = 30.0
) -> tuple[list[str], ConnectionClosed]:
    """Every frame received until the server closes, and the closing exception."""
    frames: list[str] = []
    async with asyncio.timeout(within):
        try:
            while True:
                frames.append(str(await ws.recv()))
        except ConnectionClosed as exc:
            return frames, exc


def _ws(url: str, **kwargs: Any) -> connect:
    return connect(url, proxy=None, compression=None, **kwargs)


def _shape(value: Any) -> Any:
    """Keys and value types of a JSON document, recursively."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


def _events(frames: list[str]) -> list[Any]:
    return [decode_frame(f, 0).event for f in frames]


async def test_combined_stream_frames_parse_and_match_real_captures() -> None:
    real_closed = json.loads((FIXTURES / "ws_combined_kline_1m_closed.json").read_text())
    real_open = json.loads((FIXTURES / "ws_combined_kline_1m_open_last_before_close.json").read_text())
    real_book = json.loads((FIXTURES / "ws_combined_bookTicker.json").read_text())
    async with running_simulator(speed=60, start=START, seed=7) as sim:
        url = sim.ws_url + "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m/btcusdt@bookTicker"
        async with _ws(url) as ws:
            frames = await collect(ws, lambda fs: sum('"x":true' in f for f in fs) >= 4, within=30)
    kinds: dict[str, list[dict[str, Any]]] = {"closed": [], "open": [], "book": []}
    for raw in frames:
        frame = decode_frame(raw, 0)  # every frame parses with the project's own parser
        doc = json.loads(raw)
        if isinstance(frame.event, KlineEvent):
            kinds["closed" if frame.event.is_closed else "open"].append(doc)
            assert frame.stream == f"{frame.event.symbol.lower()}@kline_1m"
        else:
            assert isinstance(frame.event, BookTick) and frame.stream == "btcusdt@bookTicker"
            kinds["book"].append(doc)
    assert all(kinds.values())
    for doc in kinds["closed"]:
        assert _shape(doc) == _shape(real_closed)
        assert list(doc["data"]["k"]) == list(real_closed["data"]["k"])  # same key order too
        assert doc["data"]["E"] - doc["data"]["k"]["T"] == 1401  # like the capture's ~1.39 s
        closed = decode_frame(json.dumps(doc), 0).event
        assert isinstance(closed, KlineEvent)
        assert [closed.candle] == sim.truth(
            closed.symbol, closed.candle.open_time, closed.candle.open_time + 1
        )
    for doc in kinds["open"]:
        assert _shape(doc) == _shape(real_open)
    for doc in kinds["book"]:
        assert _shape(doc) == _shape(real_book) and "E" not in doc["data"]
    ids = [d["data"]["u"] for d in kinds["book"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_raw_paths_subscribe_list_unsubscribe() -> None:
    async with running_simulator(speed=60, start=START, book_rate=50) as sim:
        async with _ws(sim.ws_url + "/ws/ethusdt@bookTicker") as ws:
            frames = await collect(ws, lambda fs: len(fs) >= 3)
            assert all(isinstance(e, BookTick) and e.symbol == "ETHUSDT" for e in _events(frames))
            assert all(decode_frame(f, 0).stream is None for f in frames)  # raw: not wrapped
        async with _ws(sim.ws_url + "/ws") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":7}')
            frames = await collect(ws, lambda fs: len(fs) >= 4)
            assert json.loads(frames[0]) == {"result": None, "id": 7}
            assert isinstance(_events(frames)[1], BookTick)
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":8}')
            frames = await collect(ws, lambda fs: '"id":8' in (fs[-1] if fs else ""))
            assert _events(frames)[-1] == SubscriptionResult(id=8, result=["btcusdt@bookTicker"])
            await ws.send('{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":9}')
            await collect(ws, lambda fs: '"id":9' in (fs[-1] if fs else ""))
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":10}')
            after = await collect(ws, lambda fs: len(fs) >= 1)
            assert json.loads(after[0]) == {"result": [], "id": 10}  # nothing arrived in between
        async with _ws(sim.ws_url + "/ws") as ws:  # a new connection: at most 5 messages a second
            await ws.send('{"method":"SET_PROPERTY","params":["combined",true],"id":11}')
            await ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":12}')
            answers = await collect(ws, lambda fs: len(fs) >= 2)
            expected = [SubscriptionResult(id=11, result=None), SubscriptionResult(id=12, result=True)]
            assert _events(answers) == expected
        async with _ws(sim.ws_url + "/stream") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":"abc-1"}')
            frames = await collect(ws, lambda fs: len(fs) >= 2)
            assert json.loads(frames[0]) == {"result": None, "id": "abc-1"}
            assert decode_frame(frames[1], 0).stream == "btcusdt@kline_1m"  # /stream: wrapped
        assert sim.stats.ws_total == 4


async def test_unknown_streams_are_errors_not_crashes() -> None:
    async with running_simulator(speed=0, start=START, max_streams=3) as sim:
        with pytest.raises(InvalidStatus) as info:
            async with _ws(sim.ws_url + "/stream?streams=btcusdt@kline_1m/dogeusdt@kline_1m"):
                pass
        assert info.value.response.status_code == 400
        with pytest.raises(InvalidStatus):
            async with _ws(sim.ws_url + "/ws/btcusdt@depth"):
                pass
        names = "/".join(f"{s}@{k}" for s in ("btcusdt", "ethusdt") for k in ("kline_1m", "bookTicker"))
        with pytest.raises(InvalidStatus):  # 4 streams > max_streams=3 in the URL
            async with _ws(sim.ws_url + "/stream?streams=" + names):
                pass
        async with _ws(sim.ws_url + "/ws") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["foo@bar"],"id":1}')
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            frames = await collect(ws, lambda fs: len(fs) >= 2)
            error, listing = _events(frames)
            assert isinstance(error, ApiError) and error.code == 2
            assert json.loads(frames[0])["id"] == 1
            assert listing == SubscriptionResult(id=2, result=[])  # still connected and serving


async def test_more_than_1024_streams_is_an_error() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(513)]  # 1026 distinct streams exist
    async with running_simulator(speed=0, start=START, symbols=symbols, book_rate=0) as sim:
        names = [f"{s.lower()}@{k}" for s in symbols for k in ("kline_1m", "bookTicker")]
        async with _ws(sim.ws_url + "/ws") as ws:
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": names[:1024], "id": 1}).decode())
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": names[1024:1025], "id": 2}).decode())
            frames = await collect(ws, lambda fs: len(fs) >= 2)
            assert json.loads(frames[0]) == {"result": None, "id": 1}
            error = _events(frames)[1]
            assert isinstance(error, ApiError) and error.code == 2 and "1024" in error.msg


async def test_more_than_five_messages_per_second_closes_1008() -> None:
    async with running_simulator(speed=0, start=START) as sim:
        async with _ws(sim.ws_url + "/ws") as ws:
            for i in range(6):
                await ws.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
            closed = await closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1008
        await sim.wait_for(lambda: sim.stats.ws_closed_by_reason["too many messages"] == 1)


async def test_ping_every_interval_and_pong_timeout() -> None:
    # A client that answers pings (websockets does) stays connected, while one that
    # never pongs is cut off after the timeout. Pongs count against the 5 incoming
    # messages per second: pings 0.3 s apart keep the answering client under it.
    async with (
        running_simulator(speed=0, start=START, ping_interval_s=0.3, pong_timeout_s=0.7) as sim,
        _ws(sim.ws_url + "/ws/btcusdt@kline_1m") as good,
    ):
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(sim.ws_url + "/ws/btcusdt@kline_1m", autoping=False) as bad,
        ):
            started = time.monotonic()
            pings = 0
            async for msg in bad:
                if msg.type == aiohttp.WSMsgType.PING:
                    pings += 1
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
            elapsed = time.monotonic() - started
        assert pings >= 2 and elapsed >= 0.7  # not cut before the pong timeout
        await sim.wait_for(lambda: sim.stats.ws_closed_by_reason["pong timeout"] == 1)
        assert sim.stats.ws_current == 1
        await good.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
        assert json.loads(await good.recv())["id"] == 1


@pytest.mark.parametrize("notice", [True, False])
async def test_connection_age_limit_with_and_without_shutdown_notice(notice: bool) -> None:
    async with running_simulator(
        speed=1, start=START, max_connection_age_s=0.3, shutdown_notice=notice, shutdown_grace_s=0.2
    ) as sim:
        async with _ws(sim.ws_url + "/ws/btcusdt@kline_1m") as ws:
            started = time.monotonic()
            frames, closed = await frames_until_closed(ws)
        elapsed = time.monotonic() - started
        assert closed.rcvd is not None and closed.rcvd.code == 1001
        shutdowns = [e for e in _events(frames) if isinstance(e, ServerShutdown)]
        if notice:
            assert len(shutdowns) == 1 and abs(shutdowns[0].event_time - sim.clock.now_ms()) < 5_000
            assert elapsed >= 0.45
        else:
            assert shutdowns == [] and elapsed >= 0.25


async def test_drop_all_connections() -> None:
    async with running_simulator(speed=60, start=START) as sim:
        async with (
            _ws(sim.ws_url + "/ws/btcusdt@bookTicker") as a,
            _ws(sim.ws_url + "/ws/ethusdt@bookTicker") as b,
        ):
            await collect(a, lambda fs: len(fs) >= 1)
            async with (
                aiohttp.ClientSession() as http,
                http.post(sim.rest_url + "/_sim/drop", json={}) as resp,
            ):
                assert await resp.json() == {"dropped": 2}
            for ws in (a, b):
                closed = await closed_by_server(ws)
                assert closed.rcvd is None  # abrupt: no close frame, as in a network failure
        await sim.wait_for(lambda: sim.stats.ws_current == 0)
        async with _ws(sim.ws_url + "/ws/btcusdt@bookTicker") as c:
            assert sim.faults.drop_connections("close") == 1
            closed = await closed_by_server(c)
            assert closed.rcvd is not None and closed.rcvd.code == 1001


async def test_stall_keeps_the_socket_open_and_silent() -> None:
    async with (
        running_simulator(speed=60, start=START, book_rate=50) as sim,
        _ws(sim.ws_url + "/ws/btcusdt@bookTicker") as ws,
    ):
        await collect(ws, lambda fs: len(fs) >= 2)
        stall_start = time.monotonic()
        sim.faults.stall(0.6, sim.clock.wall())
        # Frames already in flight may still arrive at first; then the line goes
        # quiet until the stall ends, and frames resume on the same socket.
        times: list[float] = []
        async with asyncio.timeout(5):
            while not times or times[-1] < stall_start + 0.7:
                await ws.recv()
                times.append(time.monotonic())
        assert not [t for t in times if stall_start + 0.1 < t < stall_start + 0.55]
        assert sim.stats.ws_current == 1  # never disconnected


async def test_feed_gap_drops_closed_klines_but_rest_has_them() -> None:
    minute = START - START % MINUTE_MS
    async with running_simulator(speed=600, start=START, feed_gap=["+1..+3"], symbols=["BTCUSDT"]) as sim:
        async with _ws(sim.ws_url + "/ws/btcusdt@kline_1m") as ws:
            frames = await collect(
                ws, lambda fs: bool(fs) and f'"t":{minute + 5 * MINUTE_MS}' in fs[-1] and '"x":true' in fs[-1]
            )
        # The minute before START closed 1 s before it: its late final may come too (by design, see
        # simulator.schedule), depending on whether this client subscribed in time. Outside the window.
        finals = [
            e.candle
            for e in _events(frames)
            if isinstance(e, KlineEvent) and e.is_closed and e.candle.open_time >= minute
        ]
        assert [c.open_time for c in finals] == [minute + i * MINUTE_MS for i in (0, 3, 4, 5)]
        truth = sim.truth("BTCUSDT", minute, minute + 6 * MINUTE_MS)
        assert (
            len(truth) == 6 and [t for t in truth if t.open_time in {c.open_time for c in finals}] == finals
        )


async def test_outage_minutes_are_absent_from_stream_and_rest() -> None:
    minute = START - START % MINUTE_MS
    async with running_simulator(
        speed=600, start=START, outage=["+1..+2"], symbols=["BTCUSDT"], book_rate=0
    ) as sim:
        async with _ws(sim.ws_url + "/ws/btcusdt@kline_1m") as ws:
            frames = await collect(
                ws, lambda fs: bool(fs) and f'"t":{minute + 3 * MINUTE_MS}' in fs[-1] and '"x":true' in fs[-1]
            )
        # Only the window: the minute before START may get its late final (see above).
        events = [e for e in _events(frames) if isinstance(e, KlineEvent) and e.candle.open_time >= minute]
        assert all(e.candle.open_time != minute + MINUTE_MS for e in events)  # no partial either
        assert [e.candle.open_time for e in events if e.is_closed] == [
            minute,
            minute + 2 * MINUTE_MS,
            minute + 3 * MINUTE_MS,
        ]
        truth = sim.truth("BTCUSDT", minute, minute + 4 * MINUTE_MS)
        assert [c.open_time for c in truth] == [minute, minute + 2 * MINUTE_MS, minute + 3 * MINUTE_MS]


async def test_duplicates_and_out_of_order_messages() -> None:
    async with (
        running_simulator(speed=60, start=START, book_rate=50) as sim,
        _ws(sim.ws_url + "/ws/btcusdt@bookTicker") as ws,
    ):
        await collect(ws, lambda fs: len(fs) >= 1)
        sim.faults.set_message_fault("duplicate", {"count": 2, "kind": "bookTicker"})
        frames = await collect(ws, lambda fs: len(fs) >= 8)
        ids = [json.loads(f)["u"] for f in frames]
        assert sum(a == b for a, b in itertools.pairwise(ids)) == 2
        sim.faults.set_message_fault("reorder", {"count": 1, "kind": "bookTicker"})
        frames = await collect(ws, lambda fs: len(fs) >= 8)
        ids = [json.loads(f)["u"] for f in frames]
        assert sum(b < a for a, b in itertools.pairwise(ids)) == 1 and len(set(ids)) == len(ids)


async def test_malformed_frames_are_interleaved() -> None:
    async with (
        running_simulator(speed=60, start=START, book_rate=50, malformed=3) as sim,
        _ws(sim.ws_url + "/stream?streams=btcusdt@bookTicker") as ws,
    ):
        frames = await collect(ws, lambda fs: len(fs) >= 12)
    bad = 0
    for raw in frames:
        try:
            decode_frame(raw, 0)
        except ProtocolError:
            bad += 1
    assert bad == 3 and sim.stats.ws_sent_by_kind["bookTicker"] >= 12


async def test_server_shutdown_notice_via_control_api() -> None:
    async with running_simulator(speed=1, start=START) as sim:
        async with _ws(sim.ws_url + "/stream?streams=btcusdt@kline_1m") as ws:
            url = sim.rest_url + "/_sim/server_shutdown"
            async with aiohttp.ClientSession() as http, http.post(url, json={"grace_s": 0.1}) as resp:
                assert await resp.json() == {"notified": 1}
            frames, closed = await frames_until_closed(ws)
        assert any(isinstance(e, ServerShutdown) for e in _events(frames))
        assert closed.rcvd is not None and closed.rcvd.code == 1001


async def test_firehose_sends_as_fast_as_the_socket_takes() -> None:
    async with running_simulator(speed=60, start=START, firehose=True) as sim:
        # max_queue=None: a bounded client queue stops reading under a flood, so the
        # client would never see the server's close frame (websockets' flow control).
        url = sim.ws_url + "/stream?streams=btcusdt@bookTicker/ethusdt@kline_1m"
        async with _ws(url, max_queue=None) as ws:
            # At the normal rate (10 bookTicker frames/s per symbol) 3000 frames would take
            # minutes: collecting them within the wait proves the firehose. Its speed is a
            # figure of `python -m bench ingest`, not an assertion.
            frames = await collect(ws, lambda fs: len(fs) >= 3000, within=60)
    events = _events(frames)  # every firehose frame parses too
    ids = [e.update_id for e in events if isinstance(e, BookTick)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and len(ids) > 1000
    assert any(isinstance(e, KlineEvent) for e in events)


@pytest.mark.parametrize("per_kline", [1, 20])
async def test_firehose_mix_is_the_configured_ratio(per_kline: int) -> None:
    streams = "btcusdt@kline_1m/btcusdt@bookTicker/ethusdt@kline_1m/ethusdt@bookTicker"
    async with (
        running_simulator(speed=60, start=START, firehose=True, firehose_book_per_kline=per_kline) as sim,
        _ws(sim.ws_url + "/stream?streams=" + streams, max_queue=None) as ws,
    ):
        frames = await collect(ws, lambda fs: len(fs) >= 4200, within=20)
    # Besides the firehose, the x:true frames of closing minutes; and a round may skip a
    # kline frame while a minute has no partial candle yet: the ratio, not an exact count.
    events = [e for e in _events(frames) if not (isinstance(e, KlineEvent) and e.is_closed)]
    books = sum(isinstance(e, BookTick) for e in events)
    klines = sum(isinstance(e, KlineEvent) for e in events)
    assert books + klines == len(events) and klines > 100
    assert 0.95 * per_kline <= books / klines <= 1.05 * per_kline


async def test_slow_consumer_is_dropped() -> None:
    async with running_simulator(speed=60, start=START, book_rate=2000, max_queue=10) as sim:
        async with _ws(sim.ws_url + "/ws/btcusdt@bookTicker", max_queue=1) as ws:
            conn = next(iter(sim.state.hub.connections))
            for _ in range(200):  # overflow the 10-frame queue without reading
                conn.enqueue(b'{"u":1}', "bookTicker")
            closed = await closed_by_server(ws)
            assert closed.rcvd is None
        await wait_until(lambda: sim.stats.ws_closed_by_reason["slow consumer"] == 1)
