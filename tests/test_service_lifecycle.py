"""The one lifecycle both services run on (:func:`quaint.service.lifecycle.serve`).

As processes (``python -m feeder``, ``python -m gap_handler``): a port in use is one line
and exit 2, found before the database is tried; a database that cannot be reached is
retried for ``DB_CONNECT_TIMEOUT_S`` and then one ``startup_failed`` line and exit 3;
neither prints a traceback. In this event loop, on a real database: a stop during the
start-up retry ends it with 0; a run that outlives the shutdown deadline is cancelled;
a service that stops itself for good exits 1, a crash exits 1 with its traceback.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from feeder import service as feeder_service
from feeder.settings import FeederSettings
from gap_handler.cli import run_backfill
from gap_handler.settings import GapHandlerSettings
from quaint.service.health import HealthReport
from quaint.service.lifecycle import (
    EXIT_BAD_CONFIG,
    EXIT_DATABASE_UNAVAILABLE,
    EXIT_FAILED,
    EXIT_STOPPED,
    RESOURCES_KEY,
    Resources,
    ServiceSpec,
    serve,
)
from quaint.service.settings import Settings, db_fields_from_url
from tests.support.gap_handler import settings_for
from tests.support.services import free_port, served

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["feeder", "gap_handler"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything either service reads as configuration."""
    names = {n.upper() for n in (*FeederSettings.model_fields, *GapHandlerSettings.model_fields)}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(LOG_FORMAT="json", PYTHONUNBUFFERED="1", **extra)
    return env


def run_service(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def events(stdout: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("module", SERVICES)
def test_a_port_in_use_is_one_line_and_exit_2_before_the_database_is_tried(module: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        prefix = module.upper()
        # Nothing listens on DB_PORT and start-up would retry it for an hour: only a port
        # check that comes first can end the process within the test's timeout.
        env = clean_env(
            DB_HOST="127.0.0.1",
            DB_PORT=str(free_port()),
            DB_CONNECT_TIMEOUT_S="3600",
            **{f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": str(port)},
        )
        done = run_service(module, env)
    assert done.returncode == EXIT_BAD_CONFIG, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"invalid configuration: {prefix}_PORT: "), lines
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
    assert not any(e["event"] == "database_unreachable" for e in events(done.stdout))


@pytest.mark.parametrize("module", SERVICES)
def test_an_unreachable_database_is_retried_then_one_line_and_exit_3(module: str) -> None:
    db_port = free_port()
    prefix = module.upper()
    env = clean_env(
        DB_HOST="127.0.0.1",
        DB_PORT=str(db_port),
        DB_CONNECT_TIMEOUT_S="1",
        **{f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": "0"},
    )
    done = run_service(module, env)
    assert done.returncode == EXIT_DATABASE_UNAVAILABLE, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    logged = events(done.stdout)
    assert any(e["event"] == "database_unreachable" for e in logged)  # retried first
    failed = [e for e in logged if e["event"] == "startup_failed"]
    assert len(failed) == 1 and f"127.0.0.1:{db_port}" in str(failed[0]["error"])
    assert "unreachable for 1s" in str(failed[0]["error"])


async def test_the_cli_reports_an_unreachable_database_with_exit_3() -> None:
    settings = settings_for(f"postgresql://postgres@127.0.0.1:{free_port()}/x", "http://127.0.0.1:1")
    settings = settings.model_copy(update={"db_connect_timeout_s": 0.5})
    args = ["--symbol", "BTCUSDT", "--since", "2026-01-01", "--until", "2026-01-02"]
    assert await run_backfill(settings, args, io.StringIO()) == EXIT_DATABASE_UNAVAILABLE


async def test_a_stop_during_the_start_up_retry_ends_it_with_0() -> None:
    settings = FeederSettings(
        db_host="127.0.0.1",
        db_port=free_port(),
        db_connect_timeout_s=3600,
        feeder_host="127.0.0.1",
        feeder_port=0,
        use_uvloop=False,
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(serve(feeder_service.spec(settings), stop=stop))
        deadline = asyncio.get_running_loop().time() + 30
        while not any(e["event"] == "database_unreachable" for e in logs):
            assert asyncio.get_running_loop().time() < deadline, "no connection attempt"
            await asyncio.sleep(0.05)
        stop.set()
        code = await asyncio.wait_for(task, 30)
    assert code == EXIT_STOPPED
    assert [e.get("during") for e in logs if e["event"] == "feeder_stopped"] == ["start-up"]


class Scripted:
    """A service double whose ``run()`` does what the test says once stopped (or at once)."""

    def __init__(self, resources: Resources, behaviour: str) -> None:
        self.resources = resources
        self.behaviour = behaviour
        self.fatal: str | None = None
        self.cancelled = False
        self._stop = asyncio.Event()

    async def run(self) -> None:
        if self.behaviour == "crash":
            raise RuntimeError("a bug")
        if self.behaviour == "cannot_run":
            self.fatal = "nothing can ever work"
            self._stop.set()
            return
        await self._stop.wait()
        try:
            await asyncio.Event().wait()  # "stubborn": never drains
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def stop(self) -> None:
        self._stop.set()

    async def wait_stopping(self) -> None:
        await self._stop.wait()

    async def health(self) -> HealthReport:
        return HealthReport("healthy", {"behaviour": self.behaviour})


SCRIPTED_KEY = web.AppKey("scripted", Scripted)


def scripted_spec(db_url: str, behaviour: str, made: list[Scripted]) -> ServiceSpec[Scripted]:
    settings = Settings(**db_fields_from_url(db_url), db_connect_timeout_s=10)

    async def assemble(resources: Resources) -> Scripted:
        made.append(Scripted(resources, behaviour))
        return made[-1]

    return ServiceSpec(
        name="scripted",
        settings=settings,
        host="127.0.0.1",
        port=0,
        key=SCRIPTED_KEY,
        assemble=assemble,
        registry=CollectorRegistry(),
        shutdown_deadline_s=0.2,
    )


async def test_a_run_past_the_shutdown_deadline_is_cancelled_and_the_pool_closed(db_url: str) -> None:
    made: list[Scripted] = []
    with capture_logs() as logs:
        async with served(scripted_spec(db_url, "stubborn", made)) as handle:
            assert handle.app[RESOURCES_KEY] is made[0].resources
            code = await asyncio.wait_for(handle.shutdown(), 30)
    assert code == EXIT_STOPPED
    assert made[0].cancelled
    assert [e["deadline_s"] for e in logs if e["event"] == "scripted_stop_deadline_passed"] == [0.2]
    assert made[0].resources.pool.is_closing() and made[0].resources.session.closed


@pytest.mark.parametrize(("behaviour", "logged"), [("cannot_run", None), ("crash", "scripted_failed")])
async def test_a_service_that_ends_by_itself_exits_1(db_url: str, behaviour: str, logged: str | None) -> None:
    made: list[Scripted] = []
    with capture_logs() as logs:
        code = await asyncio.wait_for(serve(scripted_spec(db_url, behaviour, made), stop=asyncio.Event()), 30)
    assert code == EXIT_FAILED
    failed = [e for e in logs if e["event"] == "scripted_failed"]
    if logged is None:
        assert failed == [] and made[0].fatal is not None
    else:
        assert len(failed) == 1 and isinstance(failed[0]["exc_info"], RuntimeError)
    assert made[0].resources.pool.is_closing()
