"""The batching core: readiness rules, drain order, bound and shedding, the express lane,
the wake-ups it owns (no event loop runs: ``asyncio.Event`` is only set and cleared)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeder.core.accumulator import Accumulator, Batch
from quaint.binance.models import CandleRow
from quaint.store.quality_event import QualityEvent
from tests.support.feeder import candle, tick


def row(minute: int) -> CandleRow:
    """A closed candle as the router hands it over (the exchange's strings)."""
    return CandleRow.of(candle(minute))


class Counted:
    """A Signal that counts how often it was set."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        self.event.set()

    def clear(self) -> None:
        self.event.clear()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self) -> Awaitable[object]:
        return self.event.wait()


def make(batch_size: int = 10, linger: float = 1.0, max_rows: int = 100, bound: int = 1000) -> Accumulator:
    return Accumulator(
        batch_size=batch_size,
        linger_s=linger,
        max_batch_rows=max_rows,
        max_buffered=bound,
        signal=asyncio.Event,
    )


def test_empty_is_never_ready() -> None:
    acc = make()
    assert not acc.ready(1e9)
    assert acc.next_deadline() is None


def test_ticks_wait_for_size_or_linger() -> None:
    acc = make(batch_size=3, linger=1.0)
    acc.add_tick(tick(1), now=10.0)
    acc.add_tick(tick(2), now=10.5)
    assert not acc.ready(10.9)
    assert acc.next_deadline() == 11.0  # linger counts from the first row of the batch
    assert acc.ready(11.0)
    acc.add_tick(tick(3), now=10.6)
    assert acc.ready(10.6)  # batch_size reached


def test_lone_candle_is_ready_at_once() -> None:
    """Group commit: an idle writer does not make a closed candle wait for the linger."""
    acc = make(batch_size=10, linger=60.0)
    acc.add_candle(row(0), now=5.0)
    assert acc.ready(5.0)


def test_event_is_ready_at_once() -> None:
    acc = make(linger=60.0)
    acc.add_event(QualityEvent(event_type="error"), now=1.0)
    assert acc.ready(1.0)


def test_rows_arriving_during_a_write_form_the_next_batch() -> None:
    acc = make(batch_size=100, linger=60.0, max_rows=1000)
    acc.add_candle(row(0), 0.0)
    first = acc.drain()
    # while `first` is being written, rows pile up
    for i in range(5):
        acc.add_tick(tick(i), 0.1)
    acc.add_candle(row(1), 0.2)
    second = acc.drain()
    assert [c.open_time for c in first.candles] == [candle(0).open_time]
    assert len(second.ticks) == 5 and len(second.candles) == 1
    assert len(acc) == 0 and not acc.ready(1e9)


def test_drain_respects_max_rows_and_keeps_order() -> None:
    acc = make(batch_size=1, max_rows=4)
    acc.add_event(QualityEvent(event_type="error"), 0.0)
    for i in range(3):
        acc.add_candle(row(i), 0.0)
    for i in range(5):
        acc.add_tick(tick(i), 0.0)
    b1 = acc.drain()
    assert len(b1.events) == 1  # events are never held back
    assert [c.open_time for c in b1.candles] == [candle(i).open_time for i in range(3)]
    assert [t.update_id for t in b1.ticks] == [0]
    assert acc.ready(0.0)  # the remainder is as old as the batch: ready at once
    b2 = acc.drain()
    assert [t.update_id for t in b2.ticks] == [1, 2, 3, 4]


def test_requeue_puts_rows_back_in_front_in_order() -> None:
    acc = make(batch_size=1)
    for i in range(3):
        acc.add_candle(row(i), float(i))
        acc.add_tick(tick(i), float(i))
    batch = acc.drain()
    acc.add_candle(row(3), 9.0)
    acc.add_tick(tick(3), 9.0)
    acc.requeue(batch)
    again = acc.drain()
    assert [c.open_time for c in again.candles] == [candle(i).open_time for i in range(4)]
    assert [t.update_id for t in again.ticks] == [0, 1, 2, 3]
    assert again.oldest == 0.0
    assert again.candle_received == [0.0, 1.0, 2.0, 9.0]


def test_backpressure_while_database_is_up() -> None:
    acc = make(bound=3)
    for i in range(3):
        assert acc.add_tick(tick(i), 0.0)
    assert acc.over_limit  # readers wait; nothing is dropped
    assert not acc.space_free.is_set()
    assert acc.dropped_ticks == 0
    acc.begin_outage()
    assert not acc.over_limit  # during an outage readers keep reading
    assert acc.space_free.is_set()
    assert acc.end_outage() is None  # back up, nothing was dropped: readers wait again
    assert acc.over_limit and not acc.space_free.is_set()
    acc.drain()
    assert acc.space_free.is_set()


def test_shedding_drops_ticks_before_candles() -> None:
    acc = make(bound=4)
    acc.begin_outage()
    acc.add_tick(tick(1), 0.0)
    acc.add_tick(tick(2), 0.0)
    acc.add_candle(row(0), 0.0)
    acc.add_candle(row(1), 0.0)
    assert acc.add_candle(row(2), 0.0)  # evicts the oldest tick
    assert acc.add_tick(tick(3), 0.0)  # evicts tick 2 for the newer tick
    assert acc.add_candle(row(3), 0.0)  # evicts tick 3
    assert not acc.add_tick(tick(4), 0.0)  # all candles now: the tick is refused
    assert not acc.add_candle(row(4), 0.0)  # and so is a fifth candle
    assert acc.depth == 4 and acc.tick_depth == 0
    assert (acc.dropped_ticks, acc.dropped_candles) == (4, 1)
    report = acc.ledger.take()
    assert report is not None
    assert report.ticks_by_symbol == {"BTCUSDT": 4}
    assert report.candles_by_symbol == {"BTCUSDT": [candle(4).open_time]}
    assert acc.ledger.take() is None


def test_requeue_during_outage_sheds_down_to_the_bound() -> None:
    acc = make(batch_size=1, bound=3)
    acc.add_candle(row(0), 0.0)
    acc.add_tick(tick(0), 0.0)
    batch = acc.drain()
    acc.add_candle(row(1), 0.0)
    acc.add_candle(row(2), 0.0)
    acc.add_candle(row(3), 0.0)
    acc.begin_outage()
    acc.requeue(batch)  # 4 candles + 1 tick > 3
    assert acc.tick_depth == 0
    assert acc.candle_depth == 3
    kept = acc.drain()
    assert [c.open_time for c in kept.candles] == [candle(i).open_time for i in range(3)]
    report = acc.ledger.take()
    assert report is not None and report.candles_by_symbol == {"BTCUSDT": [candle(3).open_time]}


def test_the_sender_is_woken_only_when_it_must_act() -> None:
    acc = Accumulator(batch_size=3, linger_s=1.0, max_batch_rows=100, max_buffered=1000, signal=Counted)
    ready = cast(Counted, acc.batch_ready)
    calls = ready.sets
    acc.add_tick(tick(1), 0.0)  # empty -> non-empty: start the linger timer
    acc.add_tick(tick(2), 0.0)
    assert ready.sets - calls == 1
    acc.add_tick(tick(3), 0.0)  # batch_size reached
    assert ready.sets - calls == 2
    acc.add_tick(tick(4), 0.0)
    assert ready.sets - calls == 2
    acc.add_candle(row(0), 0.0)  # ready now
    assert ready.sets - calls == 3


def test_poll_clears_the_wake_up_only_when_nothing_is_ready() -> None:
    acc = make(batch_size=3, linger=1.0)
    acc.add_tick(tick(1), now=10.0)
    assert acc.batch_ready.is_set()
    assert acc.poll(10.5) is None and not acc.batch_ready.is_set()  # wait, until next_deadline()
    assert acc.next_deadline() == 11.0
    batch = acc.poll(11.0)
    assert batch is not None and [t.update_id for t in batch.ticks] == [1]


def test_the_express_lane_takes_closed_candles_alone() -> None:
    acc = make(batch_size=100, linger=60.0)
    acc.add_tick(tick(1), 0.0)
    acc.add_candle(row(0), 1.0)
    acc.add_candle(row(1), 2.0)
    assert acc.candles_ready.is_set()
    express = acc.poll_candles()
    assert express is not None and [c.open_time for c in express.candles] == [
        row(0).open_time,
        row(1).open_time,
    ]
    assert express.candle_received == [1.0, 2.0] and not express.ticks and not express.events
    assert acc.poll_candles() is None and not acc.candles_ready.is_set()
    assert acc.tick_depth == 1  # left for the main lane
    assert acc.next_deadline() == 60.0  # ... lingering from the tick's arrival


def test_the_express_lane_stands_down_during_an_outage_and_at_shutdown() -> None:
    acc = make()
    acc.begin_outage()
    acc.add_candle(row(0), 0.0)
    assert not acc.candles_ready.is_set() and acc.poll_candles() is None
    assert acc.ready(0.0)  # the main lane retries it
    acc.end_outage()
    acc.add_candle(row(1), 0.0)
    assert acc.candles_ready.is_set()
    acc.close()
    assert acc.poll_candles() is None  # the main lane flushes everything
    assert acc.candles_ready.is_set() is False
    batch = acc.poll(0.0)
    assert batch is not None and len(batch.candles) == 2


def test_finished_only_when_closed_empty_and_nothing_in_flight() -> None:
    acc = make()
    acc.add_candle(row(0), 0.0)
    acc.add_tick(tick(0), 0.0)
    express = acc.poll_candles()
    acc.close()
    main = acc.poll(0.0)
    assert express is not None and main is not None and len(acc) == 0
    assert not acc.finished
    acc.settle()
    acc.requeue(express)  # the express write failed: its rows are the main lane's now
    acc.settle()
    assert not acc.finished and acc.batch_ready.is_set()
    again = acc.poll(0.0)
    assert again is not None and [c.open_time for c in again.candles] == [row(0).open_time]
    acc.settle()
    assert acc.finished


def test_two_lanes_put_back_keep_the_receipt_order() -> None:
    acc = make(batch_size=1, max_rows=2)
    for i in range(4):
        acc.add_candle(row(i), float(i))
    main = acc.drain()  # candles 0, 1
    express = acc.poll_candles()  # candles 2, 3
    assert main is not None and express is not None
    acc.add_candle(row(4), 4.0)
    acc.requeue(express)  # fails first
    acc.requeue(main)
    assert [c.open_time for c in acc.drain().candles] == [row(i).open_time for i in (0, 1)]
    assert [c.open_time for c in acc.drain().candles] == [row(i).open_time for i in (2, 3)]
    assert [c.open_time for c in acc.drain().candles] == [row(4).open_time]


def test_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Accumulator(batch_size=10, linger_s=1, max_batch_rows=5, max_buffered=100, signal=asyncio.Event)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("candle"), st.integers(0, 0)),
        st.tuples(st.just("tick"), st.integers(0, 0)),
        st.tuples(st.just("drain"), st.booleans()),  # bool: the write fails (requeue)
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(1, 7))
def test_no_row_lost_duplicated_or_reordered_without_shedding(
    script: list[tuple[str, object]], max_rows: int
) -> None:
    acc = make(batch_size=1, max_rows=max_rows, bound=10_000)
    n_candles = n_ticks = 0
    written_c: list[int] = []
    written_t: list[int] = []
    for op, arg in script:
        if op == "candle":
            acc.add_candle(row(n_candles), 0.0)
            n_candles += 1
        elif op == "tick":
            acc.add_tick(tick(n_ticks), 0.0)
            n_ticks += 1
        elif acc.ready(0.0):
            batch = acc.drain()
            assert batch.rows <= max_rows or batch.events
            if arg:
                acc.requeue(batch)
            else:
                written_c += [c.open_time for c in batch.candles]
                written_t += [t.update_id for t in batch.ticks]
    while len(acc):
        batch = acc.drain()
        written_c += [c.open_time for c in batch.candles]
        written_t += [t.update_id for t in batch.ticks]
    assert written_c == [candle(i).open_time for i in range(n_candles)]
    assert written_t == list(range(n_ticks))


lanes = st.lists(
    st.one_of(
        st.just(("candle", False)),
        st.just(("tick", False)),
        st.tuples(st.sampled_from(["main", "express"]), st.just(False)),
        st.tuples(st.just("done"), st.booleans()),  # the oldest batch in flight: written, or put back
        st.tuples(st.just("done_newest"), st.booleans()),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(lanes, st.integers(1, 5))
def test_with_lanes_in_flight_every_row_is_written_once_and_the_buffer_stays_in_order(
    script: list[tuple[str, bool]], max_rows: int
) -> None:
    acc = make(batch_size=1, max_rows=max_rows, bound=10_000)
    n_candles = n_ticks = 0
    in_flight: list[Batch] = []
    written_c: list[int] = []
    written_t: list[int] = []

    def finish(batch: Batch, fail: bool) -> None:
        if fail:
            acc.requeue(batch)
        else:
            written_c.extend(c.open_time for c in batch.candles)
            written_t.extend(t.update_id for t in batch.ticks)
        acc.settle()

    for op, fail in script:
        if op == "candle":
            acc.add_candle(row(n_candles), float(n_candles))
            n_candles += 1
        elif op == "tick":
            acc.add_tick(tick(n_ticks), 0.0)
            n_ticks += 1
        elif op in ("main", "express") and len(in_flight) < 3:
            batch = acc.poll(0.0) if op == "main" else acc.poll_candles()
            if batch is not None:
                in_flight.append(batch)
        elif op.startswith("done") and in_flight:
            finish(in_flight.pop(-1 if op == "done_newest" else 0), fail)
        received = list(acc._candle_received)
        assert received == sorted(received)  # put back in receipt order, whoever failed
    while in_flight:
        finish(in_flight.pop(), False)
    acc.close()
    while not acc.finished:
        batch = acc.poll(0.0)
        assert batch is not None
        finish(batch, False)
    assert sorted(written_c) == [row(i).open_time for i in range(n_candles)]
    assert sorted(written_t) == list(range(n_ticks))
