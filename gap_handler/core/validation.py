"""API and CLI input validation (sans-I/O): raw strings in, typed values or a
:class:`BadInput` naming the field out. The caller passes "now" in ms."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gap_handler.core.intervals import DAY_MS, RETENTION_DAYS, MinuteRange, closed_end, floor_minute
from gap_handler.core.tracker import BACKFILL_STATES
from quaint.binance.models import MINUTE_MS, datetime_to_ms

_SYMBOL = re.compile(r"^[A-Za-z0-9]{2,20}$")
_DIGITS = re.compile(r"^-?[0-9]{1,16}$")
_BACKFILL_ID = re.compile(r"[0-9a-fA-F]{16}")
GAP_STATUSES = ("all", "open", "detected", "backfilled", "unrecoverable")


class BadInput(ValueError):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def parse_symbol(raw: object, known: Collection[str], field: str = "symbol") -> str:
    """A configured symbol, case-insensitive. Unknown -> 404 (it is not served here)."""
    if not isinstance(raw, str) or not raw.strip():
        raise BadInput(field, "required")
    symbol = raw.strip().upper()
    if not _SYMBOL.match(symbol):
        raise BadInput(field, "expected a symbol such as BTCUSDT")
    if symbol not in known:
        raise BadInput(field, f"unknown symbol {symbol}; served: {', '.join(sorted(known))}", 404)
    return symbol


def parse_optional_symbol(raw: str | None, known: Collection[str]) -> str | None:
    return None if raw is None or raw == "" else parse_symbol(raw, known)


def parse_instant(raw: object, field: str) -> int:
    """ISO 8601 date or datetime (UTC when no offset) or epoch milliseconds -> ms."""
    if isinstance(raw, bool):
        raise BadInput(field, "expected an ISO 8601 time or epoch milliseconds")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _DIGITS.match(raw.strip()):
        value = int(raw.strip())
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise BadInput(
                field, "not an ISO 8601 date/time (e.g. 2025-01-01 or 2025-01-01T12:00:00Z)"
            ) from None
        value = datetime_to_ms(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    else:
        raise BadInput(field, "expected an ISO 8601 time or epoch milliseconds")
    if value < 0:
        raise BadInput(field, "before 1970")
    return value


def parse_range(
    start_raw: object,
    end_raw: object | None,
    now_ms: int,
    *,
    start_field: str = "start",
    end_field: str = "end",
) -> MinuteRange:
    """``[start, end)`` widened to whole minutes, end defaulting to now; within the
    retention window and not in the future."""
    start = floor_minute(parse_instant(start_raw, start_field))
    end_ms = closed_end(now_ms) if end_raw is None else parse_instant(end_raw, end_field)
    end = -(-end_ms // MINUTE_MS) * MINUTE_MS
    if end <= start:
        raise BadInput(end_field, f"must be after {start_field}")
    if end > closed_end(now_ms) + MINUTE_MS:
        raise BadInput(end_field, "in the future")
    if start < now_ms - RETENTION_DAYS * DAY_MS:
        raise BadInput(start_field, f"beyond the {RETENTION_DAYS}-day retention window")
    return MinuteRange(start, end)


def parse_int(raw: str | None, field: str, *, default: int, lo: int, hi: int) -> int:
    if raw is None or raw == "":
        return default
    if not _DIGITS.match(raw.strip()):
        raise BadInput(field, "expected an integer")
    value = int(raw.strip())
    if not lo <= value <= hi:
        raise BadInput(field, f"must be within {lo}..{hi}")
    return value


def parse_gap_status(raw: str | None) -> str:
    if raw is None or raw == "":
        return "all"
    if raw not in GAP_STATUSES:
        raise BadInput("status", f"expected one of {', '.join(GAP_STATUSES)}")
    return raw


def parse_backfill_id(raw: str) -> str:
    """The id ``POST /backfills`` answered: 16 hex digits (any case)."""
    if not _BACKFILL_ID.fullmatch(raw):
        raise BadInput("id", "expected the 16 hex digits POST /backfills answered")
    return raw.lower()


def parse_backfill_state(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if raw not in BACKFILL_STATES:
        raise BadInput("state", f"expected one of {', '.join(BACKFILL_STATES)}")
    return raw


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    symbol: str
    range: MinuteRange


def parse_backfill_body(body: object, known: Collection[str], now_ms: int) -> BackfillRequest:
    """``{"symbol": ..., "start": ..., "end": ...}`` (end optional: up to now)."""
    if not isinstance(body, Mapping):
        raise BadInput("body", "expected a JSON object")
    unknown = set(body) - {"symbol", "start", "end"}
    if unknown:
        raise BadInput(sorted(unknown)[0], "unknown field")
    symbol = parse_symbol(body.get("symbol"), known)
    if "start" not in body:
        raise BadInput("start", "required")
    return BackfillRequest(symbol, parse_range(body["start"], body.get("end"), now_ms))
