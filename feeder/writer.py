"""The sender: the tasks that move batches from the accumulator into the database.

The main lane writes every kind of row: each batch commits its candles first (one
idempotent upsert statement, for latency), then its book ticks and quality events in
one transaction, so a retried batch never half-repeats: book ticks have no key to make
a repeat harmless (see ``_commit``). Beside it, ``EXPRESS_LANES`` lanes write closed
candles alone (``Accumulator.poll_candles``) while the database is up, each on a pool
connection of its own, so that a candle arriving during a write in flight (a tick COPY,
another candle's commit) starts its own write at once instead of waiting for that one.

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
  reading), /health turns degraded, and the write is retried with the injected backoff
  (by the main lane alone: the express lanes stand down until the database is back).
  On the first success a ``db_unavailable`` event records the outage, plus what was
  dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import structlog

from feeder.core.accumulator import Accumulator, Batch
from feeder.core.events import drop_events, gap_event, outage_event
from feeder.core.gaps import Gap, minute_ranges
from feeder.metrics import FeederMetrics
from quaint.binance.models import BookTick, datetime_to_ms
from quaint.service.clock import wall_ms
from quaint.service.logging import LogThrottle
from quaint.service.retry import jittered_backoff
from quaint.store.book import copy_book_ticks
from quaint.store.candles import upsert_candles
from quaint.store.errors import DB_ERRORS, DbErrorClass, classify_db_error, describe
from quaint.store.quality import gap_reported, log_event, minutes_missing
from quaint.store.quality_event import QualityEvent
from quaint.store.textcopy import TextEncoder

log = structlog.get_logger(__name__)

# Closed candles of a minute arrive together (every symbol closes at once) and in a few
# socket reads: two lanes beside the main one start each read's candles at once. Each
# keeps a pool connection of its own (DB_POOL_MAX_SIZE 5: two express lanes, the main
# lane, the feature task, one spare); a smaller pool gets fewer lanes (``lanes_for``).
EXPRESS_LANES = 2
# Connections an express lane may never keep: one for the main lane, one for the rest.
POOL_RESERVE = 2


def lanes_for(pool_max_size: int, wanted: int = EXPRESS_LANES) -> int:
    """Express lanes a pool of ``pool_max_size`` can hold without starving the main lane."""
    return max(0, min(wanted, pool_max_size - POOL_RESERVE))


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


class _Delays:
    """One lane's retry delays: the injected policies, restarted after each success."""

    def __init__(
        self, retry: Callable[[], Iterator[float]], transient: Callable[[], Iterator[float]]
    ) -> None:
        self._policies = retry, transient
        self.reset()

    def reset(self) -> None:
        self._retry, self._transient = self._policies[0](), self._policies[1]()

    def after(self, failure: DbErrorClass) -> float:
        return next(self._transient if failure is DbErrorClass.TRANSIENT else self._retry)


