"""Which gap handler works: the one holding the leader lock (:mod:`quaint.store.leadership`).

Every instance keeps one dedicated connection (never a pooled one: the lock belongs to
the session) and tries the lock every ``LEADER_TAKEOVER_S / 4``. The holder leads; the
others stand by. The leader pings its connection at the same pace and steps down the
moment the connection is gone or does not answer within that time: by then PostgreSQL
may have ended the session and another instance taken the lock.

How fast a dead leader's lock is released is PostgreSQL's call: at once when the process
dies (the kernel closes its socket), and for a host that goes silent when the server's
TCP keepalives (set on this session from ``LEADER_TAKEOVER_S``) give up on it. Either way
the standby's next try takes it: takeover within ``LEADER_TAKEOVER_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, Literal

import asyncpg
import structlog

from quaint.store import leadership
from quaint.store.errors import DB_ERRORS, describe

log = structlog.get_logger(__name__)

Role = Literal["leader", "standby"]


def instance_name() -> str:
    """How this instance names itself in logs and ``leader_changed`` rows."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership:
    """Runs the election for this instance; :attr:`role` says the outcome. ``gained`` is set
    while this instance leads, ``lost`` once it stopped leading (until it leads again)."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        takeover_s: float,
        backoff: Callable[[], Iterator[float]],
    ) -> None:
        self._kwargs = connect_kwargs
        self.takeover_s = takeover_s
        self.poll_s = takeover_s / 4
        self._backoff = backoff
        self.role: Role = "standby"
        self.connected = False
        self.terms = 0  # times this instance became the leader
        self.gained = asyncio.Event()
        self.lost = asyncio.Event()

    async def run(self) -> None:
        """Until cancelled; the connection is closed on the way out (a stopping leader
        releases the lock at once, so a standby takes over without waiting)."""
        delays = self._backoff()
        while True:
            try:
                conn = await asyncpg.connect(
                    **self._kwargs,
                    timeout=10,
                    server_settings=leadership.session_settings(
                        self.takeover_s, leadership.LEADER_APPLICATION_NAME
                    ),
                )
            except DB_ERRORS as exc:
                delay = next(delays)
                log.warning("leader_connect_failed", error=describe(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            self.connected = True
            delays = self._backoff()
            try:
                if self.lost.is_set() and await leadership.other_candidates(
                    conn, leadership.LEADER_APPLICATION_NAME, within_s=self.poll_s
                ):
                    # Just stepped down: a standby gets the first chance at the lock (a leader
                    # whose session keeps failing should not win it straight back). Alone
                    # (one gap handler, the database restarted), it leads again at once.
                    await asyncio.sleep(self.takeover_s / 2)
                await self._campaign(conn)
            except DB_ERRORS as exc:  # TimeoutError included: a ping unanswered in time
                log.warning("leader_connection_lost", role=self.role, error=describe(exc))
            finally:
                self.connected = False
                self._step_down()
                conn.terminate()
            await asyncio.sleep(next(delays))

    async def _campaign(self, conn: asyncpg.Connection) -> None:
        """Stand by until the lock is ours, then hold it; returns when the connection closed."""
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _c: closed.set())
        announced = False
        while not await leadership.try_lock(conn, within_s=self.poll_s):
            if not announced:
                holder = await leadership.holder(conn, within_s=self.poll_s)
                log.info("gap_handler_standby", leader=holder)
                announced = True
            if await self._closed_within(closed):
                return
        self.role = "leader"
        self.terms += 1
        self.lost.clear()
        self.gained.set()
        log.info("gap_handler_leading", term=self.terms)
        while not await self._closed_within(closed):
            await leadership.ping(conn, within_s=self.poll_s)

    async def _closed_within(self, closed: asyncio.Event) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), timeout=self.poll_s)
        return closed.is_set()

    def _step_down(self) -> None:
        if self.role != "leader":
            return
        self.role = "standby"
        self.gained.clear()
        self.lost.set()
        log.warning("gap_handler_leadership_lost", term=self.terms)
