"""The gap handler's backfill work: scans, the queue of work units, the workers, NOTIFY.

Everything runs under one TaskGroup in :meth:`Backfills.run`. Work units are served
from a priority queue: requested ranges first, then the oldest minute first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from gap_handler import store
from gap_handler.archive_fill import ArchiveFill
from gap_handler.core.archive_plan import archive_units
from gap_handler.core.intervals import (
    DAY_MS,
    MinuteRange,
    closed_end,
    due_end,
    floor_minute,
    history_start,
    merge,
    split_units,
    subtract,
    total_minutes,
)
from gap_handler.core.tracker import RangeTask
from gap_handler.engine import Engine, ProgressFn
from gap_handler.fetcher import Fetcher, RetriesExhausted
from gap_handler.metrics import GapMetrics
from gap_handler.settings import GapHandlerSettings
from gap_handler.timesync import TimeSync
from gap_handler.universe import GapUniverse
from quaint.binance.models import MINUTE_MS, datetime_to_ms, ms_to_datetime
from quaint.binance.rest_client import ApiRejected
from quaint.service.retry import jittered_backoff
from quaint.service.universe import resolve_at_start
from quaint.store.errors import DB_ERRORS, DbErrorClass, classify_db_error, describe

log = structlog.get_logger(__name__)


@dataclass(order=True, slots=True)
class Job:
    priority: tuple[int, int, int]
    symbol: str = field(compare=False)
    unit: MinuteRange = field(compare=False)
    task: RangeTask | None = field(compare=False, default=None)


class Backfills:
    def __init__(
        self,
        settings: GapHandlerSettings,
        pool: asyncpg.Pool,
        engine: Engine,
        fetcher: Fetcher,
        metrics: GapMetrics,
        *,
        clock: TimeSync,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.engine = engine
        self.fetcher = fetcher
        self.metrics = metrics
        self.clock = clock
        self.now_ms = clock.now_ms  # the exchange's time: what is due is the exchange's call
        # A pattern's symbols are resolved when the scans start, then followed (GapUniverse).
        self.symbols = settings.universe.static_symbols()
        self.universe = GapUniverse(self, settings.universe_refresh_s if settings.universe.dynamic else None)
        self.queue: asyncio.PriorityQueue[Job] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self.claimed: dict[str, list[MinuteRange]] = {s: [] for s in self.symbols}
        self.parked: dict[str, list[MinuteRange]] = {s: [] for s in self.symbols}
        self.current_holes: dict[str, list[MinuteRange]] = {s: [] for s in self.symbols}
        self.running: dict[str, list[MinuteRange]] = {s: [] for s in self.symbols}
        self.tasks: dict[str, RangeTask] = {}
        # Called when a unit of a requested range ends (decided, or cut short by stop()).
        self.on_task_update: Callable[[RangeTask], Awaitable[None]] | None = None
        # Archives first for history (set by the assembly when ARCHIVE_ENABLED), REST for the rest.
        self.archive: ArchiveFill | None = None
        self.stopping = False
        self.backfills_completed = 0
        self.candles_recovered = 0
        self.last_scan_at: datetime | None = None
        self.last_scan_s: float | None = None
        self.scans = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._extend: dict[str, int] = {}
        self._scan_from: dict[str, int] = {}
        # The feeder's reports (gap_detected rows) made while no listener was connected (before
        # start, between terms, during a reconnect) are read from the table by the next scan.
        self._reports_unread = True
        self._last_full = float("-inf")
        self._busy: set[int] = set()
        self._unit_ended = asyncio.Condition()

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self, extra: list[Callable[[], Coroutine[Any, Any, None]]] | None = None) -> None:
        """Workers plus ``extra`` loops (scan, listener, daily jobs) until :meth:`stop`;
        then units in flight run to their next page boundary. Cancelled when the shutdown
        deadline passes first (each unit cut short is logged)."""
        async with asyncio.TaskGroup() as tg:
            loops = [tg.create_task(factory()) for factory in extra or []]
            workers = [tg.create_task(self._worker(i)) for i in range(self.settings.max_concurrent_backfills)]
            await self._stop.wait()
            for t in loops:
                t.cancel()
            for i, w in enumerate(workers):
                if i not in self._busy:
                    w.cancel()
            await asyncio.wait(workers)

    def stop(self) -> None:
        """Stop taking work; units in flight stop at their next page boundary."""
        self.stopping = True
        self._stop.set()

    async def wait_stopping(self) -> None:
        await self._stop.wait()

    def request_scan(self, symbol: str | None = None, gap: MinuteRange | None = None) -> None:
        """Scan now; with ``gap``, make sure the scan of ``symbol`` covers it (its start
        may lie before where the incremental scan would begin, its end may not be due)."""
        if symbol is not None and gap is not None:
            self._cover(symbol, gap)
        self._wake.set()

    def on_listening(self) -> None:
        """The NOTIFY listener (re)connected: scan now, reading the reports it missed first."""
        self._reports_unread = True
        self._wake.set()

    def _cover(self, symbol: str, gap: MinuteRange) -> None:
        self._extend[symbol] = max(self._extend.get(symbol, 0), gap.end)
        if symbol in self._scan_from:
            self._scan_from[symbol] = min(self._scan_from[symbol], gap.start)

    async def _read_missed_reports(self) -> None:
        """The unresolved gap_detected rows, as if each had just been notified: a report made
        while nobody listened is at the live edge, where the scan does not look yet
        (GAP_DETECTION_THRESHOLD_S). The listener is connected before this runs, so a report
        made after it arrives by NOTIFY: none falls between the two."""
        async with self.pool.acquire() as conn:
            reports = await store.unresolved_reports(conn, self.symbols)
        self._reports_unread = False
        for symbol, start, end in reports:
            self._cover(symbol, reported_range(start, end))

    # ---- scanning --------------------------------------------------------------------

    def add_symbols(self, symbols: list[str]) -> list[str]:
        """Start scanning ``symbols`` (a listing, or a pattern resolved); returns the new ones."""
        new = [s for s in symbols if s not in self.claimed]
        for s in new:
            self.symbols.append(s)
            self.claimed[s], self.parked[s], self.current_holes[s], self.running[s] = [], [], [], []
        return new

    async def scan_loop(self) -> None:
        spec = self.settings.universe
        if spec.dynamic:
            found = await resolve_at_start(self.fetcher.client, spec, lambda: jittered_backoff(1.0, 30.0))
            self.universe.start(found)
        if self.symbols:  # none yet (a pattern matching nothing): the default limit holds
            await self.fetcher.load_weight_limit(self.symbols[0])
        # One attempt: the first scan should not ask for minutes only the host thinks
        # closed; if the exchange does not answer, pages wait for a sample anyway.
        await self.clock.try_sync(max_attempts=1, only_if="unsynced")
        interval = self.settings.backfill_check_interval_s
        while True:
            if self.universe.due(time.monotonic()):
                await self.universe.refresh(time.monotonic())
            try:
                await self.scan()
            except DB_ERRORS as exc:
                self.metrics.errors.labels("scan_db").inc()
                log.warning("scan_failed", error=f"{type(exc).__name__}: {exc}")
                interval = min(self.settings.backfill_check_interval_s, 5.0)
            else:
                interval = self.settings.backfill_check_interval_s
            with contextlib.suppress(TimeoutError):
                wait = min(interval, self.universe.until_due(time.monotonic()))
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()

    async def scan(self) -> int:
        """Scan every symbol once and queue what is missing; returns units queued."""
        started = time.monotonic()
        now = self.now_ms()
        full = started - self._last_full >= self.settings.full_scan_interval_s
        if full:
            self._scan_from.clear()
            self._last_full = started
        if self._reports_unread:
            await self._read_missed_reports()
        extend, self._extend = self._extend, {}
        # Two symbols at a time: the machine has two cores and the database shares them.
        sem = asyncio.Semaphore(2)

        async def one(symbol: str) -> int:
            async with sem:
                return await self._scan_symbol(symbol, now, extend.get(symbol))

        # A halted or delisted symbol is not scanned: its minutes do not exist (no request for
        # them while it is away); once it trades again the whole span is proven in one outage row.
        inactive = self.universe.inactive
        counts = await asyncio.gather(*(one(s) for s in self.symbols if s not in inactive))
        self.last_scan_s = time.monotonic() - started
        self.last_scan_at = ms_to_datetime(now)
        self.scans += 1
        self.metrics.scan_duration.observe(self.last_scan_s)
        log.info("scan_done", full=full, duration_s=round(self.last_scan_s, 3), units_queued=sum(counts))
        return sum(counts)

    async def _scan_symbol(self, symbol: str, now: int, extend_to: int | None) -> int:
        lo = history_start(now, self.settings.history_days)
        hi = due_end(now, self.settings.gap_detection_threshold_s)
        if extend_to is not None:
            hi = max(hi, min(extend_to, closed_end(now)))
        start = max(lo, self._scan_from.get(symbol, lo))
        # Units in flight when the query starts may finish before it returns; the rows
        # they committed may be invisible to it, so their ranges are not queued again.
        claimed_before = list(self.claimed[symbol])
        async with self.pool.acquire() as conn:
            holes = await store.scan_holes(conn, symbol, start, hi)
            await store.resolve_detected(conn, symbol, hi, ms_to_datetime(now))
        # Holes are only ever filled, so what this scan saw complete stays complete:
        # the next scan starts at the first hole (a full rescan runs periodically).
        self._scan_from[symbol] = holes[0].start if holes else hi
        self.current_holes[symbol] = holes
        self._set_missing_24h(symbol, now)
        fresh = subtract(holes, [*claimed_before, *self.claimed[symbol], *self.parked[symbol]])
        for hole in fresh:
            log.info("gap_found", symbol=symbol, gap_start=hole.start, gap_end=hole.end, minutes=hole.minutes)
        return self._enqueue(symbol, fresh, admin=False)

    def _set_missing_24h(self, symbol: str, now: int) -> None:
        day_ago = floor_minute(now - DAY_MS)
        recent = [c for h in self.current_holes[symbol] if (c := h.clip(day_ago, h.end)) is not None]
        self.metrics.missing_minutes_24h.set(symbol, total_minutes(recent))

    async def _refresh_holes(self, symbol: str, unit: MinuteRange) -> None:
        """A unit ended: what it filled is no longer listed as a hole (``GET /gaps``) nor
        counted missing (the 24 h gauge, ``CandlesMissing``), rather than until the next
        scan, up to BACKFILL_CHECK_INTERVAL_S away. Only ever shrinks what the scan saw."""
        try:
            left = await self._still_missing(symbol, unit)
        except DB_ERRORS:
            return  # the next scan brings both up to date
        filled = subtract([unit], left)
        self.current_holes[symbol] = subtract(self.current_holes[symbol], filled)
        self._set_missing_24h(symbol, self.now_ms())

    def _enqueue(
        self, symbol: str, holes: list[MinuteRange], *, admin: bool, task: RangeTask | None = None
    ) -> int:
        units = self.units_of(holes)
        for unit in units:
            self.claimed[symbol] = merge([*self.claimed[symbol], unit])
            priority = (0 if admin else 1, unit.start, next(self._seq))
            self.queue.put_nowait(Job(priority, symbol, unit, task))
            self.metrics.gaps_found.inc(symbol)
        self.metrics.queued.set(self.queue.qsize())
        return len(units)

    # ---- requested ranges (API, CLI) -----------------------------------------------------

    def new_task(self, symbol: str, rng: MinuteRange) -> RangeTask:
        now = self.now_ms()
        return RangeTask(
            id=uuid.uuid4().hex[:16],
            symbol=symbol,
            range=rng,
            created_mono=time.monotonic(),
            created_at=ms_to_datetime(now),
        )

    async def range_holes(self, symbol: str, rng: MinuteRange) -> list[MinuteRange]:
        """What is missing of ``rng`` now (up to the last closed minute)."""
        hi = min(rng.end, closed_end(self.now_ms()))
        async with self.pool.acquire() as conn:
            return await store.scan_holes(conn, symbol, rng.start, hi)

    def units_of(self, holes: list[MinuteRange]) -> list[MinuteRange]:
        minutes = self.settings.backfill_batch_size * self.settings.unit_max_pages
        files: list[MinuteRange] = []
        if self.archive is not None:
            # One unit per archive file: a unit downloads its file once, whatever its size.
            files, holes = self._archive_units(holes)
        return sorted([*files, *(u for h in holes for u in split_units(h, minutes))])

    def _archive_units(self, holes: list[MinuteRange]) -> tuple[list[MinuteRange], list[MinuteRange]]:
        s = self.settings
        return archive_units(holes, self.now_ms(), s.archive_lag_days, s.backfill_batch_size)

    async def _from_archives(self, symbol: str, parts: list[MinuteRange]) -> tuple[int, list[MinuteRange]]:
        """What archives hold of ``parts``: (rows written, what is left for REST)."""
        if self.archive is None or not parts:
            return 0, parts
        return await self.archive.fill(symbol, parts, stopping=lambda: self.stopping)

    def launch(self, task: RangeTask, holes: list[MinuteRange]) -> None:
        """Queue a started (or resumed) task's holes ahead of the scan's own work."""
        self.tasks[task.id] = task
        self._enqueue(task.symbol, holes, admin=True, task=task)
        log.info(
            "range_backfill_submitted",
            symbol=task.symbol,
            id=task.id,
            minutes_missing=task.total_minutes,
            minutes_done=task.minutes_done,
        )

    async def start_task(self, symbol: str, rng: MinuteRange) -> tuple[RangeTask, list[MinuteRange]]:
        """A new task for ``rng``, started on what is missing of it (returned): not queued yet."""
        task = self.new_task(symbol, rng)
        holes = await self.range_holes(symbol, rng)
        task.start(self.units_of(holes))
        return task, holes

    async def submit_range(self, symbol: str, rng: MinuteRange) -> RangeTask:
        """An in-memory request (the one-shot CLI); the API's are durable (:mod:`gap_handler.durable`)."""
        task, holes = await self.start_task(symbol, rng)
        self.launch(task, holes)
        return task

    # ---- workers -----------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        while not self.stopping:
            job = await self.queue.get()
            self.metrics.queued.set(self.queue.qsize())
            if self.stopping:
                break
            self._busy.add(index)
            self.metrics.in_flight.inc()
            try:
                await self._process(job)
            except asyncio.CancelledError:
                if self.stopping:  # the shutdown deadline passed before its page boundary
                    log.warning(
                        "backfill_cancelled_at_deadline", symbol=job.symbol, unit_start=job.unit.start
                    )
                raise
            finally:
                self._busy.discard(index)
                self.metrics.in_flight.dec()

    async def _process(self, job: Job) -> None:
        symbol, unit, task = job.symbol, job.unit, job.task
        recovered = unrecoverable = 0
        complete = False
        # Never two units over the same minutes at once (a requested range and a scan's unit
        # may overlap): the later one waits, then fetches only what is still missing.
        async with self._unit_ended:
            await self._unit_ended.wait_for(lambda: not any(unit.overlaps(r) for r in self.running[symbol]))
            self.running[symbol].append(unit)
        try:
            # A unit may have waited in the queue, or for an overlapping one: what the feeder
            # or another unit stored since is not fetched again. A requested range counts
            # the minutes already there as decided.
            parts = await self._still_missing(symbol, unit)
            imported, parts = await self._from_archives(symbol, parts)
            recovered += imported
            decided = unit.minutes - total_minutes(parts)
            if task is not None and imported:
                task.progress(unit, decided)
            complete = True
            for part in parts:
                progress = None if task is None else self._progress_of(task, unit, decided)
                report = await self.engine.run_unit(
                    symbol, part, stopping=lambda: self.stopping, progress=progress
                )
                decided += part.minutes
                recovered += report.written
                unrecoverable += report.outcome.unrecoverable_minutes_in_unit
                complete = complete and report.outcome.complete
            self.candles_recovered += recovered
            if complete and parts:
                self.backfills_completed += 1
        except ApiRejected as exc:
            # Permanent: asking again gives the same answer. Parked until restart.
            complete = False
            self.parked[symbol] = merge([*self.parked[symbol], unit])
            if task is not None:
                task.error = f"rejected by the exchange: {exc}"
        except RetriesExhausted as exc:
            complete = False
            self.metrics.errors.labels("retries_exhausted").inc()
            log.warning("backfill_gave_up", symbol=symbol, unit_start=unit.start, error=str(exc))
        except DB_ERRORS as exc:
            complete = False
            self._on_db_error(symbol, unit, task, exc)
        finally:
            async with self._unit_ended:
                self.running[symbol].remove(unit)
                self._unit_ended.notify_all()
            self.claimed[symbol] = subtract(self.claimed[symbol], [unit])
            if task is not None and not complete and self.stopping:
                # Cut short by a shutdown, not decided: the request is resumed at the next start.
                task.unit_stopped(unit, recovered=recovered, unrecoverable=unrecoverable)
            elif task is not None:
                task.unit_finished(
                    unit,
                    recovered=recovered,
                    unrecoverable=unrecoverable,
                    complete=complete,
                    now=time.monotonic(),
                )
        await self._refresh_holes(symbol, unit)
        # Not in ``finally``: a cancelled unit (crash, shutdown deadline) writes nothing.
        if task is not None and self.on_task_update is not None:
            await self.on_task_update(task)

    @staticmethod
    def _progress_of(task: RangeTask, unit: MinuteRange, decided: int) -> ProgressFn:
        """Progress of a part of ``unit`` as progress of the whole unit."""
        return lambda _part, done: task.progress(unit, decided + done)

    async def _still_missing(self, symbol: str, unit: MinuteRange) -> list[MinuteRange]:
        async with self.pool.acquire() as conn:
            return await store.scan_holes(conn, symbol, unit.start, unit.end)

    def _on_db_error(
        self, symbol: str, unit: MinuteRange, task: RangeTask | None, exc: BaseException
    ) -> None:
        """A unit ended by a database error, handled by its class; never a crash. Lost and
        transient (retries spent) errors leave the hole for a later scan; a server error
        (schema, disk, privileges) too, but an operator must look; rows the database
        refuses would be refused again: the unit is parked until restart, like a range
        the exchange rejects."""
        kind = classify_db_error(exc)
        self.metrics.errors.labels(f"database_{kind}").inc()
        fields = {"symbol": symbol, "unit_start": unit.start, "error": describe(exc), "kind": str(kind)}
        if kind is DbErrorClass.REJECTED:
            self.parked[symbol] = merge([*self.parked[symbol], unit])
            if task is not None:
                task.error = f"rows refused by the database: {describe(exc)}"
            log.error("backfill_rows_rejected", **fields)
        elif kind is DbErrorClass.SERVER:
            log.error("backfill_db_error", **fields)
        else:
            lost = kind is DbErrorClass.CONNECTION_LOST
            log.warning("backfill_db_lost" if lost else "backfill_db_retries_spent", **fields)

    # ---- NOTIFY --------------------------------------------------------------------------

    def on_notify(self, payload: str) -> None:
        """A gap_detected row was inserted: scan that symbol now, up to the gap's end."""
        try:
            data = orjson.loads(payload)
            symbol = data["symbol"]
            start = datetime_to_ms(datetime.fromisoformat(data["gap_start"]))
            end = datetime_to_ms(datetime.fromisoformat(data["gap_end"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("notify_ignored", error=str(exc), payload=payload[:200])
            self.request_scan()
            return
        if symbol not in self.claimed:
            log.warning("notify_unknown_symbol", symbol=str(symbol)[:32])
            return
        log.info("gap_notified", symbol=symbol, gap_start=start, gap_end=end)
        self.request_scan(symbol, reported_range(start, end))


def reported_range(start: int, end: int) -> MinuteRange:
    """The minutes of a feeder's gap report: its gap_end may name the last missing minute
    (inclusive), so the range ends a minute after it."""
    first = start - start % MINUTE_MS
    return MinuteRange(first, max(end - end % MINUTE_MS + MINUTE_MS, first))
