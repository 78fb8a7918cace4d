"""Fault injection state (sans-I/O).

The controller only records what should go wrong; the aiohttp shells consult it
(``in_outage``, ``next_rest_fault``, ``FrameInjector``...) while moving data. Time is
always passed in by the caller, so everything here is testable without a loop.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from quaint.binance.archive import ArchiveFile
from quaint.binance.models import MINUTE_MS

ArchiveFaultKind = Literal["missing", "truncated", "checksum", "header"]
ARCHIVE_FAULT_KINDS: tuple[ArchiveFaultKind, ...] = ("missing", "truncated", "checksum", "header")
FrameKind = Literal["kline", "kline_closed", "bookTicker", "control"]
KindFilter = Literal["any", "kline", "kline_closed", "bookTicker"]
_KIND_FILTERS: tuple[KindFilter, ...] = ("any", "kline", "kline_closed", "bookTicker")

# Frames a broken proxy or exchange bug could plausibly emit; each one must be
# rejected by a strict parser (tests check that against quaint.binance.parse).
MALFORMED_FRAMES: tuple[bytes, ...] = (
    b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":16',  # truncated mid-frame
    b"<html><body>502 Bad Gateway</body></html>",  # not JSON at all
    b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":"soon","s":"BTCUSDT"}}',  # wrong types
    b"[1,2,3]",  # JSON, but not an object
    b'{"e":"mysteryEvent","E":1}',  # unknown event
)


class FaultError(ValueError):
    """Bad fault parameters (answered as HTTP 400 by the control API)."""


@dataclass(slots=True)
class MinuteRange:
    """Minutes whose open time is in ``[start, end)`` (ms), for one symbol or all."""

    start: int
    end: int
    symbol: str | None = None

    def contains(self, symbol: str, open_time: int) -> bool:
        return self.start <= open_time < self.end and (self.symbol is None or self.symbol == symbol)


@dataclass(slots=True)
class MessageFault:
    """Affect the next ``count`` matching frames, then each one with ``probability``."""

    count: int = 0
    probability: float = 0.0
    kind: KindFilter = "any"

    def matches(self, kind: FrameKind) -> bool:
        if kind == "control":
            return False
        if self.kind == "any" or self.kind == kind:
            return True
        return self.kind == "kline" and kind == "kline_closed"

    def take(self, kind: FrameKind, rng: random.Random) -> bool:
        if not self.matches(kind):
            return False
        if self.count > 0:
            self.count -= 1
            return True
        return self.probability > 0 and rng.random() < self.probability


@dataclass(slots=True)
class RestFault:
    """Answer the next ``count`` REST requests under ``path`` with ``status``."""

    status: int
    count: int
    retry_after_s: int = 1
    path: str = "/api/"


@dataclass(slots=True)
class ArchiveFileFault:
    """How one archive file is served wrong (binance-public-data's known failures)."""

    missing: bool = False  # 404 for the zip and its CHECKSUM, absent from the listing
    keep_rows: int | None = None  # truncated: only the first N rows (its CHECKSUM matches)
    bad_checksums: int = 0  # CHECKSUM answers still to get wrong; -1: every one
    header: bool = False  # the CSV starts with a futures-style header row
    generation: int = 0  # re-uploads so far: each gives other bytes, so another checksum
    reupload_after_checksum: bool = False  # re-upload right after the next CHECKSUM is served


@dataclass
class ArchiveFaults:
    files: dict[ArchiveFile, ArchiveFileFault] = field(default_factory=dict)
    latency_s: float = 0.0  # wall seconds before each archive answer
    bytes_per_s: int = 0  # download throttle; 0 = unlimited

    def of(self, file: ArchiveFile) -> ArchiveFileFault | None:
        return self.files.get(file)

    def add(
        self, kind: str, file: ArchiveFile, *, rows: int | None = None, count: int | None = None
    ) -> ArchiveFileFault:
        """``missing``, ``truncated`` (keep ``rows``, default half the period), ``checksum``
        (the next ``count`` CHECKSUM answers wrong, default every one) or ``header``."""
        fault = self.files.get(file, ArchiveFileFault())  # stored only once the request is valid
        if kind == "missing":
            fault.missing = True
        elif kind == "truncated":
            keep = file.minutes // 2 if rows is None else rows
            if type(keep) is not int or not 0 <= keep < file.minutes:
                raise FaultError(f"rows must be an integer within [0, {file.minutes})")
            fault.keep_rows = keep
        elif kind == "checksum":
            if count is not None and (type(count) is not int or not 1 <= count <= 1_000_000):
                raise FaultError("count must be an integer within [1, 1000000]")
            fault.bad_checksums = -1 if count is None else count
        elif kind == "header":
            fault.header = True
        else:
            raise FaultError(f"kind must be one of {', '.join(ARCHIVE_FAULT_KINDS)}")
        self.files[file] = fault
        return fault

    def reupload(self, file: ArchiveFile, when: str = "now") -> ArchiveFileFault:
        """Upload the file again, whole and right (its faults cleared, other bytes): ``now``, or
        ``after_checksum``: just after its next CHECKSUM is served, so a client that verifies
        with that CHECKSUM downloads a zip it no longer describes."""
        if when not in ("now", "after_checksum"):
            raise FaultError("when must be 'now' or 'after_checksum'")
        fault = self.files.setdefault(file, ArchiveFileFault())
        if when == "now":
            _reuploaded(fault)
        else:
            fault.reupload_after_checksum = True
        return fault

    def take_bad_checksum(self, file: ArchiveFile) -> bool:
        """Whether this CHECKSUM answer is to be wrong (consumes one of a count)."""
        fault = self.files.get(file)
        if fault is None or fault.bad_checksums == 0:
            return False
        if fault.bad_checksums > 0:
            fault.bad_checksums -= 1
        return True

    def checksum_served(self, file: ArchiveFile) -> None:
        fault = self.files.get(file)
        if fault is not None and fault.reupload_after_checksum:
            _reuploaded(fault)

    def set_speed(self, latency_s: float, bytes_per_s: int) -> None:
        if type(latency_s) not in (int, float) or not 0 <= latency_s <= 60:
            raise FaultError("seconds must be within [0, 60]")
        if type(bytes_per_s) is not int or not 0 <= bytes_per_s <= 1 << 40:
            raise FaultError("bytes_per_s must be a non-negative integer (0: unlimited)")
        self.latency_s, self.bytes_per_s = float(latency_s), bytes_per_s

    def reset(self) -> None:
        self.files.clear()
        self.latency_s, self.bytes_per_s = 0.0, 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "files": [
                {"symbol": f.symbol, "file": f.label, **asdict(x)} for f, x in sorted(self.files.items())
            ],
            "latency_s": self.latency_s,
            "bytes_per_s": self.bytes_per_s,
        }


