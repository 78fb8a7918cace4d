"""The batching core between the stream readers and the database writer (sans-I/O).

Modelled on aiokafka's accumulator/sender split: readers ``add_*`` rows, the sender
asks ``poll(now)`` with a monotonic ``now`` for a batch (``ready``, then ``drain``), writes
it and ``settle``s it; this class does no I/O and never looks at a clock itself, so
every decision is unit-testable. It owns what its callers wait on and its own state
transitions; the sender only drains, and tells it about the database (``begin_outage``,
``end_outage``) and shutdown (``close``).

Batching rule. A batch is ready when it holds ``batch_size`` rows, when its oldest
row has waited ``linger_s``, or at once if it holds a closed candle or a quality
event. The sender only asks while it is idle, so the last rule is group commit: an
idle writer writes a lone candle immediately, a busy one lets rows pile up behind
the write in flight and takes them all (up to ``max_batch_rows``) next time.

Express candles. A closed candle must not wait behind a write in flight (a book-tick
COPY, another candle's commit): ``poll_candles`` gives the candles alone to the sender's
express lanes, which write them on connections of their own while the main lane is
busy. Only while the database is up: during an outage the main lane alone retries and
then flushes everything, oldest first.

Wake-ups are :class:`Signal` flags made by the factory the shell passes (``asyncio.Event``):
the accumulator sets and clears them, callers await them.

* ``batch_ready``: the main lane should look again: a candle or an event arrived (ready
  now), the buffer went from empty to non-empty (start the linger timer), ticks reached
  ``batch_size``, rows were put back, shutdown. ``poll`` clears it when nothing is ready.
  Readers therefore never wake the sender themselves, and a busy stream costs no wake-up
  per row.
* ``candles_ready``: a closed candle arrived for the express lanes (``poll_candles``
  clears it when there is none to take).
* ``space_free``: set exactly while readers may add rows (not ``over_limit``).

Bound. ``max_buffered`` rows at most. While the database is up, a full buffer is
backpressure: readers wait (``space_free``). While it is down (``shedding``),
readers must keep draining the socket or the exchange drops them, so a full buffer
evicts book ticks first (oldest first; they cannot be recovered but are the least
valuable) and only then refuses candles (recoverable by backfill). Everything
dropped is recorded in :class:`DropLedger` for a ``data_dropped`` event.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from quaint.binance.models import BookTick, CandleRow
from quaint.store.quality_event import QualityEvent


class Signal(Protocol):
    """A wake-up flag (``asyncio.Event`` is one): the accumulator only sets and clears
    it; its callers await ``wait()``."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self) -> Awaitable[object]: ...


@dataclass(slots=True)
class Batch:
    """One transaction's worth of rows. ``candle_received`` holds each candle's
    monotonic receipt time (for the receipt-to-commit latency histogram)."""

    candles: list[CandleRow] = field(default_factory=list)
    candle_received: list[float] = field(default_factory=list)
    ticks: list[BookTick] = field(default_factory=list)
    events: list[QualityEvent] = field(default_factory=list)
    oldest: float = 0.0  # monotonic time the oldest row was added

    @property
    def rows(self) -> int:
        return len(self.candles) + len(self.ticks) + len(self.events)


@dataclass(slots=True)
class DropReport:
    ticks_by_symbol: dict[str, int]
    candles_by_symbol: dict[str, list[int]]  # symbol -> dropped open times (ms), sorted
    events: int

    @property
    def ticks(self) -> int:
        return sum(self.ticks_by_symbol.values())

    @property
    def candles(self) -> int:
        return sum(len(v) for v in self.candles_by_symbol.values())


class DropLedger:
    """What was thrown away since the last report."""

    def __init__(self) -> None:
        self.ticks: Counter[str] = Counter()
        self.candles: dict[str, set[int]] = {}
        self.events = 0

    def __bool__(self) -> bool:
        return bool(self.ticks or self.candles or self.events)

    def take(self) -> DropReport | None:
        if not self:
            return None
        report = DropReport(
            ticks_by_symbol=dict(self.ticks),
            candles_by_symbol={s: sorted(t) for s, t in self.candles.items()},
            events=self.events,
        )
        self.ticks.clear()
        self.candles.clear()
        self.events = 0
        return report


