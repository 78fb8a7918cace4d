"""One vocabulary for the database's state (issue 16): the feeder and the gap handler
said ``disconnected`` and ``unavailable`` for the same thing; both ``/health`` bodies
now use the words of ``quaint.service.health`` (and of the logs and the API's 503)."""

from __future__ import annotations

from feeder.core.health import HealthInputs as FeederInputs
from feeder.core.health import build_health as feeder_health
from gap_handler.core.health import HealthInputs as GapInputs
from gap_handler.core.health import build_health as gap_health
from gap_handler.core.rate import RateState
from quaint.service.health import CONNECTED, UNAVAILABLE


def _feeder(db_up: bool) -> dict[str, object]:
    inputs = FeederInputs(
        connections_up=1,
        connections_planned=1,
        database_connected=db_up,
        shedding_drops=False,
        candles_processed=0,
        uptime_s=1.0,
        symbols=[],
    )
    return feeder_health(inputs).body


def _gap(db_up: bool) -> dict[str, object]:
    inputs = GapInputs(
        database_connected=db_up,
        rate=RateState("ok"),
        rate_until=None,
        listener_connected=db_up,
        exchange_clock=None,
        backfills_completed=0,
        candles_recovered=0,
        backfills_in_flight=0,
        backfills_queued=0,
        last_scan_at=None,
        last_scan_s=None,
        automation="timescaledb",
    )
    return gap_health(inputs).body


def test_both_services_name_the_database_state_alike() -> None:
    assert (CONNECTED, UNAVAILABLE) == ("connected", "unavailable")
    for up, word in ((True, CONNECTED), (False, UNAVAILABLE)):
        assert _feeder(up)["database_status"] == word
        assert _gap(up)["database_status"] == word
        assert _gap(up)["listener"] == word
