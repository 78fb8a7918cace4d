"""A local-mode start that fails, for real: ``./deploy.sh --local --simulate`` with a setting only the
feeder rejects. The feeder exits 2 (bad configuration) while the database, the simulator and the gap
handler start; deploy.sh must fail at once showing the feeder's lines from this run only (never an
earlier run's), and its supervisor must not restart it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
EARLIER_RUN = "a line the feeder logged in an earlier run"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="local mode needs Linux (setsid, /proc)"),
]


def run(args: list[str], env: dict[str, str], timeout: float = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    # World-traversable, for the database's postgres user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="quaint-deploy-fail-"))
    base.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "SIM_", "BINANCE_", "POSTGRES_"))},
        "QUAINT_RUN_DIR": str(base / "run"),
        "QUAINT_ENV_FILE": str(base / "no.env"),
        "QUAINT_PYTHON": sys.executable,
        "FEEDER_PORT": str(free_port()),
        "GAP_HANDLER_PORT": str(free_port()),
        "SIM_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(free_port()),
        "SIM_SPEED": "60",
        "HISTORY_DAYS": "1",
        "DEPLOY_TIMEOUT_S": "120",
        "STOP_TIMEOUT_S": "20",
        # Valid for everyone else; the feeder needs at least 2 (kline + bookTicker per symbol).
        "STREAMS_PER_CONNECTION": "1",
    }
    try:
        yield env
    finally:
        run([str(ROOT / "cleanup.sh"), "--local", "--volumes"], env, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(300)
def test_a_failed_start_shows_this_runs_log_and_is_not_restarted(env: dict[str, str]) -> None:
    pytest.importorskip("simulator.__main__")
    run_dir = Path(env["QUAINT_RUN_DIR"])
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / ".quaint-run").touch()
    earlier = "\n===== 2020-01-01T00:00:00Z: starting feeder =====\n" + f"{EARLIER_RUN}\n" * 60
    (run_dir / "logs" / "feeder.log").write_text(earlier)

    done = run([str(ROOT / "deploy.sh"), "--local", "--simulate"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "feeder exited during start-up (code 2;" in done.stderr
    assert "invalid configuration: STREAMS_PER_CONNECTION" in done.stderr
    assert EARLIER_RUN not in done.stderr, "an earlier run's log was shown"
    assert "still running for inspection" in done.stderr and "./cleanup.sh --local" in done.stderr
    log = (run_dir / "logs" / "feeder.log").read_text()
    assert log.startswith(earlier), "the earlier run's lines are kept in the file"
    assert "feeder exited with code 2 (bad configuration, see above)" in log and "not restarted" in log
    assert "restarting feeder" not in log

    status = run([str(ROOT / "scripts" / "local_suite.sh"), "status"], env, timeout=60)
    assert status.returncode == 3
    assert "feeder: NOT running (exited with code 2, bad configuration" in status.stdout
    assert "gap_handler: running (pid " in status.stdout