class Accumulator:
    def __init__(
        self,
        *,
        batch_size: int,
        linger_s: float,
        max_batch_rows: int,
        max_buffered: int,
        signal: Callable[[], Signal],
        max_events: int = 10_000,
    ) -> None:
        if not 1 <= batch_size <= max_batch_rows:
            raise ValueError("need 1 <= batch_size <= max_batch_rows")
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.max_batch_rows = max_batch_rows
        self.max_buffered = max_buffered
        self.max_events = max_events
        self._candles: deque[CandleRow] = deque()
        self._candle_received: deque[float] = deque()
        self._ticks: deque[BookTick] = deque()
        self._events: deque[QualityEvent] = deque()
        self._oldest: float | None = None
        self._in_flight = 0  # batches drained and not settled yet
        self.shedding = False  # the database is unreachable (begin_outage .. end_outage)
        self.closing = False  # shutdown: everything is ready, linger no longer applies
        self.ledger = DropLedger()
        self.batch_ready = signal()
        self.candles_ready = signal()
        self.space_free = signal()
        self.space_free.set()
        self.dropped_ticks = 0  # lifetime totals, exported as metrics
        self.dropped_candles = 0
        self.dropped_events = 0

    # ---- state ----

    @property
    def depth(self) -> int:
        return len(self._candles) + len(self._ticks)

    @property
    def candle_depth(self) -> int:
        return len(self._candles)

    @property
    def tick_depth(self) -> int:
        return len(self._ticks)

    @property
    def event_depth(self) -> int:
        return len(self._events)

    @property
    def over_limit(self) -> bool:
        """Readers should wait (backpressure) before adding more: ``space_free`` is clear."""
        return not self.shedding and len(self._candles) + len(self._ticks) >= self.max_buffered

    @property
    def finished(self) -> bool:
        """Shut down, nothing buffered and nothing in flight: the sender may stop."""
        return self.closing and not self._in_flight and len(self) == 0

    def __len__(self) -> int:
        return self.depth + len(self._events)

    def _space_changed(self) -> None:
        if self.over_limit:
            self.space_free.clear()
        else:
            self.space_free.set()

    # ---- state transitions (told by the sender) ----

    def begin_outage(self) -> None:
        """The database became unreachable: readers must keep reading, so a full buffer
        sheds instead of pushing back (parked readers are released)."""
        self.shedding = True
        self.enforce_bound()
        self.space_free.set()

    def end_outage(self) -> DropReport | None:
        """The database is back: backpressure again; what was dropped meanwhile."""
        self.shedding = False
        self._space_changed()
        return self.ledger.take()

    def close(self) -> None:
        """Shutdown: stop lingering, flush everything as fast as possible."""
        self.closing = True
        self.batch_ready.set()
        self.candles_ready.set()  # express lanes stop; the main lane flushes the rest

    # ---- intake ----

    def add_candle(self, candle: CandleRow, now: float) -> bool:
        """Queue a closed candle; False if it had to be dropped (buffer full of candles)."""
        if self.shedding and self.depth >= self.max_buffered:
            if self._ticks:
                self._drop_oldest_tick()
            else:
                self._drop_candle(candle)
                return False
        self._candles.append(candle)
        self._candle_received.append(now)
        self._touch(now)
        self.batch_ready.set()
        if not self.shedding:
            self.candles_ready.set()
            if len(self._candles) + len(self._ticks) >= self.max_buffered:
                self.space_free.clear()
        return True

    def add_tick(self, tick: BookTick, now: float) -> bool:
        if self.shedding and self.depth >= self.max_buffered:
            if not self._ticks:
                self._drop_tick(tick)  # the buffer is all candles: keep them
                return False
            self._drop_oldest_tick()
        self._ticks.append(tick)
        if self._oldest is None:
            self._oldest = now
            self.batch_ready.set()
        elif len(self._ticks) == self.batch_size:
            self.batch_ready.set()
        if not self.shedding and len(self._candles) + len(self._ticks) >= self.max_buffered:
            self.space_free.clear()
        return True

    def add_event(self, event: QualityEvent, now: float) -> bool:
        if len(self._events) >= self.max_events:
            self.dropped_events += 1
            self.ledger.events += 1
            return False
        self._events.append(event)
        self._touch(now)
        self.batch_ready.set()
        return True

    def _touch(self, now: float) -> None:
        if self._oldest is None:
            self._oldest = now

    def _drop_oldest_tick(self) -> None:
        self._drop_tick(self._ticks.popleft())

    def _drop_tick(self, tick: BookTick) -> None:
        self.dropped_ticks += 1
        self.ledger.ticks[tick.symbol] += 1

    def _drop_candle(self, candle: CandleRow) -> None:
        self.dropped_candles += 1
        self.ledger.candles.setdefault(candle.symbol, set()).add(candle.open_time)

    # ---- sender side ----

    def ready(self, now: float) -> bool:
        if self._oldest is None:
            return False
        return (
            self.closing
            or bool(self._candles)
            or bool(self._events)
            or len(self._ticks) >= self.batch_size
            or now - self._oldest >= self.linger_s
        )

    def poll(self, now: float) -> Batch | None:
        """The main lane's next batch if one is ready, else ``None`` with ``batch_ready``
        cleared: wait for it, or until ``next_deadline()``."""
        if self.ready(now):
            return self.drain()
        self.batch_ready.clear()
        return None

    def poll_candles(self) -> Batch | None:
        """An express lane's batch: the buffered closed candles alone (at most
        ``max_batch_rows``), while the database is up and not shutting down; else
        ``None`` with ``candles_ready`` cleared."""
        if not self._candles or self.shedding or self.closing:
            self.candles_ready.clear()
            return None
        batch = Batch(oldest=self._candle_received[0])
        for _ in range(min(self.max_batch_rows, len(self._candles))):
            batch.candles.append(self._candles.popleft())
            batch.candle_received.append(self._candle_received.popleft())
        if not (self._candles or self._ticks or self._events):
            self._oldest = None
        self._in_flight += 1
        self.space_free.set()  # at least one row left and the database is up
        return batch

    def settle(self) -> None:
        """A polled batch is done with: committed, its bad rows isolated, or put back."""
        self._in_flight -= 1
        if self.closing:
            self.batch_ready.set()  # the main lane may be waiting to see ``finished``

    def next_deadline(self) -> float | None:
        """Monotonic time at which the pending rows become ready by linger alone."""
        return None if self._oldest is None else self._oldest + self.linger_s

    def drain(self) -> Batch:
        """Take up to ``max_batch_rows`` rows: all events, then candles, then ticks."""
        batch = Batch(oldest=self._oldest or 0.0)
        budget = self.max_batch_rows
        while self._events:
            batch.events.append(self._events.popleft())
        n = min(budget, len(self._candles))
        for _ in range(n):
            batch.candles.append(self._candles.popleft())
            batch.candle_received.append(self._candle_received.popleft())
        budget -= n
        n = min(budget, len(self._ticks))
        if n == len(self._ticks):
            batch.ticks = list(self._ticks)
            self._ticks.clear()
        else:
            for _ in range(n):
                batch.ticks.append(self._ticks.popleft())
        if not (self._candles or self._ticks or self._events):
            self._oldest = None
        # else: rows left behind are at least as old as the batch: keep _oldest, they are
        # ready at once and the backlog drains at full speed.
        self._in_flight += 1
        self._space_changed()
        return batch

    def requeue(self, batch: Batch) -> None:
        """Put (part of) a failed batch back in front, in its original order, then
        re-apply the bound (rows that arrived meanwhile may have filled the buffer)."""
        self._events.extendleft(reversed(batch.events))
        self._requeue_candles(batch)
        self._ticks.extendleft(reversed(batch.ticks))
        if batch.rows:
            self._oldest = batch.oldest if self._oldest is None else min(self._oldest, batch.oldest)
            self.batch_ready.set()
        if self.shedding:
            self.enforce_bound()
        else:
            self._space_changed()

    def _requeue_candles(self, batch: Batch) -> None:
        received = self._candle_received
        if not received or not batch.candles or batch.candle_received[-1] <= received[0]:
            self._candles.extendleft(reversed(batch.candles))
            received.extendleft(reversed(batch.candle_received))
            return
        # Two lanes failed together: merge by receipt time (stable: the older lane first).
        merged = sorted(
            zip([*batch.candle_received, *received], [*batch.candles, *self._candles], strict=True),
            key=lambda pair: pair[0],
        )
        self._candle_received = deque(at for at, _ in merged)
        self._candles = deque(c for _, c in merged)

    def enforce_bound(self) -> None:
        """Shed down to ``max_buffered``: oldest ticks first, then the newest candles."""
        while self.depth > self.max_buffered and self._ticks:
            self._drop_oldest_tick()
        while self.depth > self.max_buffered:
            self._candle_received.pop()
            self._drop_candle(self._candles.pop())