class _Lease:
    """Where one lane's writes run. The main lane takes a pool connection per batch; an
    express lane keeps its own between writes, so a closed candle's write starts with no
    pool acquire and waits for no release: asyncpg resets every released connection (one
    more round trip), and that reset stood between a burst's candles. Given back after any
    failure, so the pool replaces a broken connection or resets a used one."""

    def __init__(self, pool: asyncpg.Pool, *, keep: bool) -> None:
        self.pool, self.keep = pool, keep
        self.held: asyncpg.pool.PoolConnectionProxy | None = None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        if not self.keep:
            async with self.pool.acquire() as conn:
                yield conn
            return
        if self._gone():
            await self.give_back()
        if self.held is None:
            self.held = await self.pool.acquire()
        try:
            yield self.held
        except BaseException:
            await self.give_back()
            raise

    def _gone(self) -> bool:
        """The held connection closed meanwhile (the server went away): asyncpg has then
        released it to the pool itself, and the proxy raises on every call."""
        try:
            return self.held is not None and self.held.is_closed()
        except asyncpg.InterfaceError:
            return True

    async def give_back(self) -> None:
        conn, self.held = self.held, None
        if conn is not None:
            await self.pool.release(conn)


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
        express_lanes: int = EXPRESS_LANES,
        clock: Callable[[], float] = time.monotonic,
        book_owner: Callable[[list[BookTick]], Awaitable[list[BookTick]]] | None = None,
    ) -> None:
        self.pool = pool
        self.acc = acc
        # Whether this feeder writes a symbol's book ticks (feeder.book_owner): None = every symbol's.
        self.book_owner = book_owner
        self.metrics = metrics
        self.retry_delays = retry_delays
        self.transient_delays = transient_delays
        self.write_timeout_s = write_timeout_s
        self.express_lanes = lanes_for(pool.get_max_size(), express_lanes)
        self.clock = clock
        self.connected = True
        self.candles_written = 0
        self.last_candle_written: int | None = None  # newest open time committed
        self._text = TextEncoder()  # the COPY text of seconds and symbols, kept across batches
        self._outage_started: int | None = None
        self._outage_error = ""
        self._outage_peak = 0
        self._throttle = LogThrottle(interval_s=30.0, burst=3)

    # ---- the lanes ----

    async def run(self) -> None:
        """Write batches until the accumulator is closed and finished."""
        async with asyncio.TaskGroup() as tg:
            for lane in range(self.express_lanes):
                tg.create_task(self._express(), name=f"sender-express-{lane}")
            await self._main()

    async def _main(self) -> None:
        acc = self.acc
        delays = _Delays(self.retry_delays, self.transient_delays)
        lease = _Lease(self.pool, keep=False)
        while True:
            now = self.clock()
            batch = acc.poll(now)
            if batch is not None:
                await self._write_settled(batch, delays, lease)
                continue
            if acc.finished:
                return
            deadline = acc.next_deadline()
            try:
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - now)):
                    await acc.batch_ready.wait()
            except TimeoutError:
                pass

    async def _express(self) -> None:
        acc = self.acc
        delays = _Delays(self.retry_delays, self.transient_delays)
        lease = _Lease(self.pool, keep=True)
        try:
            while True:
                batch = acc.poll_candles()
                if batch is None:
                    if acc.closing:
                        return  # the main lane flushes what is left
                    await acc.candles_ready.wait()
                    continue
                # A failed batch is put back: the main lane retries it, this lane waits its turn.
                await self._write_settled(batch, delays, lease)
        finally:
            await lease.give_back()

    async def _write_settled(self, batch: Batch, delays: _Delays, lease: _Lease) -> None:
        """Write a polled batch and settle it; after a failure, wait the lane's next delay."""
        failure = await self._write(batch, lease)
        self.acc.settle()
        if failure is None:
            delays.reset()
        else:
            await asyncio.sleep(delays.after(failure))

    # ---- one batch ----

    async def _write(self, batch: Batch, lease: _Lease) -> DbErrorClass | None:
        """Commit a batch (bisecting around rejected rows). None when every row is written
        or isolated; otherwise the class of the error that stopped it, the unwritten rows
        back in the accumulator."""
        stack = [batch]
        while stack:
            part = stack.pop()
            try:
                started, rows = self.clock(), part.rows
                async with asyncio.timeout(self.write_timeout_s):
                    await self._commit(part, lease)
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

    async def _commit(self, batch: Batch, lease: _Lease) -> None:
        """Candles first, in one statement that commits on its own: a closed candle's
        receipt-to-commit latency is mostly round trips, and the upsert is idempotent,
        so they need not wait for the rest. Once committed they leave the batch, so a
        failure after that retries (or bisects) only the ticks and events, which
        commit together, all or nothing: ticks have no key and must never half-repeat."""
        # Which ticks are this feeder's to write, asked before a connection is held: a symbol
        # seen for the first time waits for its lock's answer (up to BOOK_TAKEOVER_S / 2).
        ticks = await self._owned(batch.ticks)
        async with lease.connection() as conn:
            if batch.candles:
                await upsert_candles(conn, batch.candles, "ws")
                self._candles_committed(batch)
            if batch.events:
                async with conn.transaction():
                    if ticks:
                        await copy_book_ticks(conn, ticks, self._text)
                    for event in batch.events:
                        await self._log_event(conn, event)
            elif ticks:
                await copy_book_ticks(conn, ticks, self._text)  # one COPY: atomic on its own

    async def _owned(self, ticks: list[BookTick]) -> list[BookTick]:
        return ticks if self.book_owner is None or not ticks else await self.book_owner(ticks)

    async def _log_event(self, conn: asyncpg.Connection, event: QualityEvent) -> None:
        # A retried batch whose first commit did land (acknowledgement lost) or a
        # restart must not report the same gap twice.
        if event.event_type == "gap_detected":
            for part in await self._still_missing(conn, event):
                if not await gap_reported(conn, part):
                    await log_event(conn, part)
            return
        await log_event(conn, event)

    async def _still_missing(self, conn: asyncpg.Connection, event: QualityEvent) -> list[QualityEvent]:
        """The gap's runs of minutes nobody stored: with redundant feeders the other one
        may have had them (then there is no gap to report, or a smaller one)."""
        if event.symbol is None or event.gap_start is None or event.gap_end is None:
            return [event]
        missing = await minutes_missing(conn, event.symbol, event.gap_start, event.gap_end)
        if len(missing) == event.candles_missing:
            return [event]
        reason = str(event.details.get("reason", "reconnect"))
        runs = minute_ranges(datetime_to_ms(m) for m in missing)
        return [gap_event(Gap(event.symbol, start, end, reason)) for start, end in runs]

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
            self.acc.begin_outage()  # parked readers switch to shedding
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
        report = self.acc.end_outage()
        now = self.clock()
        ended = wall_ms()
        started = self._outage_started or ended
        self.acc.add_event(outage_event(started, ended, self._outage_peak, self._outage_error), now)
        if report is not None:
            for event in drop_events(report):
                self.acc.add_event(event, now)
            log.error("data_dropped", book_ticks=report.ticks, candles=report.candles, events=report.events)
        log.info("database_recovered", outage_s=(ended - started) / 1000.0, buffered=len(self.acc))
        self._outage_started = None
