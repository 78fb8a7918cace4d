"""Counters for checking clients' behaviour: request rates and connections (sans-I/O).

Times are wall seconds from a monotonic source, passed in by the caller.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

_HISTOGRAM_SECONDS = 3600  # per-second buckets kept (the last hour)
_KLINES_KEPT = 100_000  # klines answers remembered (symbol, first and last open time)


class Stats:
    def __init__(self, origin: float) -> None:
        self.ws_current = 0
        self.reset(origin)

    def reset(self, origin: float) -> None:
        """Start counting afresh (open connections stay counted as current)."""
        self.origin = origin
        self.total_requests = 0
        self.requests_by_path: Counter[str] = Counter()
        self.requests_by_status: Counter[int] = Counter()
        # Which minutes each klines answer carried: shows a client fetching a minute twice.
        self.klines_served: deque[tuple[str, int, int]] = deque(maxlen=_KLINES_KEPT)
        self.per_second: Counter[int] = Counter()
        self.max_requests_1s = 0
        self._window: deque[float] = deque()
        self.ws_total = 0
        self.ws_messages_sent = 0
        self.ws_messages_received = 0
        self.ws_control_messages = 0  # text frames (SUBSCRIBE, LIST_SUBSCRIPTIONS, ...)
        self.ws_incoming_peak_1s = 0  # most incoming messages one connection sent in any 1-s window
        self.ws_sent_by_kind: Counter[str] = Counter()
        self.ws_closed_by_reason: Counter[str] = Counter()

    def record_request(self, path: str, now: float) -> None:
        self.total_requests += 1
        self.requests_by_path[path] += 1
        second = int(now - self.origin)
        self.per_second[second] += 1
        if len(self.per_second) > _HISTOGRAM_SECONDS:
            del self.per_second[min(self.per_second)]
        # Sliding window: the busiest 1-s span anywhere, not just per calendar second.
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        window.append(now)
        self.max_requests_1s = max(self.max_requests_1s, len(window))

    def record_klines(self, symbol: str, first_open_ms: int, last_open_ms: int) -> None:
        self.klines_served.append((symbol, first_open_ms, last_open_ms))

    def record_status(self, status: int) -> None:
        self.requests_by_status[status] += 1

    def ws_opened(self) -> None:
        self.ws_current += 1
        self.ws_total += 1

    def ws_closed(self, reason: str) -> None:
        self.ws_current -= 1
        self.ws_closed_by_reason[reason] += 1

    def sent(self, kind: str, frames: int = 1) -> None:
        self.ws_messages_sent += frames
        self.ws_sent_by_kind[kind] += frames

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "uptime_s": round(now - self.origin, 3),
            "total_requests": self.total_requests,
            "max_requests_1s": self.max_requests_1s,
            "requests_per_second": [[s, n] for s, n in sorted(self.per_second.items())],
            "requests_by_path": dict(self.requests_by_path),
            "requests_by_status": {str(k): v for k, v in self.requests_by_status.items()},
            "ws_connections_current": self.ws_current,
            "ws_connections_total": self.ws_total,
            "ws_messages_sent": self.ws_messages_sent,
            "ws_messages_received": self.ws_messages_received,
            "ws_control_messages": self.ws_control_messages,
            "ws_incoming_peak_1s": self.ws_incoming_peak_1s,
            "ws_sent_by_kind": dict(self.ws_sent_by_kind),
            "ws_closed_by_reason": dict(self.ws_closed_by_reason),
        }
