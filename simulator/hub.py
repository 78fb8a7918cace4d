"""Fan-out of published frames to WebSocket connections.

Each frame is encoded once per shape (raw payload and combined envelope) and the
same bytes are queued on every subscribed connection. A connection's own sender
task (see ``ws.py``) drains its queue, so one slow socket never delays the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from quaint.binance.encode import combined
from simulator.clock import LiveClock
from simulator.faults import FaultController, FrameInjector, FrameKind
from simulator.streams import Stream, Subscriptions


@dataclass(eq=False)
class Connection:
    """One client socket: its subscriptions, outgoing queue and lifecycle flags."""

    ws: web.WebSocketResponse
    request: web.Request
    subs: Subscriptions
    injector: FrameInjector
    opened_at: float  # wall (monotonic) seconds
    max_queue: int
    outbox: deque[tuple[bytes, FrameKind]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by the hub or the supervisor; the sender acts on them (it owns the socket's
    # write side, so closing there cannot interleave with a frame being written).
    close_request: tuple[int, str] | None = None
    shutdown_at: float | None = None  # wall time at which a noticed shutdown closes
    reason: str = "client"
    overflowed: bool = False
    ping_sent_at: float | None = None  # wall time of the oldest unanswered ping
    supervisor_wake: asyncio.Event = field(default_factory=asyncio.Event)

    def enqueue(self, data: bytes, kind: FrameKind) -> None:
        if len(self.outbox) >= self.max_queue:
            # Binance drops consumers that cannot keep up; so does the simulator,
            # instead of buffering without bound.
            self.overflowed = True
        else:
            self.outbox.append((data, kind))
        self.wake.set()

    def request_close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
            self.reason = reason
        self.wake.set()

    def abort(self, reason: str) -> None:
        """Reset the TCP connection at once: no close frame, like a network failure."""
        self.reason = reason
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.wake.set()


class Hub:
    def __init__(self, faults: FaultController, clock: LiveClock) -> None:
        self.faults = faults
        self.clock = clock
        self.connections: set[Connection] = set()
        self._by_stream: dict[str, set[Connection]] = {}
        self.idle = asyncio.Event()  # set while no connection is open (shutdown waits on it)
        self.idle.set()
        faults.attach(self)

    def register(self, conn: Connection, streams: list[Stream]) -> None:
        self.connections.add(conn)
        self.idle.clear()
        self.subscribe(conn, streams)

    def unregister(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self.idle.set()
        for name in list(conn.subs.streams):
            self._remove(conn, name)

    def subscribe(self, conn: Connection, streams: tuple[Stream, ...] | list[Stream]) -> None:
        for stream in streams:
            conn.subs.streams[stream.name] = stream
            self._by_stream.setdefault(stream.name, set()).add(conn)

    def unsubscribe(self, conn: Connection, streams: tuple[Stream, ...]) -> None:
        for stream in streams:
            self._remove(conn, stream.name)

    def _remove(self, conn: Connection, name: str) -> None:
        subscribers = self._by_stream.get(name)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self._by_stream[name]

    def has_subscribers(self, stream: str) -> bool:
        return stream in self._by_stream

    def publish(self, stream: str, payload: dict[str, Any], kind: FrameKind) -> int:
        """Queue one event for every subscriber of ``stream``; returns how many."""
        subscribers = self._by_stream.get(stream)
        if not subscribers:
            return 0
        raw: bytes | None = None
        wrapped: bytes | None = None
        for conn in subscribers:
            if conn.subs.combined:
                if wrapped is None:
                    wrapped = orjson.dumps(combined(stream, payload))
                conn.enqueue(wrapped, kind)
            else:
                if raw is None:
                    raw = orjson.dumps(payload)
                conn.enqueue(raw, kind)
        return len(subscribers)

    # ---- ConnectionControl (used by the fault controller) ---------------------------

    def drop_all(self, mode: str) -> int:
        conns = list(self.connections)
        for conn in conns:
            if mode == "abort":
                conn.abort("dropped")
            else:
                conn.request_close(1001, "dropped")
        return len(conns)

    def shutdown_all(self, grace_s: float) -> int:
        conns = list(self.connections)
        for conn in conns:
            notice(conn, self.clock, grace_s)
        return len(conns)


def notice(conn: Connection, clock: LiveClock, grace_s: float) -> None:
    """Queue ``serverShutdown`` (E = the exchange's time) and arrange the close
    ``grace_s`` wall seconds later, as Binance does before maintenance."""
    if conn.shutdown_at is not None:
        return
    conn.enqueue(orjson.dumps({"e": "serverShutdown", "E": clock.now_ms()}), "control")
    conn.shutdown_at = clock.wall() + grace_s
    conn.supervisor_wake.set()
