"""Reconnecting (sans-I/O): what a failed WebSocket open means, and how long to wait.

An answer is classified once, by the HTTP status of the refused handshake (or by the
failure having no status at all), into what the connection slot does next:

* **fatal**: nothing will change by asking again. 451 (the exchange refuses this
  region), 403 (forbidden), 404 (no such stream path: a wrong ``BINANCE_WS_URL``) and a
  malformed URL. The slot stops, says why once, and ``/health`` shows it; when every
  slot has stopped so, the feeder exits non-zero.
* **retry-after**: 429 (too many requests) and 418 (banned after them): wait at least
  what ``Retry-After`` says.
* **backoff**: 5xx, any other status, and network errors (refused, reset, timeout, DNS):
  the injected delay policy.

The policy (:func:`reconnect_delays`): after a dropped connection the first reconnect
starts within ``first_s`` (1 s, or the backoff's start if that is shorter; jittered so
that connections dropped together do not come back together), and only repeated
failures back off: a drop near a minute's end then still catches that minute's closed
candle.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

from quaint.service.retry import jittered_backoff, parse_retry_after


class OpenAction(Enum):
    FATAL = "fatal"
    RETRY_AFTER = "retry_after"
    BACKOFF = "backoff"


@dataclass(frozen=True, slots=True)
class OpenVerdict:
    action: OpenAction
    reason: str  # for the log line and /health
    retry_after_s: float = 0.0  # RETRY_AFTER: the least wait the server asked for

    @property
    def fatal(self) -> bool:
        return self.action is OpenAction.FATAL


FATAL_STATUSES: Mapping[int, str] = {
    451: "the exchange refuses connections from this region (HTTP 451)",
    403: "the exchange forbids this connection (HTTP 403)",
    404: "no such stream path (HTTP 404): check BINANCE_WS_URL",
}
RETRY_AFTER_STATUSES = frozenset({418, 429})


def classify_open_failure(
    *, status: int | None = None, retry_after: str | None = None, malformed_url: bool = False, error: str = ""
) -> OpenVerdict:
    """The verdict on one failed open: ``status`` of a refused handshake (None: no HTTP
    answer), its ``Retry-After`` header, whether the URL itself could not be used, and
    the error's text (kept in the reason)."""
    detail = f": {error}" if error else ""
    if malformed_url:
        return OpenVerdict(OpenAction.FATAL, f"malformed WebSocket URL (check BINANCE_WS_URL){detail}")
    if status is None:
        return OpenVerdict(OpenAction.BACKOFF, error or "network error")
    if status in FATAL_STATUSES:
        return OpenVerdict(OpenAction.FATAL, FATAL_STATUSES[status])
    if status in RETRY_AFTER_STATUSES:
        wait = parse_retry_after(retry_after, 0.0)
        return OpenVerdict(OpenAction.RETRY_AFTER, f"HTTP {status}, Retry-After {retry_after!r}", wait)
    return OpenVerdict(OpenAction.BACKOFF, f"HTTP {status}{detail}")


def reconnect_delays(
    initial: float, cap: float, *, first_s: float = 1.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Delays before each consecutive reconnect attempt: the first in
    [0, min(``first_s``, ``initial``)], then :func:`quaint.service.retry.jittered_backoff`
    from ``initial`` up to ``cap``."""
    rand = rng or random.Random()
    yield rand.uniform(0.0, min(first_s, initial))
    yield from jittered_backoff(initial, cap, rng=rand)
