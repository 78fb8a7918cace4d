"""Feeds :class:`gap_handler.core.exchange_clock.ExchangeClock` from ``GET /api/v3/time``
(through the fetcher's rate gate and retry policy) and serves the service's ``now``.

The decisions (what a sample proves, when the next is due, which rows are final) are in
:mod:`gap_handler.core.exchange_clock`; this shell only performs the request and reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from gap_handler.core.exchange_clock import ExchangeClock, OffsetSample, offset_sample
from gap_handler.fetcher import Fetcher, RetriesExhausted
from gap_handler.metrics import GapMetrics
from quaint.binance.models import ms_to_datetime
from quaint.binance.rest_client import ApiRejected, MalformedResponse

log = structlog.get_logger(__name__)

TIME_WEIGHT = 1
Need = Literal["unsynced", "due"]


@dataclass(frozen=True, slots=True)
class _Reading:
    sample: OffsetSample
    used_weight: int | None


class TimeSync:
    def __init__(
        self,
        fetcher: Fetcher,
        clock: ExchangeClock,
        metrics: GapMetrics,
        local_ms: Callable[[], int],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetcher = fetcher
        self.clock = clock
        self.metrics = metrics
        self.local_ms = local_ms
        self._mono = monotonic
        self._lock = asyncio.Lock()

    def now_ms(self) -> int:
        """The service's clock: the exchange's time, never ahead of it once synced."""
        return self.clock.now(self.local_ms())

    async def _read(self) -> _Reading:
        sent_local, sent_mono = self.local_ms(), self._mono()
        answer = await self.fetcher.client.server_time()
        received_local, received_mono = self.local_ms(), self._mono()
        sample = offset_sample(sent_local, received_local, answer.server_ms, sent_mono, received_mono)
        if sample is None:  # retried like any malformed answer
            raise MalformedResponse(
                f"time: serverTime {answer.server_ms} implausible, or a local clock ran backwards"
            )
        return _Reading(sample, answer.used_weight)

    async def sync(self, *, max_attempts: int | None = None, only_if: Need | None = None) -> None:
        """Take a sample now (``only_if``: unless, once the lock is ours, the clock is
        synced / not due: a sync that just finished elsewhere is enough).
        RetriesExhausted / ApiRejected propagate."""
        async with self._lock:
            if only_if == "unsynced" and self.clock.synced:
                return
            if only_if == "due" and not self.clock.due(self._mono()):
                return
            reading = await self.fetcher.call("time", TIME_WEIGHT, self._read, max_attempts=max_attempts)
            sample = reading.sample
            warn = self.clock.observe(sample)
        self.metrics.exchange_offset.set(sample.offset_ms / 1000)
        self.metrics.exchange_round_trip.set(sample.round_trip_s)
        fields: dict[str, Any] = {
            "offset_ms": sample.offset_ms,
            "round_trip_ms": round(sample.round_trip_s * 1000, 1),
            "exchange_time": ms_to_datetime(sample.server_ms).isoformat(),
        }
        if warn:
            # Harmless for what is stored (every decision uses the exchange's time), but
            # whatever else on this host trusts its clock is off by as much.
            log.warning("exchange_clock_skew", **fields)
        else:
            log.debug("exchange_clock_synced", **fields)

    async def ensure_synced(self) -> None:
        """Before a row is judged final: at least one sample (else it is taken now,
        retried like a page; RetriesExhausted propagates and the unit waits)."""
        if self.clock.synced:
            return
        try:
            await self.sync(only_if="unsynced")
        except ApiRejected as exc:
            # Not the unit's fault: its hole stays for a later scan, never parked.
            raise RetriesExhausted(f"exchange time unavailable: {exc}") from exc

    async def try_sync(self, *, max_attempts: int | None = None, only_if: Need | None = None) -> bool:
        """:meth:`sync`, failures logged: the previous sample, if any, stays in use
        (a lower bound stays one while both clocks run; it only grows less tight)."""
        try:
            await self.sync(max_attempts=max_attempts, only_if=only_if)
        except (RetriesExhausted, ApiRejected) as exc:
            self.metrics.errors.labels("time_sync").inc()
            log.warning("exchange_clock_sync_failed", error=str(exc), synced=self.clock.synced)
            return False
        return True

    async def run(self) -> None:
        """Re-sample every ``sync_interval_s`` (the first at once). One attempt each: the
        lock is never held through a retry policy's backoff."""
        while True:
            await asyncio.sleep(self.clock.seconds_until_due(self._mono()))
            if not await self.try_sync(max_attempts=1, only_if="due"):
                # Keep the failed attempt from being retried in a tight loop.
                await asyncio.sleep(min(self.clock.sync_interval_s, 10.0))

    def health(self) -> dict[str, Any] | None:
        sample = self.clock.sample
        if sample is None:
            return None
        return {
            "offset_ms": sample.offset_ms,
            "round_trip_ms": round(sample.round_trip_s * 1000, 1),
            "age_s": round(self._mono() - sample.taken_at, 1),
        }
