"""``GET /health`` answers as a plain value (pure): what every service's health
probe builds and the HTTP app (:mod:`quaint.service.http`) serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: str  # healthy | degraded | unhealthy
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 200 if self.status == "healthy" else 503
