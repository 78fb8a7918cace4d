"""When the daily database jobs run (sans-I/O).

Used only when the schema reports automation == 'service' (Apache TimescaleDB without
pg_cron in this database): the gap handler then runs them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class DailyJob:
    name: str
    sql: str  # a constant statement, no parameters
    hour_utc: int

    def __post_init__(self) -> None:
        if not 0 <= self.hour_utc < 24:
            raise ValueError("hour_utc must be within 0..23")


DAILY_JOBS = (
    DailyJob("cleanup", "SELECT quaint_cleanup()", 2),
    DailyJob("resolve_predictions", "SELECT quaint_resolve_predictions()", 3),
)


def next_run(now: datetime, hour_utc: int) -> datetime:
    """The first hh:00:00 UTC strictly after ``now``."""
    if now.tzinfo is None:
        raise ValueError("naive datetime: a timezone is required")
    now = now.astimezone(UTC)
    today = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    return today if today > now else today + timedelta(days=1)
