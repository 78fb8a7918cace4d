"""Long-running loops besides the workers: the NOTIFY listener and the daily jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from gap_handler.core.schedule import DAILY_JOBS, next_run
from quaint.store.errors import CONNECTION_LOST_ERRORS, DB_ERRORS

log = structlog.get_logger(__name__)

CHANNEL = "quaint_gaps"
# A silent TCP loss is noticed by this ping at the latest.
KEEPALIVE_S = 10.0


class NotifyListener:
    """LISTEN on a dedicated connection, never a pooled one: asyncpg's pool runs
    ``UNLISTEN *`` when a connection is released. Reconnects when the database goes
    away, and asks for a scan after each (re)connect to cover what it missed."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        on_payload: Callable[[str], None],
        on_connected: Callable[[], None],
        backoff: Callable[[], Iterator[float]],
    ) -> None:
        self._kwargs = connect_kwargs
        self._on_payload = on_payload
        self._on_connected = on_connected
        self._backoff = backoff
        self.connected = False

    def _callback(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._on_payload(str(payload))

    async def run(self) -> None:
        delays = self._backoff()
        while True:
            try:
                conn = await asyncpg.connect(**self._kwargs, timeout=10)
            except DB_ERRORS as exc:
                delay = next(delays)
                log.warning("listener_connect_failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            try:
                await self._listen(conn)
                delays = self._backoff()
            except CONNECTION_LOST_ERRORS as exc:
                log.warning("listener_lost", error=f"{type(exc).__name__}: {exc}")
            finally:
                self.connected = False
                conn.terminate()
            await asyncio.sleep(next(delays))

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        await conn.add_listener(CHANNEL, self._callback)
        self.connected = True
        log.info("listener_connected", channel=CHANNEL)
        self._on_connected()
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), timeout=KEEPALIVE_S)
            except TimeoutError:
                await conn.execute("SELECT 1", timeout=5)
        log.warning("listener_connection_closed")


async def run_daily_jobs(pool: asyncpg.Pool, now: Callable[[], datetime]) -> None:
    """quaint_cleanup() at 02:00 and quaint_resolve_predictions() at 03:00 UTC."""
    while True:
        current = now()
        job, at = min(((j, next_run(current, j.hour_utc)) for j in DAILY_JOBS), key=lambda p: p[1])
        # Sleep in slices: a long monotonic sleep drifts from the wall clock.
        remaining = (at - now()).total_seconds()
        while remaining > 0:
            await asyncio.sleep(min(remaining, 60.0))
            remaining = (at - now()).total_seconds()
        try:
            result = await pool.fetchval(job.sql)
        except DB_ERRORS as exc:
            log.error("daily_job_failed", job=job.name, error=f"{type(exc).__name__}: {exc}")
        else:
            log.info("daily_job_done", job=job.name, result=result, at=at.astimezone(UTC).isoformat())
