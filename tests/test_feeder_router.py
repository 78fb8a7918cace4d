"""Frame routing: decode, validate, dedupe, sample (no event loop, no sockets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from feeder.core.accumulator import Accumulator
from feeder.core.connections import BookTickerMode
from feeder.core.gaps import GapDetector
from feeder.core.router import BadFrame, FrameRouter, Outcome, Routed
from feeder.core.watchdog import StaleWatchdog
from quaint.binance.models import MINUTE_MS
from tests.support.feeder import T0, book_frame, candle, kline_frame, tick

FIXTURES = Path(__file__).parent / "fixtures" / "binance"


def make(mode: BookTickerMode = "all", symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> FrameRouter:
    acc = Accumulator(
        batch_size=1000, linger_s=60, max_batch_rows=10_000, max_buffered=10_000, signal=asyncio.Event
    )
    return FrameRouter(list(symbols), mode, acc, GapDetector(70), StaleWatchdog(70))


def outcome(routed: Routed) -> Outcome:
    return routed.outcome if isinstance(routed, BadFrame) else routed


def drained(r: FrameRouter) -> tuple[list[int], list[int], list[str]]:
    batch = r.acc.drain()
    return (
        [(c.open_time - T0) // MINUTE_MS for c in batch.candles],
        [t.update_id for t in batch.ticks],
        [e.event_type for e in batch.events],
    )


def test_real_binance_frames() -> None:
    r = make(symbols=("FTMUSDT",))
    closed = (FIXTURES / "ws_combined_kline_1m_closed.json").read_bytes()
    still_open = (FIXTURES / "ws_combined_kline_1m_open_last_before_close.json").read_bytes()
    assert r.on_frame(still_open, 0, 0.0) is Outcome.KLINE_OPEN
    assert r.on_frame(closed, 0, 0.0) is Outcome.CANDLE
    lines = (
        (FIXTURES / "cryptofeed_binance_combined_stream_kline1m_bookTicker.jsonl").read_text().splitlines()
    )
    outcomes = {outcome(r.on_frame(orjson.loads(line)["raw"], 1, 0.0)) for line in lines}
    assert Outcome.MALFORMED not in outcomes
    assert r.malformed == 0 and r.book_frames > 0


def test_only_closed_candles_are_stored() -> None:
    r = make()
    assert r.on_frame(kline_frame(candle(0), closed=False), 0, 0.0) is Outcome.KLINE_OPEN
    assert r.on_frame(kline_frame(candle(0)), 0, 0.0) is Outcome.CANDLE
    assert drained(r)[0] == [0]
    assert r.gaps.last("BTCUSDT") == T0


def test_overlapping_connections_store_each_candle_once() -> None:
    r = make()
    for minute in (0, 1, 1, 2, 2):
        r.on_frame(kline_frame(candle(minute)), 0, 0.0)
    assert drained(r)[0] == [0, 1, 2]
    assert r.duplicate_candles == 2


def test_gap_in_the_stream_queues_one_gap_event_with_the_candle() -> None:
    r = make()
    r.on_frame(kline_frame(candle(0)), 0, 0.0)
    r.on_frame(kline_frame(candle(3)), 0, 0.0)
    minutes, _, events = drained(r)
    assert minutes == [0, 3] and events == ["gap_detected"]
    assert r.gaps_detected == 1


def test_book_ticks_deduplicated_by_update_id() -> None:
    r = make("all")
    for uid in (10, 11, 11, 10, 12):
        r.on_frame(book_frame(tick(uid)), T0, 0.0)
    r.on_frame(book_frame(tick(11, symbol="ETHUSDT")), T0, 0.0)  # ids are per symbol
    assert drained(r)[1] == [10, 11, 12, 11]
    assert r.duplicate_ticks == 2


def test_update_id_sequence_restart_is_not_a_duplicate() -> None:
    r = make("all")
    r.on_frame(book_frame(tick(50_000_000)), T0, 0.0)
    assert r.on_frame(book_frame(tick(5)), T0, 0.0) is Outcome.TICK


def test_sampled_mode_keeps_the_last_tick_of_each_second() -> None:
    r = make("sampled")
    for uid, at in ((1, T0 + 10), (2, T0 + 500), (3, T0 + 999), (4, T0 + 1000), (5, T0 + 2500)):
        r.on_frame(book_frame(tick(uid)), at, 0.0)
    assert drained(r)[1] == [3, 4]  # second 0 -> 3, second 1 -> 4; second 2 still open
    assert r.flush_samples(T0 + 2999, 0.0) == 0  # second 2 is not over yet
    assert r.flush_samples(T0 + 3000, 0.0) == 1
    assert drained(r)[1] == [5]
    r.on_frame(book_frame(tick(6)), T0 + 3100, 0.0)
    assert r.flush_samples(T0 + 3100, 0.0, force=True) == 1  # shutdown
    assert drained(r)[1] == [6]


def test_sampled_mode_drops_duplicates_before_sampling() -> None:
    r = make("sampled")
    r.on_frame(book_frame(tick(2)), T0 + 10, 0.0)
    r.on_frame(book_frame(tick(1)), T0 + 20, 0.0)  # older, from the other connection
    r.flush_samples(T0 + 1000, 0.0)
    assert drained(r)[1] == [2]


def test_book_state_at_each_candle_close_is_remembered() -> None:
    r = make("sampled")
    r.on_frame(book_frame(tick(1, bid="1")), T0, 0.0)
    r.on_frame(kline_frame(candle(0)), T0, 0.0)
    r.on_frame(book_frame(tick(2, bid="2")), T0, 0.0)
    snap = r.book_at_close("BTCUSDT", T0)
    assert snap is not None and snap.update_id == 1  # not the tick that came after the close
    assert r.book_at_close("ETHUSDT", T0) is None
    latest = r.latest_tick("BTCUSDT")
    assert latest is not None and latest.update_id == 2


def test_control_and_unexpected_frames() -> None:
    r = make()
    assert r.on_frame(b'{"e":"serverShutdown","E":1}', 0, 0.0) is Outcome.SHUTDOWN
    assert r.on_frame(b'{"result":null,"id":1}', 0, 0.0) is Outcome.CONTROL
    assert outcome(r.on_frame(b'{"code":-1121,"msg":"Invalid symbol."}', 0, 0.0)) is Outcome.UNEXPECTED
    assert outcome(r.on_frame(kline_frame(candle(0, symbol="XRPUSDT")), 0, 0.0)) is Outcome.UNEXPECTED
    misaligned = kline_frame(candle(0), t=T0 + 1, T=T0 + MINUTE_MS)
    assert outcome(r.on_frame(misaligned, 0, 0.0)) is Outcome.UNEXPECTED
    assert outcome(r.on_frame(kline_frame(candle(0), i="5m"), 0, 0.0)) is Outcome.UNEXPECTED
    assert r.unexpected == 4 and r.control_frames == 3
    unsubscribed = r.on_frame(kline_frame(candle(1, symbol="XRPUSDT")), 0, 0.0)
    assert unsubscribed == BadFrame(Outcome.UNEXPECTED, "kline for an unsubscribed symbol")
    assert drained(r) == ([], [], [])


def test_book_ticks_ignored_when_mode_is_off() -> None:
    r = make("off")
    assert outcome(r.on_frame(book_frame(tick(1)), T0, 0.0)) is Outcome.UNEXPECTED
    assert drained(r)[1] == []


def test_malformed_frames_are_counted_with_the_field() -> None:
    r = make()
    assert outcome(r.on_frame(b"<html>502</html>", 0, 0.0)) is Outcome.MALFORMED
    bad = r.on_frame(b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":"x"}}', 0, 0.0)
    assert isinstance(bad, BadFrame) and bad.outcome is Outcome.MALFORMED
    assert r.malformed == 2
    assert bad.field == "s" and bad.reason == "missing"  # the outcome says what is wrong


def test_closed_candle_feeds_the_watchdog() -> None:
    r = make()
    r.watchdog.arm(["BTCUSDT"], 0.0)
    r.on_frame(kline_frame(candle(0)), 0, 50.0)
    assert r.watchdog.since_last_closed("BTCUSDT", 60.0) == 10.0


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_any_bytes_give_an_outcome_never_an_exception(raw: bytes) -> None:
    r = make()
    assert isinstance(r.on_frame(raw, 0, 0.0), Outcome | BadFrame)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["e", "E", "s", "k", "u", "b", "a", "B", "A", "stream", "data", "result", "id"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=8),
            st.booleans(),
            st.dictionaries(
                st.sampled_from(["t", "T", "x", "i", "o", "c"]), st.one_of(st.integers(), st.text(max_size=5))
            ),
        ),
    )
)
def test_json_objects_of_the_wrong_shape_never_raise(obj: dict[str, object]) -> None:
    r = make()
    assert isinstance(r.on_frame(json.dumps(obj), 0, 0.0), Outcome | BadFrame)  # json: big ints too
