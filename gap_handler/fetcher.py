"""REST requests through the shared rate gate, with classified retries.

Thin shell over :class:`gap_handler.core.rate.RateGate` (the decisions) and
:class:`quaint.binance.rest_client.RestClient` (the wire):

* 429 -> every worker pauses for Retry-After, then the request is repeated;
* 418 -> nothing is sent until the ban ends (logged as an error), then repeated;
* 5xx, timeouts, malformed bodies -> capped jittered backoff, at most N attempts;
* any other 4xx -> :class:`ApiRejected` propagates: permanent, never retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from gap_handler.core.planner import KlinesRequest
from gap_handler.core.rate import RateGate, RateState
from gap_handler.metrics import GapMetrics
from quaint.binance.rest_client import (
    ApiRejected,
    IpBanned,
    KlinesPage,
    MalformedResponse,
    RateLimited,
    RestClient,
    ServerError,
    TransportError,
)

log = structlog.get_logger(__name__)

KLINES_WEIGHT = 2  # /api/v3/klines costs 2 per request at any limit
Backoff = Callable[[], Iterator[float]]


class _Weighed(Protocol):
    @property
    def used_weight(self) -> int | None: ...


Answer = TypeVar("Answer", bound=_Weighed)


class RetriesExhausted(Exception):
    """A transient failure outlasted the retry budget; the hole stays for the next scan."""


def seconds_to_minute_reset(wall_s: float) -> float:
    """The exchange's weight windows are clock minutes: time left in the current one."""
    return 60.0 - wall_s % 60.0


class Fetcher:
    def __init__(
        self,
        client: RestClient,
        gate: RateGate,
        metrics: GapMetrics,
        backoff: Backoff,
        *,
        max_attempts: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.gate = gate
        self.metrics = metrics
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._clock = clock
        self._wall = wall
        # FIFO among workers: whoever asked first is served first.
        self._lock = asyncio.Lock()

    def rate_state(self) -> RateState:
        return self.gate.state(self._clock())

    def until_wall(self, state: RateState) -> datetime | None:
        """A monotonic deadline as a wall-clock time, for humans."""
        if state.until is None:
            return None
        return datetime.fromtimestamp(self._wall() + (state.until - self._clock()), UTC)

    async def acquire(self, weight: int) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                wait = self.gate.try_acquire(now, weight)
                if wait <= 0:
                    return
                reason = self.gate.state(now).state
                reason = "rate" if reason == "ok" else reason
                self.metrics.throttle_waits.labels(reason).inc()
                self.metrics.throttle_wait_seconds.labels(reason).inc(wait)
                await asyncio.sleep(wait)

    def _observe(self, used: int | None) -> None:
        if used is not None:
            self.gate.observe_weight(used, self._clock(), seconds_to_minute_reset(self._wall()))
            self.metrics.used_weight.set(used)

    async def klines(self, symbol: str, req: KlinesRequest) -> KlinesPage:
        bound = log.bind(symbol=symbol, start=req.start, probe=req.probe)
        return await self.call(
            "klines", KLINES_WEIGHT, lambda: self.client.klines(symbol, req.start, req.end, req.limit), bound
        )

    async def call(
        self,
        endpoint: str,
        weight: int,
        request: Callable[[], Awaitable[Answer]],
        bound: Any = log,
        *,
        max_attempts: int | None = None,
    ) -> Answer:
        """One REST request through the rate gate, retried as the module says."""
        delays: Iterator[float] | None = None
        attempt = 0
        limit = self._max_attempts if max_attempts is None else max_attempts
        while True:
            await self.acquire(weight)
            try:
                answer = await request()
            except RateLimited as exc:
                self._count(endpoint, exc.status)
                self._observe(exc.used_weight)
                self.gate.on_rate_limited(self._clock(), exc.retry_after)
                bound.warning("rest_rate_limited", endpoint=endpoint, retry_after_s=exc.retry_after)
                continue
            except IpBanned as exc:
                self._count(endpoint, exc.status)
                self.gate.on_banned(self._clock(), exc.retry_after)
                self.metrics.banned.set(1)
                bound.error("rest_ip_banned", endpoint=endpoint, retry_after_s=exc.retry_after)
                continue
            except ApiRejected as exc:
                self._count(endpoint, exc.status)
                self._observe(exc.used_weight)
                self.metrics.errors.labels("rest_rejected").inc()
                bound.error("rest_rejected", endpoint=endpoint, status=exc.status, code=exc.code, msg=exc.msg)
                raise
            except (ServerError, TransportError, MalformedResponse) as exc:
                self._count(endpoint, exc.status if isinstance(exc, ServerError) else type(exc).__name__)
                self._observe(exc.used_weight)
                attempt += 1
                if attempt >= limit:
                    raise RetriesExhausted(f"{attempt} attempts: {exc}") from exc
                delays = delays or self._backoff()
                delay = next(delays)
                bound.warning(
                    "rest_retry",
                    endpoint=endpoint,
                    error=str(exc),
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            self._count(endpoint, 200)
            self._observe(answer.used_weight)
            self.metrics.banned.set(0)
            return answer

    def _count(self, endpoint: str, status: int | str | None) -> None:
        self.metrics.requests.labels(endpoint, str(status)).inc()

    async def load_weight_limit(self, symbol: str) -> int | None:
        """Read the per-minute weight limit from exchangeInfo's ``rateLimits``.
        A failure keeps the default: the limiter still reacts to 429s."""
        await self.acquire(20)  # exchangeInfo with one symbol weighs 2; 20 is a safe overestimate
        try:
            limits = await self.client.exchange_limits(symbol)
        except (ServerError, TransportError, MalformedResponse, ApiRejected) as exc:
            self._count("exchangeInfo", getattr(exc, "status", None) or type(exc).__name__)
            log.warning("exchange_limits_unavailable", error=str(exc), default=self.gate.weight.limit)
            return None
        except (RateLimited, IpBanned) as exc:
            self._count("exchangeInfo", exc.status)
            if isinstance(exc, IpBanned):
                self.gate.on_banned(self._clock(), exc.retry_after)
            else:
                self.gate.on_rate_limited(self._clock(), exc.retry_after)
            return None
        self._count("exchangeInfo", 200)
        self._observe(limits.used_weight)
        limit = limits.weight_per_minute()
        if limit is not None:
            self.gate.weight.set_limit(limit)
            self.metrics.weight_limit.set(limit)
        return limit
