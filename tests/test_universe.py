"""Universe selection (quaint.binance.universe): patterns, exclusions, resolution, changes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from quaint.binance.exchange_info import exchange_info
from quaint.binance.symbols import make_profile
from quaint.binance.universe import (
    ListedSymbol,
    Resolution,
    UniverseChange,
    UniverseError,
    diff,
    parse_listed,
    parse_spec,
    resolve,
)
from quaint.service.settings import Settings, describe_errors

LISTED = [
    ListedSymbol("BTCUSDT", "TRADING", "USDT", True),
    ListedSymbol("ETHUSDT", "TRADING", "USDT", True),
    ListedSymbol("LUNAUSDT", "BREAK", "USDT", True),
    ListedSymbol("BTCFDUSD", "TRADING", "FDUSD", True),
    ListedSymbol("ETHBTC", "TRADING", "BTC", True),
    ListedSymbol("XUSD", "TRADING", "USD", True),  # *USD must not catch *USDT, nor *USDT this
    ListedSymbol("MARGUSDT", "TRADING", "USDT", False),  # not spot
]


@pytest.mark.parametrize(
    ("symbols", "exclude", "trading", "halted"),
    [
        ("ALL", "", {"BTCUSDT", "ETHUSDT", "BTCFDUSD", "ETHBTC", "XUSD"}, {"LUNAUSDT"}),
        ("*USDT,*FDUSD", "", {"BTCUSDT", "ETHUSDT", "BTCFDUSD"}, {"LUNAUSDT"}),
        ("*USDT", "ETHUSDT", {"BTCUSDT"}, {"LUNAUSDT"}),
        ("ALL", "*USDT,*BTC", {"BTCFDUSD", "XUSD"}, set()),
        ("*USD", "", {"XUSD"}, set()),
        ("ETHBTC,*FDUSD", "", {"ETHBTC", "BTCFDUSD"}, set()),
        ("*EUR", "", set(), set()),
    ],
)
def test_a_pattern_resolves_to_the_right_set(
    symbols: str, exclude: str, trading: set[str], halted: set[str]
) -> None:
    spec = Settings(symbols=symbols, symbols_exclude=exclude).universe
    assert spec.dynamic
    got = resolve(spec, LISTED)
    assert (set(got.trading), set(got.halted)) == (trading, halted)


def test_a_list_stays_a_list() -> None:
    spec = Settings(symbols="btcusdt, ETHUSDT", symbols_exclude="ethusdt").universe
    assert not spec.dynamic
    assert spec.static_symbols() == ["BTCUSDT"]


def test_resolution_from_a_served_exchange_info_body() -> None:
    body = exchange_info([make_profile(0, s) for s in ("BTCUSDT", "ETHBTC")], 0, 6000)
    body["symbols"][1]["status"] = "BREAK"
    listed = parse_listed(body)
    assert [(x.symbol, x.status, x.quote, x.spot) for x in listed] == [
        ("BTCUSDT", "TRADING", "USDT", True),
        ("ETHBTC", "BREAK", "BTC", True),
    ]
    got = resolve(parse_spec(["ALL"]), listed)
    assert got == Resolution(frozenset({"BTCUSDT"}), frozenset({"ETHBTC"}))


@pytest.mark.parametrize("body", [None, {}, {"symbols": [1]}, {"symbols": [{"symbol": "X"}]}])
def test_a_bad_exchange_info_body_is_an_error(body: object) -> None:
    with pytest.raises(UniverseError, match="exchangeInfo"):
        parse_listed(body)


def test_changes_between_two_resolutions() -> None:
    before = Resolution(frozenset({"A", "B", "C"}), frozenset({"D", "E"}))
    after = Resolution(frozenset({"A", "D", "N"}), frozenset({"B", "F"}))
    change = diff(before, after)
    # F appeared halted (announced, never traded): in no set, no event until it trades.
    assert change == UniverseChange(
        listed=frozenset({"N"}),
        delisted=frozenset({"C", "E"}),
        halted=frozenset({"B"}),
        resumed=frozenset({"D"}),
    )
    assert change.started == {"N", "D"} and change.stopped == {"C", "E", "B"}
    assert change.events() == [
        ("symbol_listed", "N"),
        ("symbol_halted", "B"),
        ("symbol_resumed", "D"),
        ("symbol_delisted", "C"),
        ("symbol_delisted", "E"),
    ]
    assert not diff(after, after)


def test_every_event_type_is_one_the_schema_knows() -> None:
    from quaint.store.quality_event import EVENT_TYPES

    change = UniverseChange(*(frozenset({"X"}) for _ in range(4)))
    assert {kind for kind, _ in change.events()} <= set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("kwargs", "name", "words"),
    [
        ({"symbols": "USDT*"}, "SYMBOLS", "*USDT"),
        ({"symbols": "*"}, "SYMBOLS", "pattern"),
        ({"symbols": "*US-DT"}, "SYMBOLS", "pattern"),
        ({"symbols": "ALL,ALL"}, "SYMBOLS", "duplicate"),
        ({"symbols_exclude": "ALL"}, "SYMBOLS_EXCLUDE", "invalid"),
        ({"symbols": "BTCUSDT", "symbols_exclude": "BTCUSDT"}, "SYMBOLS_EXCLUDE", "every symbol"),
        ({"universe_refresh_s": 0}, "UNIVERSE_REFRESH_S", ""),
    ],
)
def test_bad_universe_settings_name_the_variable(kwargs: dict[str, object], name: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**kwargs)  # type: ignore[arg-type]
    lines = describe_errors(info.value)
    assert len(lines) == 1
    assert lines[0].startswith(f"invalid configuration: {name}: ")
    assert words in lines[0]


def test_a_bad_pattern_exits_as_bad_configuration() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from quaint.service.settings import *; load_settings(Settings)"],
        env={"SYMBOLS": "*USDT,US*", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "invalid configuration: SYMBOLS: Value error, invalid entry(ies): US* (expected a symbol such as"
        " BTCUSDT, a quote asset pattern such as *USDT or ALL)"
    ]
