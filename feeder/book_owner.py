"""Which feeder writes a symbol's book ticks when several stream it (active-active).

Candles need no owner: the same closed minute from two feeders is one row (the upsert is
idempotent and both carry the exchange's values). Book ticks have no natural key: the
``time`` column is the receipt time, which differs between feeders, so a unique index
cannot tell two copies of one update apart. The rule: **one writer per symbol**, the
feeder holding the symbol's session-level advisory lock
(:func:`quaint.store.leadership.book_lock_key`) on a dedicated connection. Every feeder
still reads every symbol it is configured for (its candles are written either way); ticks
of a symbol it does not own are not written. Unowned symbols are tried every
``BOOK_TAKEOVER_S / 4``, so when the owner's session ends (the process died: at once; its
host went silent: the server's keepalives, about half of ``BOOK_TAKEOVER_S``) another
feeder takes the symbol over; ticks received between the two are lost, as in an outage of
one feeder. A feeder that loses its connection stops writing ticks at once. A feeder that
takes a symbol writes only ticks past the newest update id stored when it took it (the
fence): what it buffered while the previous owner was still writing the same updates is
not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import structlog

from quaint.binance.models import BookTick
from quaint.store import leadership
from quaint.store.errors import DB_ERRORS, describe

log = structlog.get_logger(__name__)


class BookOwnership:
    """:meth:`owned_ticks` is what the writer keeps of a batch; :meth:`run` keeps the locks."""

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
        self.owned: set[str] = set()
        self.fences: dict[str, int] = {}  # symbol -> newest update id stored when it was taken
        self.wanted: set[str] = set()  # every symbol a tick arrived for
        self.decided: set[str] = set()  # tried on the current connection (owned or another's)
        self.connected = False
        self.not_owned = 0  # ticks not written: another feeder owns their symbol
        self._wake = asyncio.Event()
        self._tried = asyncio.Event()  # a round of tries ended (or the connection did)

    async def owned_ticks(self, ticks: list[BookTick]) -> list[BookTick]:
        """The ticks this feeder writes. A symbol seen for the first time is tried at once,
        and the batch waits for that answer (at most ``BOOK_TAKEOVER_S / 2``), so a feeder
        starting alone drops none of its first ticks."""
        symbols = {t.symbol for t in ticks}
        fresh = symbols - self.wanted
        if fresh:
            self.wanted |= fresh
            self._wake.set()
        deadline = time.monotonic() + self.takeover_s / 2
        while not symbols <= self.decided and self.connected and (left := deadline - time.monotonic()) > 0:
            self._tried.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tried.wait(), timeout=left)
        owned, fences = self.owned, self.fences
        kept = [t for t in ticks if t.symbol in owned and t.update_id > fences.get(t.symbol, -1)]
        self.not_owned += len(ticks) - len(kept)
        return kept

    async def run(self) -> None:
        delays = self._backoff()
        while True:
            try:
                conn = await asyncpg.connect(
                    **self._kwargs,
                    timeout=10,
                    server_settings=leadership.session_settings(self.takeover_s, "quaint-feeder-books"),
                )
            except DB_ERRORS as exc:
                delay = next(delays)
                log.warning("book_owner_connect_failed", error=describe(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            self.connected = True
            delays = self._backoff()
            try:
                await self._hold(conn)
            except DB_ERRORS as exc:  # TimeoutError included: a ping unanswered in time
                log.warning("book_owner_connection_lost", owned=len(self.owned), error=describe(exc))
            finally:
                self.connected = False
                if self.owned:
                    log.warning("book_ticks_released", symbols=sorted(self.owned))
                self.owned, self.decided, self.fences = set(), set(), {}
                self._tried.set()
                conn.terminate()
            await asyncio.sleep(next(delays))

    async def _hold(self, conn: asyncpg.Connection) -> None:
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _c: closed.set())
        while not closed.is_set():
            missing = sorted(self.wanted - self.owned)
            if missing:
                got = await leadership.try_book_locks(conn, missing, within_s=self.poll_s)
                if got:
                    # Read before the symbols count as owned: no batch is written unfenced.
                    fences = await leadership.book_fences(conn, sorted(got), within_s=self.poll_s)
                    self.fences = {**self.fences, **fences}
                    self.owned = self.owned | got
                    log.info("book_ticks_owned", symbols=sorted(got), owned=len(self.owned))
                self.decided |= set(missing)
                self._tried.set()
            else:
                await leadership.ping(conn, within_s=self.poll_s)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(closed, self._wake), timeout=self.poll_s)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
