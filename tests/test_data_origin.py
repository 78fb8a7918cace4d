"""Simulated history must not pass for real (issue 16): the database is marked with what
fed it (``quaint_config`` key ``data_origin``, by the first service that ran on it), and a
service or the CLI configured for the other origin refuses to start: one line, exit 2,
nothing written."""

from __future__ import annotations

import asyncio
import io

import asyncpg
import pytest
from pydantic import ValidationError

from feeder import service as feeder_service
from gap_handler import service as gap_service
from gap_handler.bootstrap import run_bootstrap
from gap_handler.cli import run_backfill
from quaint.binance.models import ms_to_datetime
from quaint.service.lifecycle import EXIT_BAD_CONFIG, serve
from quaint.service.settings import Settings
from tests.support.feeder import settings_for as feeder_settings_for
from tests.support.gap_handler import settings_for
from tests.support.services import served
from tests.support.simulator import running_simulator

pytestmark = pytest.mark.slow


async def _marker_and_rows(db_url: str) -> tuple[str | None, int]:
    conn = await asyncpg.connect(db_url)
    try:
        marker = await conn.fetchval("SELECT value FROM quaint_config WHERE key = 'data_origin'")
        return marker, int(await conn.fetchval("SELECT count(*) FROM candles_1m"))
    finally:
        await conn.close()


def _one_refusal(err: str, wanted: str) -> None:
    assert err.count("\n") == 1, err
    assert "DATA_ORIGIN" in err and f"configured for {wanted}" in err, err


async def test_a_database_fed_by_the_simulator_refuses_real_services(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _marker_and_rows(db_url) == (None, 0)  # a fresh database is not marked yet
    async with running_simulator(symbols=["BTCUSDT"], speed=0) as sim:
        simulated = settings_for(db_url, sim.rest_url, symbols=["BTCUSDT"], data_origin="simulated")
        async with served(gap_service.spec(simulated, now_ms=sim.clock.now_ms)):
            pass
        marker, rows = await _marker_and_rows(db_url)
        assert marker == "simulated"
        # The same origin starts again on it.
        async with served(gap_service.spec(simulated, now_ms=sim.clock.now_ms)):
            pass

        real = simulated.model_copy(update={"data_origin": "binance"})
        capsys.readouterr()
        code = await serve(gap_service.spec(real, now_ms=sim.clock.now_ms), stop=asyncio.Event())
        assert code == EXIT_BAD_CONFIG
        _one_refusal(capsys.readouterr().err, "binance")

        feeder = feeder_settings_for(db_url, sim.ws_url, data_origin="binance")
        code = await serve(feeder_service.spec(feeder), stop=asyncio.Event())
        assert code == EXIT_BAD_CONFIG
        _one_refusal(capsys.readouterr().err, "binance")

        since = ms_to_datetime(sim.clock.now_ms() - 3_600_000).isoformat()
        out = io.StringIO()
        code = await run_backfill(
            real, ["--symbol", "BTCUSDT", "--since", since], out, now_ms=sim.clock.now_ms
        )
        assert code == 2 and out.getvalue() == ""
        err = capsys.readouterr().err
        assert err.startswith("error: DATA_ORIGIN:") and err.count("\n") == 1, err

        code = await run_bootstrap(
            real, ["--symbols", "BTCUSDT", "--since", since], out, now_ms=sim.clock.now_ms
        )
        assert code == 2 and out.getvalue() == ""
        err = capsys.readouterr().err
        assert err.startswith("error: DATA_ORIGIN:") and err.count("\n") == 1, err
    assert await _marker_and_rows(db_url) == ("simulated", rows)  # nothing written by the refused ones


def test_data_origin_is_one_of_two_words() -> None:
    assert Settings.model_validate({"data_origin": " Simulated "}).data_origin == "simulated"
    assert Settings.model_validate({}).data_origin == "binance"
    with pytest.raises(ValidationError, match="data_origin"):
        Settings.model_validate({"data_origin": "real"})
