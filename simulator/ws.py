"""WebSocket endpoints: ``/ws``, ``/ws/<streams>``, ``/stream`` and ``/stream?streams=``.

Each connection runs three tasks in a TaskGroup: the request handler reads (control
messages, pings, pongs), a sender drains the connection's queue (and, in firehose
mode, generates frames as fast as the socket takes them), and a supervisor pings,
enforces the pong timeout and the connection age limit, and performs scheduled
closes. Closing always goes through the sender or an abort, never mid-frame.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import structlog
from aiohttp import WSMsgType, web

from quaint.binance.encode import book_ticker_stream, combined, kline_event_payload, kline_stream
from simulator.clock import minute_floor
from simulator.faults import FrameInjector, FrameKind
from simulator.hub import Connection, notice
from simulator.market import CHECKPOINT_MS
from simulator.state import STATE, SimState
from simulator.streams import IncomingRateLimit, Stream, StreamError, Subscriptions, parse_stream_list

log = structlog.get_logger(__name__)

_FIREHOSE_BATCH = 64  # frames between voluntary yields (send_frame rarely yields)
_CLOSE_TIMEOUT_S = 2.0  # how long a close waits for the peer's close frame


def _bad_request(msg: str) -> web.Response:
    return web.json_response({"code": 2, "msg": msg}, status=400)


async def handle_ws(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    path = request.path
    if path.startswith("/stream"):
        spec, is_combined = request.query.get("streams", ""), True
    else:
        spec, is_combined = request.match_info.get("streams", ""), False
    try:
        streams = parse_stream_list(spec, state.symbol_set, state.settings.max_streams)
    except StreamError as exc:
        return _bad_request(str(exc))
    ws = web.WebSocketResponse(autoping=False, compress=False, timeout=_CLOSE_TIMEOUT_S, max_msg_size=1 << 16)
    if not ws.can_prepare(request).ok:
        return _bad_request("Invalid request: expected a WebSocket upgrade")
    await ws.prepare(request)
    conn = Connection(
        ws=ws,
        request=request,
        subs=Subscriptions(state.symbol_set, is_combined, state.settings.max_streams),
        injector=FrameInjector(state.faults),
        opened_at=state.clock.wall(),
        max_queue=state.settings.max_queue,
    )
    state.hub.register(conn, streams)
    state.stats.ws_opened()
    log.info("ws_open", path=path, streams=len(streams), peer=request.remote)
    try:
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(_send_loop(state, conn))
            supervisor = tg.create_task(_supervise(state, conn))
            try:
                await _read_loop(state, conn)
            finally:
                sender.cancel()
                supervisor.cancel()
    finally:
        state.hub.unregister(conn)
        state.stats.ws_closed(conn.reason)
        log.info("ws_closed", reason=conn.reason, code=ws.close_code)
    return ws


async def _read_loop(state: SimState, conn: Connection) -> None:
    ws, limiter = conn.ws, IncomingRateLimit(state.settings.max_incoming_per_s)
    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
        state.stats.ws_messages_received += 1
        allowed = limiter.allow(state.clock.wall())
        state.stats.ws_incoming_peak_1s = max(state.stats.ws_incoming_peak_1s, limiter.peak)
        if not allowed:
            # Binance: more than 5 incoming messages per second -> disconnected.
            conn.request_close(1008, "too many messages")
            continue
        if msg.type == WSMsgType.PING:
            if not state.faults.stalled(state.clock.wall()):  # a stalled server answers nothing
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(msg.data)
        elif msg.type == WSMsgType.PONG:
            conn.ping_sent_at = None
        elif msg.type == WSMsgType.TEXT:
            state.stats.ws_control_messages += 1
            reply = conn.subs.handle(msg.data)
            state.hub.subscribe(conn, reply.added)
            state.hub.unsubscribe(conn, reply.removed)
            conn.enqueue(orjson.dumps(reply.payload), "control")
        else:
            conn.enqueue(orjson.dumps({"code": 3, "msg": "Invalid JSON: expected a text frame"}), "control")


async def _send(state: SimState, conn: Connection, data: bytes, kind: FrameKind) -> None:
    frames = [data] if kind == "control" else conn.injector.push(data, kind)
    for frame in frames:
        await conn.ws.send_frame(frame, WSMsgType.TEXT)
    state.stats.sent(kind, len(frames))


async def _send_loop(state: SimState, conn: Connection) -> None:
    firehose = _Firehose(state, conn) if state.settings.firehose else None
    try:
        while True:
            if conn.close_request is not None:
                code, reason = conn.close_request
                await conn.ws.close(code=code, message=reason.encode()[:120])
                return
            if conn.overflowed:
                conn.abort("slow consumer")
                return
            wall = state.clock.wall()
            if state.faults.stalled(wall):
                # Stall: the socket stays open and silent. Data that comes due is
                # lost (as behind a stuck proxy); control replies wait for the end.
                kept = [(d, k) for d, k in conn.outbox if k == "control"]
                conn.outbox.clear()
                conn.outbox.extend(kept)
                conn.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.wake.wait(), state.faults.stall_until - wall)
                continue
            if conn.outbox:
                data, kind = conn.outbox.popleft()
                await _send(state, conn, data, kind)
                continue
            if firehose is not None and conn.subs.streams:
                await firehose.burst()
                await asyncio.sleep(0)  # send_frame only yields when the socket is full
                continue
            conn.wake.clear()
            await conn.wake.wait()
    except (ConnectionError, RuntimeError) as exc:
        # The peer went away mid-send (aiohttp raises ClientConnectionResetError, a
        # ConnectionResetError, or RuntimeError after close): the reader notices too.
        log.debug("ws_send_failed", error=str(exc))
        conn.abort(conn.reason if conn.reason != "client" else "send failed")


async def _supervise(state: SimState, conn: Connection) -> None:
    """Server pings, pong timeout, age limit and noticed shutdowns (wall time)."""
    s = state.settings
    next_ping = conn.opened_at + s.ping_interval_s
    age_deadline = conn.opened_at + s.max_connection_age_s
    while True:
        wall = state.clock.wall()
        if conn.shutdown_at is not None and wall >= conn.shutdown_at:
            conn.request_close(1001, "server shutdown")
            return
        if wall >= age_deadline:
            if s.shutdown_notice:
                notice(conn, state.clock, s.shutdown_grace_s)
                age_deadline = float("inf")
                continue
            conn.request_close(1001, "max connection age")
            return
        if conn.ping_sent_at is not None and wall - conn.ping_sent_at >= s.pong_timeout_s:
            conn.abort("pong timeout")  # a peer that does not pong will not answer a close either
            return
        if wall >= next_ping:
            next_ping = wall + s.ping_interval_s
            if not state.faults.stalled(wall):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.ping(str(state.clock.now_ms()).encode())
                if conn.ping_sent_at is None:
                    conn.ping_sent_at = wall
        deadlines = [next_ping, age_deadline]
        if conn.shutdown_at is not None:
            deadlines.append(conn.shutdown_at)
        if conn.ping_sent_at is not None:
            deadlines.append(conn.ping_sent_at + s.pong_timeout_s)
        conn.supervisor_wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.supervisor_wake.wait(), max(0.0, min(deadlines) - wall))


class _Firehose:
    """Frames for ``--firehose``: bookTicker frames are built from a per-slot template
    (only the update id changes), kline frames are the current partial, pre-encoded."""

    def __init__(self, state: SimState, conn: Connection) -> None:
        self.state, self.conn = state, conn
        self._book: dict[tuple[str, bool], tuple[int, bytes, bytes]] = {}
        self._kline: dict[tuple[str, bool], tuple[int, bytes | None]] = {}
        self._position = 0  # in the cycle of streams, across bursts
        self._cycle_key: tuple[str, ...] = ()
        self._cycle_streams: list[Stream] = []

    def _cycle(self) -> list[Stream]:
        """One round of the mix: every subscribed stream once (``1``), or every bookTicker
        stream ``firehose_book_per_kline`` times for each kline stream's once. Rebuilt
        only when the subscriptions change."""
        key = tuple(self.conn.subs.streams)
        if self._cycle_key != key:
            streams = list(self.conn.subs.streams.values())
            per_kline = self.state.settings.firehose_book_per_kline
            books = [s for s in streams if s.kind == "bookTicker"]
            if per_kline > 1 and books:
                streams = [*books * per_kline, *(s for s in streams if s.kind != "bookTicker")]
            self._cycle_key, self._cycle_streams = key, streams
        return self._cycle_streams

    async def burst(self) -> None:
        now = self.state.clock.now_ms()
        cycle = self._cycle()
        wrapped = self.conn.subs.combined
        for _ in range(_FIREHOSE_BATCH):
            stream = cycle[self._position % len(cycle)]
            self._position += 1
            if stream.kind == "bookTicker":
                frame = self._book_frame(stream.symbol, now, wrapped)
                kind: FrameKind = "bookTicker"
            else:
                frame = self._kline_frame(stream.symbol, now, wrapped)
                kind = "kline"
            if frame is not None:
                await _send(self.state, self.conn, frame, kind)

    def _book_frame(self, symbol: str, now: int, wrapped: bool) -> bytes | None:
        slot = now // 100  # prices move at most every 100 simulated ms in the firehose
        cached = self._book.get((symbol, wrapped))
        if cached is None or cached[0] != slot:
            payload = self.state.books.tick(symbol, now)
            if payload is None:
                return None
            body = orjson.dumps(combined(book_ticker_stream(symbol), payload) if wrapped else payload)
            marker = b'"u":' + str(payload["u"]).encode()
            head, _, tail = body.partition(marker)
            cached = (slot, head + b'"u":', tail)
            self._book[(symbol, wrapped)] = cached
            return body
        update_id = self.state.books.next_id(symbol)
        return cached[1] + str(update_id).encode() + cached[2]

    def _kline_frame(self, symbol: str, now: int, wrapped: bool) -> bytes | None:
        checkpoint = now // CHECKPOINT_MS
        cached = self._kline.get((symbol, wrapped))
        if cached is None or cached[0] != checkpoint:
            open_time = minute_floor(now)
            frame: bytes | None = None
            if self.state.exchange.exists(symbol, open_time, now):
                found = self.state.market.partial(symbol, open_time, (now - open_time) // CHECKPOINT_MS)
                if found is not None:
                    candle, first, last = found
                    payload = kline_event_payload(
                        candle, event_time=now, is_closed=False, first_trade_id=first, last_trade_id=last
                    )
                    frame = orjson.dumps(combined(kline_stream(symbol), payload) if wrapped else payload)
            cached = (checkpoint, frame)
            self._kline[(symbol, wrapped)] = cached
        return cached[1]