def _reuploaded(fault: ArchiveFileFault) -> None:
    fault.missing, fault.keep_rows, fault.bad_checksums, fault.header = False, None, 0, False
    fault.reupload_after_checksum = False
    fault.generation += 1


def parse_archive_fault(spec: str) -> tuple[str, ArchiveFile]:
    """``KIND:SYMBOL:YYYY-MM[-DD]`` (e.g. ``missing:BTCUSDT:2024-03``) -> (kind, file)."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] not in ARCHIVE_FAULT_KINDS:
        raise ValueError(
            f"bad archive fault {spec!r}: expected KIND:SYMBOL:YYYY-MM[-DD], KIND one of "
            + ", ".join(ARCHIVE_FAULT_KINDS)
        )
    return parts[0], ArchiveFile.parse(parts[1].upper(), parts[2])


class ConnectionControl(Protocol):
    """What the WebSocket shell offers the controller."""

    def drop_all(self, mode: str) -> int: ...

    def shutdown_all(self, grace_s: float) -> int: ...


@dataclass
class FaultController:
    seed: int = 0
    feed_gaps: list[MinuteRange] = field(default_factory=list)
    outages: list[MinuteRange] = field(default_factory=list)
    duplicate: MessageFault = field(default_factory=MessageFault)
    reorder: MessageFault = field(default_factory=MessageFault)
    malformed: MessageFault = field(default_factory=MessageFault)
    rest_faults: list[RestFault] = field(default_factory=list)
    rest_latency_s: float = 0.0
    stall_until: float = 0.0  # wall (monotonic) seconds
    archive: ArchiveFaults = field(default_factory=ArchiveFaults)
    rng: random.Random = field(init=False)
    _targets: list[ConnectionControl] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # ---- market data ---------------------------------------------------------------

    def in_outage(self, symbol: str, open_time: int) -> bool:
        return any(r.contains(symbol, open_time) for r in self.outages)

    def in_feed_gap(self, symbol: str, open_time: int) -> bool:
        return any(r.contains(symbol, open_time) for r in self.feed_gaps)

    def add_feed_gap(self, start: int, end: int, symbol: str | None = None) -> MinuteRange:
        gap = _minute_range(start, end, symbol)
        self.feed_gaps.append(gap)
        return gap

    def add_outage(self, start: int, end: int, symbol: str | None = None) -> MinuteRange:
        outage = _minute_range(start, end, symbol)
        self.outages.append(outage)
        return outage

    # ---- connections ---------------------------------------------------------------

    def attach(self, target: ConnectionControl) -> None:
        self._targets.append(target)

    def drop_connections(self, mode: str = "abort") -> int:
        """Drop every WebSocket now: ``abort`` resets TCP, ``close`` sends 1001 first."""
        if mode not in ("abort", "close"):
            raise FaultError("mode must be 'abort' or 'close'")
        return sum(t.drop_all(mode) for t in self._targets)

    def server_shutdown(self, grace_s: float = 1.0) -> int:
        """Send ``serverShutdown`` to every connection, then close them after grace."""
        if not 0 <= grace_s <= 3600:
            raise FaultError("grace_s must be within [0, 3600]")
        return sum(t.shutdown_all(grace_s) for t in self._targets)

    def stall(self, seconds: float, wall_now: float) -> None:
        if not 0 <= seconds <= 86_400:
            raise FaultError("seconds must be within [0, 86400]")
        self.stall_until = wall_now + seconds

    def stalled(self, wall_now: float) -> bool:
        return wall_now < self.stall_until

    # ---- REST ------------------------------------------------------------------------

    def add_rest_fault(
        self, status: int, count: int, retry_after_s: int = 1, path: str = "/api/"
    ) -> RestFault:
        if status != 429 and not 500 <= status <= 599:
            raise FaultError("status must be 429 or 5xx")
        if not 0 <= count <= 1_000_000:
            raise FaultError("count must be within [0, 1000000]")
        if not 0 <= retry_after_s <= 86_400:
            raise FaultError("retry_after_s must be within [0, 86400]")
        if not path.startswith("/"):
            raise FaultError("path must start with '/'")
        fault = RestFault(status=status, count=count, retry_after_s=retry_after_s, path=path)
        self.rest_faults.append(fault)
        return fault

    def next_rest_fault(self, path: str) -> RestFault | None:
        """Consume one injected failure for ``path``, if any is pending."""
        for fault in self.rest_faults:
            if fault.count > 0 and path.startswith(fault.path):
                fault.count -= 1
                return fault
        return None

    def set_latency(self, seconds: float) -> None:
        if not 0 <= seconds <= 60:
            raise FaultError("seconds must be within [0, 60]")
        self.rest_latency_s = seconds

    # ---- message faults ------------------------------------------------------------------

    def set_message_fault(self, name: str, body: Mapping[str, Any]) -> MessageFault:
        """``name`` is duplicate, reorder or malformed; body has count/probability/kind."""
        if name not in ("duplicate", "reorder", "malformed"):
            raise FaultError(f"unknown message fault {name!r}")
        count = body.get("count", 0)
        probability = body.get("probability", 0.0)
        kind = body.get("kind", "any")
        if type(count) is not int or not 0 <= count <= 1_000_000:
            raise FaultError("count must be an integer within [0, 1000000]")
        if type(probability) not in (int, float) or not 0.0 <= probability <= 1.0:
            raise FaultError("probability must be a number within [0, 1]")
        if kind not in _KIND_FILTERS:
            raise FaultError(f"kind must be one of {', '.join(_KIND_FILTERS)}")
        fault = MessageFault(count=count, probability=float(probability), kind=kind)
        setattr(self, name, fault)
        return fault

    def reset(self) -> None:
        self.feed_gaps.clear()
        self.outages.clear()
        self.duplicate = MessageFault()
        self.reorder = MessageFault()
        self.malformed = MessageFault()
        self.rest_faults.clear()
        self.rest_latency_s = 0.0
        self.stall_until = 0.0
        self.archive.reset()

    def snapshot(self, wall_now: float) -> dict[str, Any]:
        return {
            "feed_gaps": [asdict(r) for r in self.feed_gaps],
            "outages": [asdict(r) for r in self.outages],
            "duplicate": asdict(self.duplicate),
            "reorder": asdict(self.reorder),
            "malformed": asdict(self.malformed),
            "rest_faults": [asdict(f) for f in self.rest_faults if f.count > 0],
            "rest_latency_s": self.rest_latency_s,
            "stall_remaining_s": max(0.0, self.stall_until - wall_now),
            "archive": self.archive.snapshot(),
        }


def _minute_range(start: int, end: int, symbol: str | None) -> MinuteRange:
    if type(start) is not int or type(end) is not int or start < 0 or end <= start:
        raise FaultError("start and end must be integer ms with 0 <= start < end")
    if symbol is not None and (type(symbol) is not str or not symbol):
        raise FaultError("symbol must be a non-empty string")
    # Whole minutes: the first minute that opens at or after start, up to end.
    first = -(-start // MINUTE_MS) * MINUTE_MS
    return MinuteRange(start=first, end=end, symbol=symbol.upper() if symbol else None)


@dataclass(slots=True)
class FrameInjector:
    """Per-connection transform of outgoing frames by the controller's message faults.

    ``push`` takes one frame and returns the frames to put on the wire, in order:
    possibly a malformed frame first, the frame itself (or nothing, when held back
    to be sent after the next one: out of order), a duplicate, and a held frame."""

    faults: FaultController
    _held: bytes | None = None
    _malformed_index: int = 0

    def push(self, data: bytes, kind: FrameKind) -> list[bytes]:
        faults, rng = self.faults, self.faults.rng
        out: list[bytes] = []
        if faults.malformed.take(kind, rng):
            out.append(MALFORMED_FRAMES[self._malformed_index % len(MALFORMED_FRAMES)])
            self._malformed_index += 1
        if self._held is None and faults.reorder.take(kind, rng):
            self._held = data
            return out
        out.append(data)
        if faults.duplicate.take(kind, rng):
            out.append(data)
        if self._held is not None and kind != "control":
            out.append(self._held)
            self._held = None
        return out
