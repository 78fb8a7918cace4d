"""The sender: the one task that moves batches from the accumulator into the database.

Each batch commits its candles first (one idempotent upsert statement, for latency),
then its book ticks and quality events in one transaction, so a retried batch never
half-repeats: book ticks have no key to make a repeat harmless (see ``_commit``).

Errors are handled by their class (:mod:`quaint.store.errors`):

* rejected (``DataError``, integrity violations): the batch is bisected until the
  offending rows are isolated; those are counted and logged, the rest committed;
* transient (a deadlock, a serialization failure, a lock or statement timeout): the
  batch goes back to the front of the buffer and is written again after a short
  jittered delay, counted as ``feeder_db_write_errors_total{kind="transient"}``; the
  database is not "down" for it;
* connection lost or a server error (unreachable, restarting, a write timeout; or a
  schema missing, disk full, read-only): the database is unavailable. The batch goes
  back to the front of the buffer, the accumulator starts shedding (readers keep
  reading), /health turns degraded, and the write is retried with the injected backoff.
  On the first success a ``db_unavailable`` event records the outage, plus what was
  dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import asyncpg
import structlog

from feeder.accumulator import Accumulator, Batch
from feeder.events import drop_events, outage_event
from feeder.metrics import FeederMetrics
from quaint.service.logging import LogThrottle
from quaint.service.retry import jittered_backoff
from quaint.store.book import copy_book_ticks
from quaint.store.candles import upsert_candles
from quaint.store.errors import DB_ERRORS, DbErrorClass, classify_db_error, describe
from quaint.store.quality import QualityEvent, log_event

log = structlog.get_logger(__name__)

GAP_EXISTS = """
SELECT EXISTS (SELECT 1 FROM data_quality_logs WHERE event_type = 'gap_detected'
               AND symbol = $1 AND gap_start = $2 AND gap_end = $3)
