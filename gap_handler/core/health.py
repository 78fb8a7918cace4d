"""``GET /health`` body of the gap handler (pure): what its shell gathered, judged.

* ``degraded`` (503) when any of these holds, each named in ``problems``: the database
  does not answer, the exchange has banned us (418), the NOTIFY listener is not
  connected, or the exchange's clock is not known yet (nothing is backfilled before:
  what is closed is the exchange's call).
* ``healthy`` (200) otherwise. A standby (``role: standby``: another instance leads) is
  healthy with the database alone: the listener and the clock are the leader's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gap_handler.core.rate import RateState
from quaint.service.health import HealthReport, connection_status


@dataclass(frozen=True, slots=True)
class HealthInputs:
    database_connected: bool
    rate: RateState
    rate_until: datetime | None  # the end of a pause or ban, as wall-clock time
    listener_connected: bool
    exchange_clock: dict[str, Any] | None  # the latest offset sample; None until the first
    backfills_completed: int
    candles_recovered: int
    backfills_in_flight: int
    backfills_queued: int
    last_scan_at: datetime | None
    last_scan_s: float | None
    automation: str  # who runs the daily jobs (the schema's answer)
    role: str = "leader"  # "standby": another instance holds the leader lock and does the work
    election_connected: bool = True  # the leader lock's own connection is up


def build_health(h: HealthInputs) -> HealthReport:
    problems = []
    if not h.database_connected:
        problems.append("database unavailable")
    if h.rate.state == "banned":
        problems.append("banned by the exchange")
    if not h.election_connected:
        problems.append("not connected for the leader election: cannot lead or take over")
    # A standby neither listens nor syncs the clock: that is the leader's work.
    if h.role == "leader" and not h.listener_connected:
        problems.append("not listening for gap notifications")
    if h.role == "leader" and h.exchange_clock is None:
        problems.append("exchange clock not synced yet (GET /api/v3/time): nothing is backfilled")
    body = {
        "role": h.role,
        "backfills_completed": h.backfills_completed,
        "candles_recovered": h.candles_recovered,
        "database_status": connection_status(h.database_connected),
        "rate_limit": {
            "state": h.rate.state,
            "until": h.rate_until.isoformat() if h.rate_until else None,
            "used_weight": h.rate.used_weight,
            "weight_limit": h.rate.weight_limit,
        },
        "listener": connection_status(h.listener_connected),
        "backfills_in_flight": h.backfills_in_flight,
        "backfills_queued": h.backfills_queued,
        "last_scan_at": h.last_scan_at.isoformat() if h.last_scan_at else None,
        "last_scan_s": None if h.last_scan_s is None else round(h.last_scan_s, 3),
        "automation": h.automation,
        "exchange_clock": h.exchange_clock,
        "problems": problems,
    }
    return HealthReport("degraded" if problems else "healthy", body)
