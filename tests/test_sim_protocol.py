"""Sans-I/O tests: WebSocket subscription rules, fault injection, the kline schedule,
and settings validation."""

from __future__ import annotations

import random

import orjson
import pytest
from pydantic import ValidationError

from quaint.binance.errors import ProtocolError
from quaint.binance.models import MINUTE_MS, KlineEvent
from quaint.binance.parse import decode_frame, parse_kline_event
from simulator.exchange import Exchange
from simulator.faults import MALFORMED_FRAMES, FaultController, FaultError, FrameInjector
from simulator.market import MarketModel
from simulator.schedule import BookSequencer, KlineScheduler
from simulator.settings import SimSettings, describe_errors, resolve_range
from simulator.streams import IncomingRateLimit, StreamError, Subscriptions, parse_stream, parse_stream_list

T0 = 1_700_000_040_000
SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})


def _subs(combined: bool = True, max_streams: int = 1024) -> Subscriptions:
    return Subscriptions(SYMBOLS, combined, max_streams)


def test_subscribe_list_unsubscribe_with_int_and_string_ids() -> None:
    subs = _subs()
    reply = subs.handle('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ethusdt@bookTicker"],"id":1}')
    assert reply.payload == {"result": None, "id": 1}
    assert [s.name for s in reply.added] == ["btcusdt@kline_1m", "ethusdt@bookTicker"]
    reply = subs.handle('{"method":"LIST_SUBSCRIPTIONS","id":"list-1"}')
    assert reply.payload == {"result": ["btcusdt@kline_1m", "ethusdt@bookTicker"], "id": "list-1"}
    reply = subs.handle('{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":null}')
    assert reply.payload == {"result": None, "id": None} and [s.name for s in reply.removed] == [
        "btcusdt@kline_1m"
    ]
    # Re-subscribing to a stream already held adds nothing.
    again = subs.handle('{"method":"SUBSCRIBE","params":["ethusdt@bookTicker"],"id":2}')
    assert again.added == ()


def test_properties_switch_combined_payloads() -> None:
    subs = _subs(combined=False)
    assert subs.handle('{"method":"GET_PROPERTY","params":["combined"],"id":1}').payload == {
        "result": False,
        "id": 1,
    }
    assert (
        subs.handle('{"method":"SET_PROPERTY","params":["combined",true],"id":2}').payload["result"] is None
    )
    assert subs.combined
    assert subs.handle('{"method":"SET_PROPERTY","params":["combined","yes"],"id":3}').payload["code"] == 1
    assert subs.handle('{"method":"GET_PROPERTY","params":["colour"],"id":4}').payload == {
        "code": 0,
        "msg": "Unknown property",
        "id": 4,
    }


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", 3),
        ("[1]", 2),
        ('{"method":"SUBSCRIBE","params":[]}', 2),  # id missing
        ('{"method":"SUBSCRIBE","params":[],"id":1.5}', 2),
        ('{"method":"SUBSCRIBE","params":[],"id":"has space"}', 2),
        ('{"params":[],"id":1}', 2),
        ('{"method":"SUBSCRIB","params":[],"id":1}', 2),
        ('{"method":"SUBSCRIBE","params":"btcusdt@kline_1m","id":1}', 2),
        ('{"method":"SUBSCRIBE","params":[5],"id":1}', 2),
        ('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}', 2),
        ('{"method":"SUBSCRIBE","params":["xrpusdt@kline_1m"],"id":1}', 2),
        ('{"method":"SUBSCRIBE","params":["btcusdt@kline_5m"],"id":1}', 2),
    ],
)
def test_bad_control_messages_get_binance_errors(text: str, code: int) -> None:
    reply = _subs().handle(text)
    assert reply.payload["code"] == code and isinstance(reply.payload["msg"], str)
    assert reply.added == ()


def test_error_echoes_id_and_parses_as_api_error() -> None:
    reply = _subs().handle('{"method":"SUBSCRIBE","params":["nope@kline_1m"],"id":42}')
    assert reply.payload["id"] == 42
    frame = decode_frame(orjson.dumps(reply.payload), 0)
    assert frame.event.code == 2  # type: ignore[union-attr]


