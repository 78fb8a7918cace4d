"""Which symbols a service collects: ``SYMBOLS`` / ``SYMBOLS_EXCLUDE`` against exchangeInfo (sans-I/O).

``SYMBOLS`` is a fixed list (``BTCUSDT,ETHUSDT``: collected as given, no exchangeInfo needed), or holds
patterns: ``ALL`` (every spot symbol) or a quote asset ``*USDT`` (every spot symbol quoted in USDT),
mixed freely with names. ``SYMBOLS_EXCLUDE`` takes names and ``*QUOTE`` patterns too. A pattern
matches the ``quoteAsset`` exchangeInfo states, never a guess from the name (``*USD`` is not
``*USDT``).

A :class:`Resolution` is what one exchangeInfo answer says about the selection: the symbols trading
now (status ``TRADING`` and spot permitted), and those listed but not trading (a halt, ``BREAK``).
:func:`diff` compares two resolutions: listed, delisted (gone from exchangeInfo, or no longer spot),
halted and resumed, the events a service logs and acts on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ALL = "ALL"
_NAME = re.compile(r"^[A-Z0-9]{2,20}$")
_QUOTE_PATTERN = re.compile(r"^\*([A-Z0-9]{2,10})$")
TRADING = "TRADING"


class UniverseError(ValueError):
    """A bad SYMBOLS / SYMBOLS_EXCLUDE entry, or an exchangeInfo body that cannot be used."""


@dataclass(frozen=True, slots=True)
class UniverseSpec:
    names: tuple[str, ...] = ()  # explicit symbols, in the order given
    quotes: frozenset[str] = frozenset()  # *QUOTE patterns
    everything: bool = False  # ALL
    exclude_names: frozenset[str] = frozenset()
    exclude_quotes: frozenset[str] = frozenset()

    @property
    def dynamic(self) -> bool:
        """True when the set depends on exchangeInfo (a pattern is used)."""
        return self.everything or bool(self.quotes)

    def static_symbols(self) -> list[str]:
        """The fixed list (a spec without patterns), exclusions applied."""
        return [n for n in self.names if n not in self.exclude_names]

    def selects(self, symbol: str, quote: str) -> bool:
        if symbol in self.exclude_names or quote in self.exclude_quotes:
            return False
        return self.everything or symbol in self.names or quote in self.quotes


def _entries(raw: object) -> list[str]:
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list | tuple):
        raise UniverseError("expected a comma-separated list")
    return [str(p).strip().upper() for p in raw if str(p).strip()]


def parse_entries(raw: object, *, allow_all: bool) -> list[str]:
    """Normalised entries (upper case), each a name, ``*QUOTE`` or (if allowed) ``ALL``;
    a bad one is refused with the rule it breaks."""
    entries = _entries(raw)
    bad = [
        e for e in entries if (e == ALL and not allow_all) or not (_NAME.match(e) or _QUOTE_PATTERN.match(e))
    ]
    if bad:
        rule = "a symbol such as BTCUSDT, a quote asset pattern such as *USDT"
        raise UniverseError(
            f"invalid entry(ies): {', '.join(bad)} (expected {rule}{' or ALL' if allow_all else ''})"
        )
    if len(set(entries)) != len(entries):
        raise UniverseError("duplicate entries")
    return entries


def parse_spec(symbols: Iterable[str], exclude: Iterable[str] = ()) -> UniverseSpec:
    include = parse_entries(list(symbols), allow_all=True)
    if not include:
        raise UniverseError("at least one symbol or pattern is required")
    excluded = parse_entries(list(exclude), allow_all=False)
    spec = UniverseSpec(
        names=tuple(e for e in include if _NAME.match(e) and e != ALL),
        quotes=frozenset(m.group(1) for e in include if (m := _QUOTE_PATTERN.match(e))),
        everything=ALL in include,
        exclude_names=frozenset(e for e in excluded if _NAME.match(e)),
        exclude_quotes=frozenset(m.group(1) for e in excluded if (m := _QUOTE_PATTERN.match(e))),
    )
    if not spec.dynamic and not spec.static_symbols():
        raise UniverseError("SYMBOLS_EXCLUDE removes every symbol of SYMBOLS")
    return spec


@dataclass(frozen=True, slots=True)
class ListedSymbol:
    symbol: str
    status: str
    quote: str
    spot: bool


def parse_listed(body: object) -> list[ListedSymbol]:
    """The ``symbols`` of an exchangeInfo body; spot permission from ``isSpotTradingAllowed`` or
    ``permissionSets``/``permissions`` (older bodies)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("symbols"), list):
        raise UniverseError("exchangeInfo: no symbols list")
    listed = []
    for entry in body["symbols"]:
        if not isinstance(entry, Mapping):
            raise UniverseError("exchangeInfo: a symbol entry is not an object")
        symbol, status, quote = entry.get("symbol"), entry.get("status"), entry.get("quoteAsset")
        if not (isinstance(symbol, str) and isinstance(status, str) and isinstance(quote, str)):
            raise UniverseError("exchangeInfo: a symbol entry lacks symbol, status or quoteAsset")
        spot = entry.get("isSpotTradingAllowed")
        if not isinstance(spot, bool):
            sets = entry.get("permissionSets") or [entry.get("permissions") or []]
            spot = any(isinstance(s, list) and "SPOT" in s for s in sets)
        listed.append(ListedSymbol(symbol.upper(), status, quote.upper(), spot))
    return listed


@dataclass(frozen=True, slots=True)
class Resolution:
    trading: frozenset[str]
    halted: frozenset[str]  # selected and listed, but not trading (BREAK, HALT, ...)

    @property
    def known(self) -> frozenset[str]:
        return self.trading | self.halted


def resolve(spec: UniverseSpec, listed: Iterable[ListedSymbol]) -> Resolution:
    trading: set[str] = set()
    halted: set[str] = set()
    for item in listed:
        if not item.spot or not spec.selects(item.symbol, item.quote):
            continue
        (trading if item.status == TRADING else halted).add(item.symbol)
    return Resolution(frozenset(trading), frozenset(halted))


def static_resolution(spec: UniverseSpec) -> Resolution:
    """A fixed list: every symbol counts as trading (no exchangeInfo is asked)."""
    return Resolution(frozenset(spec.static_symbols()), frozenset())


@dataclass(frozen=True, slots=True)
class UniverseChange:
    listed: frozenset[str] = frozenset()
    delisted: frozenset[str] = frozenset()
    halted: frozenset[str] = frozenset()
    resumed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.listed or self.delisted or self.halted or self.resumed)

    @property
    def started(self) -> frozenset[str]:
        """Symbols to subscribe now."""
        return self.listed | self.resumed

    @property
    def stopped(self) -> frozenset[str]:
        """Symbols to unsubscribe now."""
        return self.delisted | self.halted

    def events(self) -> list[tuple[str, str]]:
        """``(event_type, symbol)`` for data_quality_logs, sorted so logs and tests are stable."""
        kinds = (
            ("symbol_listed", self.listed),
            ("symbol_halted", self.halted),
            ("symbol_resumed", self.resumed),
            ("symbol_delisted", self.delisted),
        )
        return [(kind, s) for kind, group in kinds for s in sorted(group)]


def diff(before: Resolution, after: Resolution) -> UniverseChange:
    """What changed between two resolutions. A symbol halted before it was ever seen trading
    is not an event (it is announced, not listed); a halted symbol that disappears is delisted."""
    return UniverseChange(
        listed=after.trading - before.known,
        delisted=before.known - after.known,
        halted=after.halted & before.trading,
        resumed=after.trading & before.halted,
    )
