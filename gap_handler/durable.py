"""Backfills requested through the API, kept in ``backfill_requests`` so that an
accepted request survives a restart.

- :meth:`DurableRequests.submit`: the range is scanned, the row inserted, and only then
  is the work queued; a database error on the way leaves nothing behind.
- :meth:`DurableRequests.save`: each time a unit of a request ends (the service's
  ``on_task_update``), its progress is written; writes that fail are retried.
- :meth:`DurableRequests.run`: at start-up, every request not finished is resumed (its
  range scanned again: what was filled is no longer a hole), then failed writes are retried.

The one-shot CLI's requests go through :meth:`Backfills.submit_range` and are not stored.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog

from gap_handler import store
from gap_handler.backfills import Backfills
from gap_handler.core.intervals import MinuteRange
from gap_handler.core.tracker import RangeTask
from quaint.binance.models import ms_to_datetime
from quaint.service.retry import jittered_backoff
from quaint.store.errors import DB_ERRORS

log = structlog.get_logger(__name__)

# After a failed write, how long to leave the database before trying again.
RETRY_WRITE_S = 5.0


class DurableRequests:
    def __init__(self, backfills: Backfills, pool: asyncpg.Pool) -> None:
        self.backfills = backfills
        self.pool = pool
        self.resumed = False  # start-up's resume has run to the end
        self._ids: set[str] = set()  # the requests stored here (the CLI's are not)
        self._dirty: dict[str, RangeTask] = {}
        self._write = asyncio.Lock()  # one writer: a row's writes land in the order taken
        self._retry = asyncio.Event()
        backfills.on_task_update = self.save

    async def submit(self, symbol: str, rng: MinuteRange) -> RangeTask:
        """Accept a request. Raises the database's error (the caller answers 503) with
        nothing stored and nothing queued."""
        task, holes = await self.backfills.start_task(symbol, rng)
        async with self.pool.acquire() as conn:
            await store.insert_backfill_request(conn, task.record())
        self._ids.add(task.id)
        self.backfills.launch(task, holes)
        return task

    async def save(self, task: RangeTask) -> None:
        if task.id not in self._ids:
            return
        self._dirty[task.id] = task
        await self._flush()

    async def _flush(self) -> bool:
        """Write every task with unwritten progress; False when the database failed."""
        async with self._write:
            while self._dirty:
                ident, task = next(iter(self._dirty.items()))
                # Taken off before the write: progress made during it marks the task again.
                del self._dirty[ident]
                try:
                    async with self.pool.acquire() as conn:
                        await store.update_backfill_request(conn, task.record())
                except DB_ERRORS as exc:
                    self._dirty.setdefault(ident, task)
                    self._retry.set()
                    self.backfills.metrics.errors.labels("request_write").inc()
                    error = f"{type(exc).__name__}: {exc}"
                    log.warning("backfill_request_write_failed", id=ident, error=error)
                    return False
        return True

    async def run(self) -> None:
        """Resume what is unfinished (retrying while the database is away), then keep
        retrying failed writes until cancelled."""
        delays = jittered_backoff(0.5, 10.0)
        while True:
            try:
                await self.resume()
                break
            except DB_ERRORS as exc:
                delay = next(delays)
                log.warning("backfill_resume_failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
                await asyncio.sleep(delay)
        while True:
            await self._retry.wait()
            self._retry.clear()
            await asyncio.sleep(RETRY_WRITE_S)
            await self._flush()

    async def resume(self) -> int:
        """Take up every stored request not finished; returns how many were resumed.
        Safe to call again after an error: requests already live are skipped."""
        svc = self.backfills
        async with self.pool.acquire() as conn:
            records = await store.unfinished_backfill_requests(conn)
        n = 0
        for rec in records:
            if rec.id in svc.tasks:
                continue
            if rec.symbol not in svc.symbols:
                # Kept, not failed: it resumes once the symbol is served again.
                reason = f"waiting: {rec.symbol} is not in SYMBOLS"
                async with self.pool.acquire() as conn:
                    await store.mark_backfill_request_waiting(conn, rec.id, reason)
                log.warning("backfill_request_waiting", id=rec.id, symbol=rec.symbol)
                continue
            task = RangeTask(
                rec.id,
                rec.symbol,
                rec.range,
                created_mono=time.monotonic(),
                created_at=rec.requested_at,
                taken_at=ms_to_datetime(svc.now_ms()),
            )
            holes = await svc.range_holes(rec.symbol, rec.range)
            task.resume(
                svc.units_of(holes),
                total=rec.minutes_total,
                recovered=rec.candles_recovered,
                unrecoverable=rec.unrecoverable_minutes,
            )
            self._ids.add(task.id)
            svc.launch(task, holes)
            log.info(
                "backfill_request_resumed",
                id=task.id,
                symbol=task.symbol,
                minutes_total=task.total_minutes,
                minutes_left=task.total_minutes - task.minutes_done,
            )
            await self.save(task)  # the re-derived totals, or the outcome when nothing is left
            n += 1
        self.resumed = True
        return n