def test_stream_limit() -> None:
    subs = _subs(max_streams=3)
    ok = subs.handle('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","btcusdt@bookTicker"],"id":1}')
    assert ok.payload["result"] is None
    too_many = subs.handle('{"method":"SUBSCRIBE","params":["ethusdt@kline_1m","ethusdt@bookTicker"],"id":2}')
    assert too_many.payload["code"] == 2 and "too many streams" in too_many.payload["msg"]
    assert len(subs.streams) == 2
    with pytest.raises(StreamError, match="too many streams"):
        parse_stream_list("/".join(["btcusdt@kline_1m"] * 1025), SYMBOLS)


def test_stream_names_are_normalised() -> None:
    assert parse_stream("BTCUSDT@kline_1m", SYMBOLS).name == "btcusdt@kline_1m"
    assert parse_stream("ethusdt@bookTicker", SYMBOLS).kind == "bookTicker"
    assert [s.name for s in parse_stream_list("btcusdt@kline_1m/btcusdt@kline_1m/", SYMBOLS)] == [
        "btcusdt@kline_1m"
    ]
    for bad in ("btcusdt", "btcusdt@bookticker", "@kline_1m", "btc usdt@kline_1m"):
        with pytest.raises(StreamError):
            parse_stream(bad, SYMBOLS)


def test_incoming_rate_limit_is_five_per_second() -> None:
    limit = IncomingRateLimit(5)
    assert all(limit.allow(10.0 + i * 0.01) for i in range(5))
    assert not limit.allow(10.5)
    assert limit.allow(11.2)  # the window has slid past the burst


# ---- fault injection ------------------------------------------------------------------


def test_injector_duplicates_reorders_and_malforms() -> None:
    faults = FaultController(seed=1)
    inj = FrameInjector(faults)
    faults.set_message_fault("duplicate", {"count": 1, "kind": "bookTicker"})
    assert inj.push(b"k1", "kline") == [b"k1"]
    assert inj.push(b"b1", "bookTicker") == [b"b1", b"b1"]
    assert inj.push(b"b2", "bookTicker") == [b"b2"]
    faults.set_message_fault("reorder", {"count": 1})
    assert inj.push(b"a", "kline") == []  # held back...
    assert inj.push(b"ctl", "control") == [b"ctl"]  # control replies are never touched
    assert inj.push(b"b", "kline_closed") == [b"b", b"a"]  # ...and sent after the next one
    faults.set_message_fault("malformed", {"count": 2})
    out = inj.push(b"c", "bookTicker") + inj.push(b"d", "bookTicker") + inj.push(b"e", "bookTicker")
    assert out == [MALFORMED_FRAMES[0], b"c", MALFORMED_FRAMES[1], b"d", b"e"]


def test_kline_filter_covers_closed_klines() -> None:
    faults = FaultController()
    faults.set_message_fault("duplicate", {"count": 5, "kind": "kline_closed"})
    inj = FrameInjector(faults)
    assert inj.push(b"open", "kline") == [b"open"]
    assert inj.push(b"closed", "kline_closed") == [b"closed", b"closed"]


def test_probabilistic_faults_are_seeded() -> None:
    def run(seed: int) -> list[list[bytes]]:
        faults = FaultController(seed=seed)
        faults.set_message_fault("duplicate", {"probability": 0.5})
        inj = FrameInjector(faults)
        return [inj.push(b"x", "bookTicker") for _ in range(50)]

    assert run(3) == run(3)
    assert 10 < sum(len(r) == 2 for r in run(3)) < 40


def test_every_malformed_frame_is_rejected_by_the_project_parser() -> None:
    for frame in MALFORMED_FRAMES:
        with pytest.raises(ProtocolError):
            decode_frame(frame, 0)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("duplicate", {"count": -1}),
        ("reorder", {"probability": 2}),
        ("malformed", {"kind": "trade"}),
        ("nope", {}),
    ],
)
def test_bad_fault_parameters(name: str, body: dict[str, object]) -> None:
    with pytest.raises(FaultError):
        FaultController().set_message_fault(name, body)


def test_rest_faults_are_consumed_in_order() -> None:
    faults = FaultController()
    faults.add_rest_fault(429, 1, path="/api/v3/klines")
    faults.add_rest_fault(503, 1)
    assert faults.next_rest_fault("/api/v3/ping").status == 503  # type: ignore[union-attr]
    assert faults.next_rest_fault("/api/v3/klines").status == 429  # type: ignore[union-attr]
    assert faults.next_rest_fault("/api/v3/klines") is None
    with pytest.raises(FaultError):
        faults.add_rest_fault(404, 1)


# ---- the kline schedule -----------------------------------------------------------------


