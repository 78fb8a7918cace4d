"""The local suite the end-to-end tests run against: ``./deploy.sh --local --simulate`` for real (the
project's own database cluster, the bundled simulator at 60x speed, the feeder, the gap handler and
Prometheus when installed) on free ports, in a temporary run directory, and the helpers to look at it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
T = TypeVar("T")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@dataclass
class Suite:
    run_dir: Path
    env: dict[str, str]
    ports: dict[str, int]
    deploy_output: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        return (self.run_dir / "pgdata" / "url").read_text().strip()

    def state(self, name: str) -> dict[str, str]:
        """What the component's supervisor says (scripts/supervise.sh's state file)."""
        text = (self.run_dir / f"{name}.state").read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def shell_env(self) -> dict[str, str]:
        """The variables ``eval "$(scripts/local_suite.sh env)"`` sets, read back from a real bash."""
        script = 'eval "$(scripts/local_suite.sh env)" && env -0'
        done = run_script(["bash", "-c", script], self.env, timeout=60)
        assert done.returncode == 0, done.stderr
        return dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)

    def fetchval(self, sql: str, *args: Any) -> Any:
        return asyncio.run(self._call("fetchval", sql, *args))

    def execute(self, sql: str, *args: Any) -> str:
        return str(asyncio.run(self._call("execute", sql, *args)))

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.db_url)
        try:
            return await getattr(conn, method)(sql, *args)
        finally:
            await conn.close()


def run_script(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@contextmanager
def running_suite() -> Iterator[Suite]:
    """``./deploy.sh --local --simulate`` on free ports in a fresh run dir; ``./cleanup.sh --local
    --volumes`` afterwards, whatever happened."""
    # The database runs as the postgres user when the tests run as root: the run dir's parents must be
    # traversable (pytest's own tmp dirs are 0700), so use a world-traversable temp dir.
    base = Path(tempfile.mkdtemp(prefix="quaint-deploy-"))
    base.chmod(0o755)
    ports = {name: free_port() for name in ("feeder", "gap_handler", "simulator", "prometheus")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "SIM_", "BINANCE_", "POSTGRES_"))},
        "QUAINT_RUN_DIR": str(base / "run"),
        "QUAINT_ENV_FILE": str(base / "no.env"),  # the developer's own .env must not leak in
        "QUAINT_PYTHON": sys.executable,
        "FEEDER_PORT": str(ports["feeder"]),
        "GAP_HANDLER_PORT": str(ports["gap_handler"]),
        "SIM_PORT": str(ports["simulator"]),
        "PROMETHEUS_PORT": str(ports["prometheus"]),
        "PROMETHEUS_SCRAPE_INTERVAL": "1s",
        "SYMBOLS": ",".join(SYMBOLS),
        "SIM_SPEED": "60",  # one simulated minute per wall second
        "SIM_SEED": "7",
        "HISTORY_DAYS": "1",
        "BACKFILL_CHECK_INTERVAL_S": "2",
        "FULL_SCAN_INTERVAL_S": "0",  # every scan is a full one: holes punched by hand are found
        "FEATURE_CACHE_INTERVAL_S": "2",
        "LOG_LEVEL": "INFO",
        "DEPLOY_TIMEOUT_S": "120",
        "STOP_TIMEOUT_S": "20",
    }
    t0 = time.monotonic()
    up = run_script([str(ROOT / "deploy.sh"), "--local", "--simulate"], env, timeout=200)
    s = Suite(run_dir=base / "run", env=env, ports=ports, deploy_output=up.stdout + up.stderr)
    try:
        assert up.returncode == 0, f"deploy.sh --local --simulate failed:\n{s.deploy_output}"
        print(f"deploy.sh --local --simulate: healthy after {time.monotonic() - t0:.1f} s")
        for pid_file in s.run_dir.glob("*.pid"):
            s.pids[pid_file.stem] = int(pid_file.read_text())
        yield s
    finally:
        # Whatever a test did, nothing may outlive it.
        run_script([str(ROOT / "cleanup.sh"), "--local", "--volumes"], env, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
