"""The batching core: readiness rules, drain order, bound and shedding (no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeder.accumulator import Accumulator
from feeder.testing import candle, tick
from quaint.store.quality import QualityEvent


def make(batch_size: int = 10, linger: float = 1.0, max_rows: int = 100, bound: int = 1000) -> Accumulator:
    return Accumulator(batch_size=batch_size, linger_s=linger, max_batch_rows=max_rows, max_buffered=bound)


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
    acc.add_candle(candle(0), now=5.0)
    assert acc.ready(5.0)


def test_event_is_ready_at_once() -> None:
    acc = make(linger=60.0)
    acc.add_event(QualityEvent(event_type="error"), now=1.0)
    assert acc.ready(1.0)


def test_rows_arriving_during_a_write_form_the_next_batch() -> None:
    acc = make(batch_size=100, linger=60.0, max_rows=1000)
    acc.add_candle(candle(0), 0.0)
    first = acc.drain()
    # while `first` is being written, rows pile up
    for i in range(5):
        acc.add_tick(tick(i), 0.1)
    acc.add_candle(candle(1), 0.2)
    second = acc.drain()
    assert [c.open_time for c in first.candles] == [candle(0).open_time]
    assert len(second.ticks) == 5 and len(second.candles) == 1
    assert len(acc) == 0 and not acc.ready(1e9)


def test_drain_respects_max_rows_and_keeps_order() -> None:
    acc = make(batch_size=1, max_rows=4)
    acc.add_event(QualityEvent(event_type="error"), 0.0)
    for i in range(3):
        acc.add_candle(candle(i), 0.0)
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
        acc.add_candle(candle(i), float(i))
        acc.add_tick(tick(i), float(i))
    batch = acc.drain()
    acc.add_candle(candle(3), 9.0)
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
    assert acc.dropped_ticks == 0
    acc.shedding = True
    assert not acc.over_limit  # during an outage readers keep reading


def test_shedding_drops_ticks_before_candles() -> None:
    acc = make(bound=4)
    acc.shedding = True
    acc.add_tick(tick(1), 0.0)
    acc.add_tick(tick(2), 0.0)
    acc.add_candle(candle(0), 0.0)
    acc.add_candle(candle(1), 0.0)
    assert acc.add_candle(candle(2), 0.0)  # evicts the oldest tick
    assert acc.add_tick(tick(3), 0.0)  # evicts tick 2 for the newer tick
    assert acc.add_candle(candle(3), 0.0)  # evicts tick 3
    assert not acc.add_tick(tick(4), 0.0)  # all candles now: the tick is refused
    assert not acc.add_candle(candle(4), 0.0)  # and so is a fifth candle
    assert acc.depth == 4 and acc.tick_depth == 0
    assert (acc.dropped_ticks, acc.dropped_candles) == (4, 1)
    report = acc.ledger.take()
    assert report is not None
    assert report.ticks_by_symbol == {"BTCUSDT": 4}
    assert report.candles_by_symbol == {"BTCUSDT": [candle(4).open_time]}
    assert acc.ledger.take() is None


def test_requeue_during_outage_sheds_down_to_the_bound() -> None:
    acc = make(batch_size=1, bound=3)
    acc.add_candle(candle(0), 0.0)
    acc.add_tick(tick(0), 0.0)
    batch = acc.drain()
    acc.add_candle(candle(1), 0.0)
    acc.add_candle(candle(2), 0.0)
    acc.add_candle(candle(3), 0.0)
    acc.shedding = True
    acc.requeue(batch)  # 4 candles + 1 tick > 3
    assert acc.tick_depth == 0
    assert acc.candle_depth == 3
    kept = acc.drain()
    assert [c.open_time for c in kept.candles] == [candle(i).open_time for i in range(3)]
    report = acc.ledger.take()
    assert report is not None and report.candles_by_symbol == {"BTCUSDT": [candle(3).open_time]}


def test_notify_only_when_the_sender_must_act() -> None:
    acc = make(batch_size=3)
    calls: list[str] = []
    acc.notify = lambda: calls.append("x")
    acc.add_tick(tick(1), 0.0)  # empty -> non-empty: start the linger timer
    acc.add_tick(tick(2), 0.0)
    assert len(calls) == 1
    acc.add_tick(tick(3), 0.0)  # batch_size reached
    assert len(calls) == 2
    acc.add_tick(tick(4), 0.0)
    assert len(calls) == 2
    acc.add_candle(candle(0), 0.0)  # ready now
    assert len(calls) == 3


def test_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Accumulator(batch_size=10, linger_s=1, max_batch_rows=5, max_buffered=100)


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
            acc.add_candle(candle(n_candles), 0.0)
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
