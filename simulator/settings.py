"""Simulator settings: environment variables ``SIM_*``, overridden by CLI flags.

Every field ``some_name`` is the flag ``--some-name`` and the variable
``SIM_SOME_NAME``. Lists (symbols, ranges) are comma-separated in both.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from quaint.binance.models import MINUTE_MS, datetime_to_ms
from simulator.faults import parse_archive_fault
from simulator.listings import CalendarError, generated_symbols, split_event

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
_RANGE_PART = r"(\+?[0-9]+|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(?:Z|[+-][0-9]{2}:?[0-9]{2})?)"
_RANGE_RE = re.compile(rf"^{_RANGE_PART}\.\.{_RANGE_PART}$")


def parse_instant(value: str) -> int:
    """``"1700000000000"`` (ms) or an ISO-8601 date-time (UTC if no offset) -> ms."""
    if value.isdigit():
        return int(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return datetime_to_ms(parsed)


def resolve_instant(part: str, start_ms: int) -> int:
    """One end of a range: epoch ms, ISO-8601, or ``+N`` minutes after the start minute."""
    if part.startswith("+") and part[1:].isdigit():
        return start_ms - start_ms % MINUTE_MS + int(part[1:]) * MINUTE_MS
    try:
        return parse_instant(part)
    except ValueError:
        raise CalendarError(f"bad time {part!r}: expected ms, ISO-8601 or +minutes") from None


def resolve_range(spec: str, start_ms: int) -> tuple[int, int]:
    """``A..B`` -> (a, b) ms. Each end is epoch ms, ISO-8601, or ``+N``: N minutes
    after the simulated start minute (handy for offline runs: ``+5..+8``)."""
    m = _RANGE_RE.match(spec)
    if m is None:
        raise ValueError(f"bad range {spec!r}")
    base = start_ms - start_ms % MINUTE_MS

    def one(part: str) -> int:
        return base + int(part[1:]) * MINUTE_MS if part.startswith("+") else parse_instant(part)

    lo, hi = one(m.group(1)), one(m.group(2))
    if hi <= lo:
        raise ValueError(f"empty range {spec!r}: end must be after start")
    return lo, hi


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIM_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(9443, ge=0, le=65535, description="port for REST and WebSocket (0: any free port)")
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTCUSDT", "ETHUSDT"], description="comma-separated symbols to list"
    )
    symbol_count: int = Field(
        0, ge=0, le=20_000, description="list this many symbols: --symbols first, then generated pairs"
    )
    book_skew: bool = Field(
        False, description="Binance-like skew: a few symbols' bookTicker at --book-rate, most far rarer"
    )
    listing: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="SYMBOL@TIME: absent from exchangeInfo, no minute before TIME"
    )
    halt: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="SYMBOL@START..END: status BREAK, no minute in the range"
    )
    delisting: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="SYMBOL@TIME: gone from exchangeInfo, no minute from TIME on"
    )
    speed: float = Field(1.0, ge=0, le=1_000_000, description="simulated seconds per wall second (0 freezes)")
    seed: int = Field(0, description="market data is a pure function of (seed, symbol, minute)")
    start: int | None = Field(
        None, ge=0, description="simulated 'now' at startup (ms or ISO-8601); default: real now"
    )
    history_days: float = Field(400.0, gt=0, le=3650, description="how far back REST history goes")
    book_rate: float = Field(
        10.0, ge=0, le=10_000, description="bookTicker updates per symbol per wall second"
    )
    firehose: bool = False
    firehose_book_per_kline: int = Field(
        1,
        ge=1,
        le=10_000,
        description="firehose mix: bookTicker frames per (open) kline frame; 1 alternates them, as a worst"
        " case (real kline_1m streams update every 2 s, a liquid bookTicker many times a second)",
    )
    final_delay_ms: int = Field(
        1400, ge=0, le=30_000, description="simulated ms between close time and x:true"
    )
    ping_interval_s: float = Field(20.0, gt=0, le=3600, description="server ping period (wall s)")
    pong_timeout_s: float = Field(60.0, gt=0, le=3600, description="disconnect after no pong (wall s)")
    max_connection_age_s: float = Field(86_400.0, gt=0, description="disconnect at this age (wall s)")
    shutdown_notice: bool = Field(False, description="send serverShutdown before the age disconnect")
    shutdown_grace_s: float = Field(1.0, ge=0, le=3600, description="serverShutdown -> close delay")
    max_incoming_per_s: int = Field(5, ge=1, description="more incoming messages/s -> close 1008")
    max_streams: int = Field(1024, ge=1, description="streams per connection")
    max_queue: int = Field(10_000, ge=10, description="frames buffered per slow socket before it is dropped")
    weight_limit: int = Field(6000, ge=1, description="REST request weight per window")
    weight_window_s: float = Field(60.0, gt=0, description="weight window (wall s)")
    ban_after: int = Field(5, ge=0, description="429s tolerated per window before a 418 ban")
    ban_s: float = Field(120.0, gt=0, description="418 ban length (wall s)")
    replay_csv: Path | None = Field(None, description="data.binance.vision 1m kline CSV to replay")
    replay_symbol: str | None = Field(None, description="symbol the CSV is replayed as")
    feed_gap: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="no closed klines streamed for minutes in START..END"
    )
    outage: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="minutes in START..END exist nowhere (stream nor REST)"
    )
    duplicate: int = Field(0, ge=0, description="send the next N stream messages twice")
    duplicate_probability: float = Field(0.0, ge=0, le=1, description="then duplicate each with P")
    reorder: int = Field(0, ge=0, description="hold back N messages until after the next one")
    reorder_probability: float = Field(0.0, ge=0, le=1, description="then reorder each with P")
    malformed: int = Field(0, ge=0, description="interleave N malformed frames")
    malformed_probability: float = Field(0.0, ge=0, le=1, description="then one before each with P")
    rest_429: int = Field(0, ge=0, description="answer the next N REST requests with 429")
    rest_5xx: int = Field(0, ge=0, description="then the next N with --rest-5xx-status")
    rest_5xx_status: int = Field(503, ge=500, le=599, description="status for --rest-5xx")
    rest_retry_after_s: int = Field(1, ge=0, description="Retry-After of injected 429s")
    rest_latency_s: float = Field(0.0, ge=0, le=60, description="added to every REST answer")
    archive_max_keys: int = Field(
        1000, ge=1, le=1000, description="keys per archive listing page (S3's most); small values make pages"
    )
    archive_daily_delay_h: float = Field(
        1.0, ge=0, le=24 * 60, description="archive: a daily file appears this long after its day ends"
    )
    archive_monthly_delay_h: float = Field(
        24.0, ge=0, le=24 * 60, description="archive: a monthly file appears this long after its month ends"
    )
    archive_latency_s: float = Field(0.0, ge=0, le=60, description="added to every archive answer (wall s)")
    archive_bytes_per_s: int = Field(
        0, ge=0, le=2**40, description="archive download throttle (0: unlimited)"
    )
    archive_fault: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="archive files served wrong, KIND:SYMBOL:YYYY-MM[-DD] with KIND missing, truncated,"
        " checksum or header",
    )
    archive_cache_files: int = Field(8, ge=1, le=1000, description="archive files kept made in memory")
    drop_every_s: float | None = Field(None, gt=0, description="drop all WebSockets periodically")
    stall_every_s: float | None = Field(None, gt=0, description="stall all WebSockets periodically")
    stall_s: float = Field(5.0, ge=0, description="length of each periodic stall")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"

    @field_validator(
        "symbols", "feed_gap", "outage", "archive_fault", "listing", "halt", "delisting", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        upper = [s.upper() for s in value]
        bad = [s for s in upper if not _SYMBOL_RE.match(s)]
        if bad:
            raise ValueError(f"not a symbol: {', '.join(bad)} (expected e.g. BTCUSDT)")
        if not upper:
            raise ValueError("at least one symbol is required")
        return list(dict.fromkeys(upper))

    @field_validator("start", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        if isinstance(value, str) and value and not value.isdigit():
            try:
                return parse_instant(value)
            except ValueError:
                raise ValueError(
                    "expected epoch ms or an ISO-8601 date-time such as 2024-01-01T00:00:00Z"
                ) from None
        return value

    @field_validator("feed_gap", "outage")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for spec in value:
            if _RANGE_RE.match(spec) is None:
                raise ValueError(f"bad range {spec!r}: expected START..END (ms, ISO-8601 or +minutes)")
            if not spec.startswith("+") and "..+" not in spec:
                resolve_range(spec, 0)  # absolute on both ends: reject empty ranges now
        return value

    @field_validator("listing", "delisting")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        for spec in value:
            _, when = split_event(spec)
            resolve_instant(when, 0)
        return value

    @field_validator("halt")
    @classmethod
    def _halts(cls, value: list[str]) -> list[str]:
        for spec in value:
            _, span = split_event(spec)
            if _RANGE_RE.match(span) is None:
                raise ValueError(f"bad range {span!r}: expected START..END (ms, ISO-8601 or +minutes)")
        return value

    @field_validator("archive_fault")
    @classmethod
    def _archive_faults(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_archive_fault(spec)  # a bad one stops the simulator at start, naming it
        return value

    @field_validator("replay_symbol")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @model_validator(mode="after")
    def _replay_pair(self) -> SimSettings:
        if (self.replay_csv is None) != (self.replay_symbol is None):
            raise ValueError("--replay-csv and --replay-symbol must be given together")
        if self.replay_csv is not None and not self.replay_csv.is_file():
            raise ValueError(f"--replay-csv: no such file {self.replay_csv}")
        if self.replay_symbol is not None and self.replay_symbol not in self.symbols:
            self.symbols.append(self.replay_symbol)
        scheduled = [split_event(spec)[0] for spec in (*self.listing, *self.halt, *self.delisting)]
        self.symbols.extend(s for s in dict.fromkeys(scheduled) if s not in self.symbols)
        if self.symbol_count > len(self.symbols):
            self.symbols = generated_symbols(self.symbol_count, self.symbols)
        return self

    @classmethod
    def without_env(cls, **values: Any) -> SimSettings:
        """Settings from ``values`` only (ignores ``SIM_*``): for tests and embedding."""
        return _ExplicitSettings(**values)


class _ExplicitSettings(SimSettings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def describe_errors(exc: ValidationError) -> list[str]:
    """One human line per bad value, naming both the flag and the variable."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        where = f"--{field.replace('_', '-')} / SIM_{field.upper()}" if field else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if not field or isinstance(got, dict) else f" (got {str(got)[:60]!r})"
        lines.append(f"invalid {where}: {msg}{shown}")
    return lines
