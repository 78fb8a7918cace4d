"""The simulated exchange clock.

``SimClock`` is pure arithmetic: it maps a wall reading (seconds from a monotonic
source) to simulated epoch milliseconds and back. ``LiveClock`` binds it to an
injectable time source and tells listeners when the mapping changes (speed change
or jump), so schedulers sleeping until a simulated instant can recompute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from quaint.binance.models import MINUTE_MS


def minute_floor(ms: int) -> int:
    """Open time of the minute containing ``ms``."""
    return ms - ms % MINUTE_MS


@dataclass(frozen=True, slots=True)
class SimClock:
    """Simulated time = ``start_ms + (wall - wall_origin) * 1000 * speed``.

    ``speed`` is simulated seconds per wall second; 0 freezes time."""

    start_ms: int
    speed: float
    wall_origin: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError("speed must be a finite number >= 0")

    def now_ms(self, wall: float) -> int:
        # floor, not round: the mapping must never run ahead of the wall reading, so
        # an event scheduled at wall_at(t) always sees now_ms >= t.
        return self.start_ms + math.floor((wall - self.wall_origin) * 1000.0 * self.speed)

    def wall_at(self, sim_ms: int) -> float:
        """Earliest wall reading at which ``now_ms`` reaches ``sim_ms`` (inf if frozen)."""
        if sim_ms <= self.start_ms:
            return self.wall_origin
        if self.speed == 0:
            return math.inf
        wall = self.wall_origin + (sim_ms - self.start_ms) / (1000.0 * self.speed)
        # Float rounding may land a hair early; nudge until the mapping agrees.
        while self.now_ms(wall) < sim_ms:
            wall = math.nextafter(wall, math.inf)
        return wall

    def wall_delay(self, sim_ms: int, wall_now: float) -> float:
        """Wall seconds from ``wall_now`` until ``sim_ms`` (0 if already past)."""
        return max(0.0, self.wall_at(sim_ms) - wall_now)

    def rebased(self, wall: float, *, speed: float | None = None, advance_ms: int = 0) -> SimClock:
        """Same simulated instant at ``wall`` (plus ``advance_ms``), new speed."""
        return SimClock(
            start_ms=self.now_ms(wall) + advance_ms,
            speed=self.speed if speed is None else speed,
            wall_origin=wall,
        )


class LiveClock:
    """A ``SimClock`` read from a time source (``time.monotonic`` by default).

    Tests may inject any callable returning seconds, e.g. a manually advanced fake."""

    def __init__(
        self, start_ms: int, speed: float, time_source: Callable[[], float] = time.monotonic
    ) -> None:
        self._time = time_source
        self._clock = SimClock(start_ms=start_ms, speed=speed, wall_origin=time_source())
        self._listeners: list[Callable[[], None]] = []

    @property
    def state(self) -> SimClock:
        return self._clock

    @property
    def speed(self) -> float:
        return self._clock.speed

    def wall(self) -> float:
        return self._time()

    def now_ms(self) -> int:
        return self._clock.now_ms(self._time())

    def wall_delay(self, sim_ms: int) -> float:
        return self._clock.wall_delay(sim_ms, self._time())

    def set(self, *, speed: float | None = None, advance_ms: int = 0) -> None:
        """Change speed and/or jump forward. Time never goes backwards: the stream
        has already published the past, so rewinding would contradict it."""
        if advance_ms < 0:
            raise ValueError("advance_ms must be >= 0: the simulated clock never goes backwards")
        self._clock = self._clock.rebased(self._time(), speed=speed, advance_ms=advance_ms)
        for listener in list(self._listeners):
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)
