"""Holes filled from Binance's public archives, REST only for what they cannot serve.

The decisions are :mod:`gap_handler.core.archive_plan`'s (which file, what a result leaves);
this shell downloads through :class:`quaint.binance.archive_client.ArchiveClient` (bounded
concurrency, SHA-256 verified, streamed: a file's rows reach the database a chunk at a time,
never a month of them at once) and upserts through the same statement as REST, with
``source='archive'``. Every fallback is one quality row with its range; what is left goes back
to the caller for REST. One REST page per imported file cross-checks it: REST's rows are
upserted over the archive's, and any row that changed is an ``archive_mismatch``.

Quality rows use ``event_type='error'`` with the archive event in ``details.kind`` (and at the
start of ``message``): the schema's CHECK does not list the archive event types yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import structlog

from gap_handler import store
from gap_handler.core.archive_plan import (
    ARCHIVE_MISMATCH,
    ARCHIVE_MISSING,
    ArchivePlan,
    FilePart,
    after_file,
    plan_archive,
    sample_page,
    slice_bounds,
)
from gap_handler.core.exchange_clock import closed_prefix
from gap_handler.core.intervals import MinuteRange, merge
from gap_handler.core.planner import KlinesRequest
from gap_handler.engine import Engine
from gap_handler.fetcher import Fetcher
from gap_handler.settings import GapHandlerSettings
from quaint.binance.archive import ArchiveOk, ArchiveShort, FileResult
from quaint.binance.archive_client import ArchiveClient, ArchiveError
from quaint.binance.models import MINUTE_MS, KlineColumns, ms_to_datetime
from quaint.store.candles import upsert_kline_columns
from quaint.store.quality import log_event
from quaint.store.quality_event import QualityEvent
from quaint.store.rollups import refresh_rollups

log = structlog.get_logger(__name__)
T = TypeVar("T")


# After the archive host fails a file (retries spent, or a refusal), later files go straight
# to REST for this long.
HOST_DOWN_S = 300.0


class _Stopped(Exception):
    """A shutdown began while a file was being imported."""


@dataclass(slots=True)
class ArchiveStats:
    """What the imports did so far (the bootstrap's progress line reads it)."""

    files: int = 0
    candles: int = 0  # rows parsed into the holes
    written: int = 0  # rows new or changed in candles_1m
    bytes: int = 0
    fallbacks: int = 0
    mismatches: int = 0
    cross_checks: int = 0


class ArchiveFill:
    def __init__(
        self,
        settings: GapHandlerSettings,
        engine: Engine,
        session: aiohttp.ClientSession,
        fetcher: Fetcher,
        now_ms: Callable[[], int],
        *,
        cross_check: bool = True,
    ) -> None:
        self.settings = settings
        self.engine = engine  # its db(): transient errors retried and counted as REST pages' are
        self.fetcher = fetcher
        self.now_ms = now_ms
        self.cross_check = cross_check
        self.client = ArchiveClient(
            session, settings.archive_base_url, concurrency=settings.archive_concurrency, sleep=self._sleep
        )
        self._stopping: Callable[[], bool] = lambda: False
        self._down_until = float("-inf")
        self._down_reason = ""
        self.stats = ArchiveStats()

    def plan(self, symbol: str, holes: list[MinuteRange]) -> ArchivePlan:
        return plan_archive(
            symbol, holes, self.now_ms(), self.settings.archive_lag_days, self.settings.backfill_batch_size
        )

    async def _upsert(self, rows: KlineColumns, source: str) -> int:
        return await self.engine.db("archive", rows.symbol, lambda c: upsert_kline_columns(c, rows, source))

    def _now(self) -> datetime:
        return ms_to_datetime(self.now_ms())

    async def fill(
        self, symbol: str, holes: list[MinuteRange], stopping: Callable[[], bool] = lambda: False
    ) -> tuple[int, list[MinuteRange]]:
        """Import what archives hold of ``holes``: (rows written, ranges left for REST). When
        ``stopping()`` turns true (between chunks, or in a retry's wait) the file in hand and
        the ones after it are left too: the caller's REST step checkpoints them."""
        self._stopping = stopping
        plan = self.plan(symbol, holes)
        rest = list(plan.rest)
        queue = list(plan.files)
        written = 0
        while queue:
            part = queue.pop(0)
            if stopping():
                rest += [r for p in (part, *queue) for r in p.ranges]
                break
            if time.monotonic() < self._down_until:
                # The host failed moments ago: REST without waiting for its retries again.
                await self._event(symbol, ARCHIVE_MISSING, list(part.ranges), self._down_reason, part)
                rest += part.ranges
                continue
            n, left, retry = await self._file(symbol, part)
            written += n
            rest += left
            queue[:0] = retry
        if written:
            start, end = min(h.start for h in holes), max(h.end for h in holes)
            await self.engine.db(
                "archive", symbol, lambda c: store.resolve_detected(c, symbol, end, self._now())
            )
            # Continuous aggregates (Community) refresh only the recent window themselves; a
            # refresh recomputes just the invalidated buckets inside the range.
            await self.engine.db("archive", symbol, lambda c: refresh_rollups(c, start, end))
        return written, merge(rest)

    async def _until_stopped(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``, cancelled when a shutdown begins (a connect or a read may take up to the
        client's timeouts; units must stop well inside SHUTDOWN_DEADLINE_S)."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.1)
                if self._stopping() and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    raise _Stopped
            return task.result()
        finally:
            task.cancel()  # a no-op once done; else this unit itself was cancelled

    async def _sleep(self, seconds: float) -> None:
        """The client's retry wait, cut short by a shutdown."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping():
                raise _Stopped
            await asyncio.sleep(min(left, 0.1))

    async def _file(self, symbol: str, part: FilePart) -> tuple[int, list[MinuteRange], list[FilePart]]:
        started = time.monotonic()
        bound = log.bind(symbol=symbol, file=part.file.name)
        written = 0
        parsed = 0

        async def sink(chunk: KlineColumns) -> None:
            nonlocal written, parsed
            if self._stopping():
                raise _Stopped  # what was committed stays; the rest of the file waits
            for i, j in slice_bounds(chunk.open_times, part.ranges):
                rows = chunk if (i, j) == (0, len(chunk)) else chunk.take(range(i, j))
                parsed += len(rows)
                written += await self._upsert(rows, "archive")

        try:
            result: FileResult = await self._until_stopped(self.client.stream(part.file, sink))
        except _Stopped:
            bound.info("archive_file_stopped", written=written)
            return written, list(part.ranges), []
        except ArchiveError as exc:
            # The archive host is down or refuses: REST for all of it, and say so; the next
            # files skip the host for a while rather than each waiting out its retries.
            self._down_until = time.monotonic() + HOST_DOWN_S
            self._down_reason = f"archive host skipped after {type(exc).__name__}: {exc}"
            await self._event(
                symbol, ARCHIVE_MISSING, list(part.ranges), f"{type(exc).__name__}: {exc}", part
            )
            bound.warning("archive_unavailable", error=str(exc))
            return written, list(part.ranges), []
        self.stats.candles += parsed
        self.stats.written += written
        fallback = after_file(part, result)
        if isinstance(result, ArchiveOk | ArchiveShort):
            self.stats.bytes += result.size
        self.stats.files += 1
        if fallback.event is not None:
            ranges = fallback.rest or [r for p in fallback.retry for r in p.ranges] or list(part.ranges)
            await self._event(symbol, fallback.event, ranges, fallback.reason, part)
            bound.warning("archive_fallback", kind=fallback.event, reason=fallback.reason)
        if isinstance(result, ArchiveOk) and self.cross_check:
            written += await self._cross_check(symbol, part)
        if written:
            await self._record_imported(symbol, part, written, time.monotonic() - started)
        bound.info("archive_file_done", rows=parsed, written=written, result=type(result).__name__)
        return written, fallback.rest, fallback.retry

    async def _cross_check(self, symbol: str, part: FilePart) -> int:
        """One REST page over the file's imported minutes; REST's rows win."""
        page = sample_page(part, self.settings.backfill_batch_size)
        req = KlinesRequest(page.start, page.end - MINUTE_MS, page.minutes)
        asked_at = self.now_ms()
        rows = (await self.fetcher.klines(symbol, req)).rows
        final = closed_prefix(rows.open_times, rows.close_times, asked_at)
        inside = [i for i in range(final) if page.start <= rows.open_times[i] < page.end]
        self.stats.cross_checks += 1
        if not inside:
            return 0
        checked = rows.take(inside)
        changed = await self._upsert(checked, "rest")
        if changed:
            self.stats.mismatches += 1
            reason = f"{changed} of {len(checked)} rows differ from REST (REST's stored)"
            await self._event(symbol, ARCHIVE_MISMATCH, [page], reason, part)
            log.warning("archive_mismatch", symbol=symbol, file=part.file.name, rows=changed)
        return changed

    async def _event(
        self, symbol: str, kind: str, ranges: list[MinuteRange], reason: str, part: FilePart
    ) -> None:
        self.stats.fallbacks += kind != ARCHIVE_MISMATCH
        ranges = merge(ranges)
        lo, hi = ranges[0].start, ranges[-1].end
        details: dict[str, Any] = {
            "kind": kind,
            "file": part.file.key,
            "ranges": [
                [ms_to_datetime(r.start).isoformat(), ms_to_datetime(r.end).isoformat()] for r in ranges
            ],
        }
        event = QualityEvent(
            kind,  # its own event type: archive_missing, archive_short, ... (details.kind too)
            symbol=symbol,
            gap_start=ms_to_datetime(lo),
            gap_end=ms_to_datetime(hi - MINUTE_MS),
            candles_missing=sum(r.minutes for r in ranges),
            source="archive",
            message=f"{kind}: {reason}",
            details=details,
            resolved=True,
            resolved_at=self._now(),
        )
        await self.engine.db("archive", symbol, lambda c: log_event(c, event))

    async def _record_imported(self, symbol: str, part: FilePart, written: int, duration: float) -> None:
        lo, hi = part.ranges[0].start, part.ranges[-1].end
        event = QualityEvent(
            "gap_backfilled",
            symbol=symbol,
            gap_start=ms_to_datetime(lo),
            gap_end=ms_to_datetime(hi - MINUTE_MS),
            candles_missing=(hi - lo) // MINUTE_MS,
            candles_recovered=written,
            source="archive",
            message=f"backfilled from {part.file.name}",
            details={"file": part.file.key, "duration_s": round(duration, 3)},
            resolved=True,
            resolved_at=self._now(),
        )
        await self.engine.db("archive", symbol, lambda c: log_event(c, event))
