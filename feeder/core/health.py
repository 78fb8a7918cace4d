"""``GET /health`` body (pure): the seed's six fields plus per-symbol detail.

* ``unhealthy`` (503): nothing is flowing (every symbol stale: no closed candle for
  the stale timeout, connected or not), every connection was refused for good (a
  fatal answer, e.g. HTTP 451), or the buffer overflowed while the database was down
  (data is being dropped right now).
* ``degraded`` (503): the database is unreachable (rows are buffered), a connection
  is down (e.g. between a failure and the reconnect, or refused for good), or some
  symbol is stale.
* ``healthy`` (200): otherwise.

``problems`` (only when there are some) says why a connection was refused for good.

Bounded at the whole market's size: ``symbol_states`` counts the symbols by state (``streaming``,
``stale``, ``waiting``: no closed candle yet, ``disconnected``) and ``stalest`` details the worst
``STALEST_SHOWN`` stale ones; the per-symbol map ``symbols`` is there for up to ``DETAIL_MAX``
symbols, else only when asked (:class:`Detail`: ``?symbols=all``, ``?symbol=BTCUSDT,ETHUSDT`` or
``?state=stale``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quaint.binance.models import ms_to_datetime
from quaint.service.health import HealthReport, connection_status


@dataclass(frozen=True, slots=True)
class SymbolHealth:
    symbol: str
    last_candle_open: int | None  # ms
    seconds_since_last_candle: float | None
    stale: bool
    connected: bool


@dataclass(frozen=True, slots=True)
class HealthInputs:
    connections_up: int
    connections_planned: int
    database_connected: bool
    shedding_drops: bool  # rows dropped during the current outage
    candles_processed: int
    uptime_s: float
    symbols: list[SymbolHealth]
    refused: list[str] = field(default_factory=list)  # connections stopped by a fatal answer, and why


DETAIL_MAX = 50  # up to this many symbols, /health lists every one
STALEST_SHOWN = 10
STATES = ("streaming", "stale", "waiting", "disconnected")


@dataclass(frozen=True, slots=True)
class Detail:
    """Which symbols ``/health`` details (its query parameters)."""

    everything: bool = False
    symbols: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Detail | None:
        def split(key: str) -> frozenset[str]:
            return frozenset(p.strip() for p in query.get(key, "").split(",") if p.strip())

        everything = query.get("symbols", "").strip().lower() == "all"
        wanted = frozenset(s.upper() for s in split("symbol"))
        states = split("state") & frozenset(STATES)
        if not (everything or wanted or states):
            return None
        return cls(everything, wanted, states)

    def shows(self, s: SymbolHealth) -> bool:
        return self.everything or s.symbol in self.symbols or state_of(s) in self.states


def state_of(s: SymbolHealth) -> str:
    if s.stale:
        return "stale"
    if not s.connected:
        return "disconnected"
    return "waiting" if s.last_candle_open is None else "streaming"


def symbol_detail(s: SymbolHealth) -> dict[str, Any]:
    return {
        "last_candle_time": iso(s.last_candle_open),
        "seconds_since_last_candle": (
            None if s.seconds_since_last_candle is None else round(s.seconds_since_last_candle, 3)
        ),
        "stale": s.stale,
        "websocket_connected": s.connected,
    }


def iso(ms: int | None) -> str | None:
    return None if ms is None else ms_to_datetime(ms).isoformat().replace("+00:00", "Z")


def build_health(h: HealthInputs, detail: Detail | None = None) -> HealthReport:
    ws_all = h.connections_up == h.connections_planned
    any_stale = any(s.stale for s in h.symbols)
    all_stale = bool(h.symbols) and all(s.stale for s in h.symbols)
    all_refused = h.connections_planned > 0 and len(h.refused) >= h.connections_planned
    if all_stale or all_refused or (not h.database_connected and h.shedding_drops):
        status = "unhealthy"
    elif not h.database_connected or not ws_all or any_stale:
        status = "degraded"
    else:
        status = "healthy"
    newest = max((s.last_candle_open for s in h.symbols if s.last_candle_open is not None), default=None)
    body: dict[str, Any] = {
        "websocket_connected": ws_all,
        "candles_processed": h.candles_processed,
        "database_status": connection_status(h.database_connected),
        "last_candle_time": iso(newest),
        "uptime_seconds": round(h.uptime_s, 3),
    }
    states = dict.fromkeys(STATES, 0)
    for s in h.symbols:
        states[state_of(s)] += 1
    body["symbol_states"] = states
    stale = sorted(
        (s for s in h.symbols if s.stale),
        key=lambda s: -1.0 if s.seconds_since_last_candle is None else -s.seconds_since_last_candle,
    )
    body["stalest"] = [{"symbol": s.symbol, **symbol_detail(s)} for s in stale[:STALEST_SHOWN]]
    if detail is not None or len(h.symbols) <= DETAIL_MAX:
        body["symbols"] = {s.symbol: symbol_detail(s) for s in h.symbols if detail is None or detail.shows(s)}
    if h.refused:
        body["problems"] = list(h.refused)
    return HealthReport(status=status, body=body)
