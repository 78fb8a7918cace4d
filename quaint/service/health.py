"""``GET /health`` answers as a plain value (pure): what every service's health
probe builds and the HTTP app (:mod:`quaint.service.http`) serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# One vocabulary for a database connection in every service's /health (the pool's and
# the gap handler's LISTEN connection alike), the word the logs and the API's 503 use.
CONNECTED = "connected"
UNAVAILABLE = "unavailable"


def connection_status(connected: bool) -> str:
    return CONNECTED if connected else UNAVAILABLE


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: str  # healthy | degraded | unhealthy
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 200 if self.status == "healthy" else 503