"""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def split(batch: Batch) -> tuple[Batch, Batch]:
    """Halve a batch (by kind first, so a bad candle is found without re-sending ticks)."""
    first, second = Batch(oldest=batch.oldest), Batch(oldest=batch.oldest)
    kinds = sum(1 for rows in (batch.candles, batch.ticks, batch.events) if rows)
    if kinds > 1:
        first.candles, first.candle_received = batch.candles, batch.candle_received
        if batch.candles:
            second.ticks, second.events = batch.ticks, batch.events
        else:
            first.ticks, second.events = batch.ticks, batch.events
        return first, second
    h = len(batch.candles) // 2
    first.candles, second.candles = batch.candles[:h], batch.candles[h:]
    first.candle_received, second.candle_received = batch.candle_received[:h], batch.candle_received[h:]
    h = len(batch.ticks) // 2
    first.ticks, second.ticks = batch.ticks[:h], batch.ticks[h:]
    h = len(batch.events) // 2
    first.events, second.events = batch.events[:h], batch.events[h:]
    return first, second


class Sender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        acc: Accumulator,
        metrics: FeederMetrics,
        *,
        retry_delays: Callable[[], Iterator[float]],
        transient_delays: Callable[[], Iterator[float]] = lambda: jittered_backoff(0.05, 1.0),
        write_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.acc = acc
        self.metrics = metrics
        self.retry_delays = retry_delays
        self.transient_delays = transient_delays
        self.write_timeout_s = write_timeout_s
        self.clock = clock
        self.connected = True
        self.candles_written = 0
        self.last_candle_written: int | None = None  # newest open time committed
        self._wake = asyncio.Event()
        acc.notify = self._wake.set
        self._space = asyncio.Event()
        self._outage_started: int | None = None
        self._outage_error = ""
        self._outage_peak = 0
        self._throttle = LogThrottle(interval_s=30.0, burst=3)

    # ---- reader side ----

    async def wait_for_space(self) -> None:
        """Backpressure: readers park here while the buffer is over its bound."""
        while self.acc.over_limit:
            self._space.clear()
            await self._space.wait()

    # ---- the loop ----

    async def run(self) -> None:
        """Write batches until ``close()`` was called and the buffer is empty."""
        delays, transient = self.retry_delays(), self.transient_delays()
        while True:
            now = self.clock()
            if self.acc.ready(now):
                batch = self.acc.drain()
                self._space.set()
                failure = await self._write(batch)
                if failure is None:
                    delays, transient = self.retry_delays(), self.transient_delays()
                else:
                    await asyncio.sleep(next(transient if failure is DbErrorClass.TRANSIENT else delays))
                continue
            if self.acc.closing and len(self.acc) == 0:
                return
            deadline = self.acc.next_deadline()
            self._wake.clear()
            try:
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - now)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def close(self) -> None:
        """Stop lingering: everything buffered is flushed as fast as possible."""
        self.acc.closing = True
        self._wake.set()

    # ---- one batch ----

    async def _write(self, batch: Batch) -> DbErrorClass | None:
        """Commit a batch (bisecting around rejected rows). None when every row is written
        or isolated; otherwise the class of the error that stopped it, the unwritten rows
        back in the accumulator."""
        stack = [batch]
        while stack:
            part = stack.pop()
            try:
                started, rows = self.clock(), part.rows
                async with asyncio.timeout(self.write_timeout_s):
                    await self._commit(part)
            except DB_ERRORS as exc:
                kind = classify_db_error(exc)
                self.metrics.db_errors.labels(kind).inc()
                if kind is DbErrorClass.REJECTED:
                    if part.rows == 1:
                        self._reject(part, exc)
                    else:
                        first, second = split(part)
                        stack.extend((second, first))
                    continue
                # Put back what is unwritten, oldest ending up in front.
                for pending in (*stack, part):
                    self.acc.requeue(pending)
                if kind is DbErrorClass.TRANSIENT:
                    self._on_transient(exc)
                else:
                    self._on_unavailable(exc, kind)
                return kind
            self._committed(part, started, rows)
        return None

    async def _commit(self, batch: Batch) -> None:
        """Candles first, in one statement that commits on its own: a closed candle's
        receipt-to-commit latency is mostly round trips, and the upsert is idempotent,
        so they need not wait for the rest. Once committed they leave the batch, so a
        failure after that retries (or bisects) only the ticks and events, which
        commit together, all or nothing: ticks have no key and must never half-repeat."""
        async with self.pool.acquire() as conn:
            if batch.candles:
                await upsert_candles(conn, batch.candles, "ws")
                self._candles_committed(batch)
            if batch.events:
                async with conn.transaction():
                    if batch.ticks:
                        await copy_book_ticks(conn, batch.ticks)
                    for event in batch.events:
                        await self._log_event(conn, event)
            elif batch.ticks:
                await copy_book_ticks(conn, batch.ticks)  # one COPY: atomic on its own

    async def _log_event(self, conn: asyncpg.Connection, event: QualityEvent) -> None:
        # A retried batch whose first commit did land (acknowledgement lost) or a
        # restart must not report the same gap twice.
        if event.event_type == "gap_detected" and await conn.fetchval(
            GAP_EXISTS, event.symbol, event.gap_start, event.gap_end
        ):
            return
        await log_event(conn, event)

    def _candles_committed(self, batch: Batch) -> None:
        now = self.clock()
        m = self.metrics
        m.rows_written.labels("candles_1m").inc(len(batch.candles))
        latency = m.commit_latency.labels("candle")
        for received in batch.candle_received:
            latency.observe(now - received)
        self.candles_written += len(batch.candles)
        newest = max(c.open_time for c in batch.candles)
        if self.last_candle_written is None or newest > self.last_candle_written:
            self.last_candle_written = newest
        batch.candles, batch.candle_received = [], []

    def _committed(self, batch: Batch, started: float, rows: int) -> None:
        """The rest of ``batch`` committed (its candles already counted)."""
        now = self.clock()
        m = self.metrics
        m.flush_seconds.observe(now - started)
        m.batch_rows.observe(rows)
        if batch.ticks:
            m.rows_written.labels("book_ticker").inc(len(batch.ticks))
            m.commit_latency.labels("book_tick").observe(now - batch.oldest)
        if batch.events:
            m.rows_written.labels("data_quality_logs").inc(len(batch.events))
            for event in batch.events:
                if event.event_type == "gap_detected":
                    log.warning(
                        "gap_detected",
                        symbol=event.symbol,
                        gap_start=event.gap_start,
                        gap_end=event.gap_end,
                        candles_missing=event.candles_missing,
                        reason=event.details.get("reason"),
                    )
        if not self.connected:
            self._recovered()

    def _reject(self, part: Batch, exc: BaseException) -> None:
        table = "candles_1m" if part.candles else "book_ticker" if part.ticks else "data_quality_logs"
        self.metrics.rows_rejected.labels(table).inc()
        row = part.candles or part.ticks or part.events
        log.error("row_rejected", table=table, row=repr(row[0])[:300], error=str(exc)[:300])

    def _on_transient(self, exc: BaseException) -> None:
        allowed, suppressed = self._throttle.allow("transient", self.clock())
        if allowed:
            log.warning("database_transient_error", error=describe(exc), suppressed=suppressed)

    def _on_unavailable(self, exc: BaseException, kind: DbErrorClass) -> None:
        error = describe(exc)
        if kind is DbErrorClass.SERVER:
            # Reachable but failing (schema missing, disk full, read-only...): kept and
            # retried like an outage, but an operator has to look.
            allowed, suppressed = self._throttle.allow("server_error", self.clock())
            if allowed:
                log.error("database_error", error=error, suppressed=suppressed)
        if self.connected:
            self.connected = False
            self._outage_started = wall_ms()
            self._outage_error = error
            self._outage_peak = 0
            self.acc.shedding = True
            self.acc.enforce_bound()
            self._space.set()  # parked readers switch to shedding
            log.warning("database_unavailable", error=error, buffered=len(self.acc))
        else:
            allowed, suppressed = self._throttle.allow("unavailable", self.clock())
            if allowed:
                log.warning(
                    "database_still_unavailable", error=error, buffered=len(self.acc), suppressed=suppressed
                )
        self._outage_peak = max(self._outage_peak, len(self.acc))

    def _recovered(self) -> None:
        self.connected = True
        self.acc.shedding = False
        now = self.clock()
        ended = wall_ms()
        started = self._outage_started or ended
        self.acc.add_event(outage_event(started, ended, self._outage_peak, self._outage_error), now)
        report = self.acc.ledger.take()
        if report is not None:
            for event in drop_events(report):
                self.acc.add_event(event, now)
            log.error("data_dropped", book_ticks=report.ticks, candles=report.candles, events=report.events)
        log.info("database_recovered", outage_s=(ended - started) / 1000.0, buffered=len(self.acc))
        self._outage_started = None