def _exchange(faults: FaultController | None = None) -> Exchange:
    return Exchange(MarketModel(5, sorted(SYMBOLS)), faults or FaultController(), history_ms=10**9)


def _all(_: str) -> bool:
    return True


def test_schedule_emits_partials_then_exact_finals() -> None:
    ex = _exchange()
    sched = KlineScheduler(ex, T0 + 1_500, final_delay_ms=1400)
    assert sched.next_due_ms() == T0 + 2_000
    pubs = sched.due(T0 + 2_000, _all)
    assert {p.stream for p in pubs} == {"btcusdt@kline_1m", "ethusdt@kline_1m"} and not any(
        p.closed for p in pubs
    )
    # Jump past the close: the final (E = T + 1.4 s) and only the newest partial.
    pubs = sched.due(T0 + MINUTE_MS + 4_100, _all)
    finals = [p for p in pubs if p.closed]
    assert [p.time_ms for p in pubs] == sorted(p.time_ms for p in pubs)
    assert len(finals) == 2 and len(pubs) == 4
    for pub in finals:
        event = parse_kline_event(pub.payload)
        assert isinstance(event, KlineEvent) and event.is_closed
        assert event.candle == ex.market.candle(pub.symbol, T0)
        assert event.event_time - event.candle.close_time == 1_401


def test_schedule_catches_up_every_final_and_honours_gaps() -> None:
    faults = FaultController()
    ex = _exchange(faults)
    faults.add_feed_gap(T0 + 2 * MINUTE_MS, T0 + 4 * MINUTE_MS, "BTCUSDT")
    faults.add_outage(T0 + 5 * MINUTE_MS, T0 + 6 * MINUTE_MS)
    sched = KlineScheduler(ex, T0, final_delay_ms=0)
    pubs = sched.due(T0 + 10 * MINUTE_MS, lambda s: s == "btcusdt@kline_1m")
    finals = [parse_kline_event(p.payload).candle.open_time for p in pubs if p.closed]
    expected = [T0 + i * MINUTE_MS for i in range(10) if i not in (2, 3, 5)]
    assert finals == expected


def test_book_sequencer_ids_increase_and_outages_silence_it() -> None:
    faults = FaultController()
    ex = _exchange(faults)
    books = BookSequencer(ex, T0)
    ids = [books.tick("BTCUSDT", T0 + i * 100)["u"] for i in range(5)]  # type: ignore[index]
    assert ids == sorted(ids) and len(set(ids)) == 5
    faults.add_outage(T0 + MINUTE_MS, T0 + 2 * MINUTE_MS)
    assert books.tick("BTCUSDT", T0 + MINUTE_MS + 5) is None


# ---- settings ------------------------------------------------------------------------


def test_settings_from_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_SYMBOLS", "btcusdt, solusdt")
    monkeypatch.setenv("SIM_SPEED", "60")
    monkeypatch.setenv("SIM_START", "2024-01-01T00:00:00Z")
    settings = SimSettings()
    assert settings.symbols == ["BTCUSDT", "SOLUSDT"] and settings.speed == 60
    assert settings.start == 1_704_067_200_000
    assert SimSettings(speed=2).speed == 2  # explicit values beat the environment
    assert SimSettings.without_env().speed == 1.0  # tests can ignore the environment


def test_settings_errors_are_one_line_each() -> None:
    with pytest.raises(ValidationError) as info:
        SimSettings.without_env(speed=-1, port="x", symbols="btc-usdt", feed_gap="9..3")
    lines = describe_errors(info.value)
    assert len(lines) == 4
    assert any(line.startswith("invalid --speed / SIM_SPEED:") for line in lines)
    assert all("\n" not in line for line in lines)


def test_ranges_accept_ms_iso_and_relative_minutes() -> None:
    assert resolve_range("+2..+5", T0 + 7) == (T0 + 2 * MINUTE_MS, T0 + 5 * MINUTE_MS)
    assert resolve_range("1000..2000", 0) == (1000, 2000)
    assert resolve_range("2024-01-01T00:00:00Z..2024-01-01T00:10Z", 0) == (
        1_704_067_200_000,
        1_704_067_800_000,
    )
    with pytest.raises(ValueError, match="empty"):
        resolve_range("+5..+2", T0)


def test_random_is_not_used_globally() -> None:
    # The simulator must not perturb (or depend on) the global random state.
    state = random.getstate()
    MarketModel(1, ["BTCUSDT"]).partial("BTCUSDT", T0, 7)
    assert random.getstate() == state
