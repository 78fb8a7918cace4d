"""The exchange's time, as far as this process can prove it (sans-I/O).

Which minutes are closed is the exchange's call, not the host's. A host clock running
ahead of Binance's would take the still-open minute for a closed one, and a klines page
reaching the live edge includes that open candle: stored as final, it would never be
corrected. So every "now" of the gap handler is an estimate of the exchange's clock
that never runs ahead of it, and no REST row is stored unless it had closed by then.

The estimate: ``GET /api/v3/time`` answers ``serverTime`` S, read by the exchange at some
instant between our send and our receipt. Taking it as read at our receipt (local time
R) gives ``offset = S - R``; ``local + offset`` is then at most the exchange's time (by
at most the round trip), as long as the local clock advances at the exchange's rate:
the service's default clock is monotonic (:func:`quaint.service.clock.steady_clock`), so
setting the host clock cannot move it between two samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quaint.binance.models import MINUTE_MS

# An offset this large (either way) is logged as a warning: the host clock is off.
SKEW_WARN_MS = 1000
# A serverTime outside [2017-01-01, 2100-01-01) is not a clock reading: refused, since
# every "now" of the service would follow it.
PLAUSIBLE_SERVER_MS = (1_483_228_800_000, 4_102_444_800_000)


@dataclass(frozen=True, slots=True)
class OffsetSample:
    offset_ms: int  # exchange minus local clock: the largest value the answer proves
    round_trip_s: float
    taken_at: float  # monotonic seconds
    server_ms: int


def offset_sample(
    sent_local_ms: int, received_local_ms: int, server_ms: int, sent_mono: float, received_mono: float
) -> OffsetSample | None:
    """One ``/api/v3/time`` exchange as a sample, or None when a clock ran backwards
    during it (the answer then bounds nothing) or the answer is no plausible time."""
    if received_local_ms < sent_local_ms or received_mono < sent_mono:
        return None
    if not PLAUSIBLE_SERVER_MS[0] <= server_ms < PLAUSIBLE_SERVER_MS[1]:
        return None
    return OffsetSample(server_ms - received_local_ms, received_mono - sent_mono, received_mono, server_ms)


class ExchangeClock:
    """The latest sample, when to take the next, and the exchange time it gives."""

    def __init__(self, sync_interval_s: float) -> None:
        self.sync_interval_s = sync_interval_s
        self.sample: OffsetSample | None = None
        self._warned_at: int | None = None  # offset last warned about

    @property
    def synced(self) -> bool:
        return self.sample is not None

    def due(self, mono_now: float) -> bool:
        return self.sample is None or mono_now - self.sample.taken_at >= self.sync_interval_s

    def seconds_until_due(self, mono_now: float) -> float:
        if self.sample is None:
            return 0.0
        return max(0.0, self.sample.taken_at + self.sync_interval_s - mono_now)

    def observe(self, sample: OffsetSample) -> bool:
        """Adopt ``sample`` (the latest wins: the exchange may have corrected its own
        clock). True when it deserves a warning: a large offset not already reported."""
        self.sample = sample
        off = sample.offset_ms
        if abs(off) < SKEW_WARN_MS:
            self._warned_at = None
            return False
        if self._warned_at is not None and abs(off - self._warned_at) < SKEW_WARN_MS:
            return False
        self._warned_at = off
        return True

    def now(self, local_ms: int) -> int:
        """The exchange's time at local time ``local_ms``: never ahead of it once a sample
        exists; before the first, the local clock itself (nothing is stored until then)."""
        return local_ms if self.sample is None else local_ms + self.sample.offset_ms


def closed_prefix(open_times: Sequence[int], close_times: Sequence[int], exchange_ms: int) -> int:
    """How many leading rows of a klines page (oldest first) had closed by ``exchange_ms``,
    a time the exchange had certainly reached before it answered. The rows after them
    (the open minute at the live edge) are not final and must not be stored."""
    n = 0
    for open_time, close_time in zip(open_times, close_times, strict=True):
        # A 1-minute candle closes at open + 59 999 ms; a later close_time is believed.
        if max(close_time, open_time + MINUTE_MS - 1) >= exchange_ms:
            break
        n += 1
    return n
