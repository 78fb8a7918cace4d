"""End to end: ``./deploy.sh --local --simulate`` brings the whole suite up on this machine.

The real scripts start the project's own database cluster, the bundled simulator (at 60x speed),
the feeder, the gap handler and a real Prometheus server, on free ports and in a temporary run
directory. The tests then watch real data arrive, punch a hole into the stored history and wait for
the gap handler to fill it, check Prometheus's view of both services, run the ML example, and
finally ``./cleanup.sh --local --volumes`` must leave nothing running.

Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from quaint.testing.services import free_port

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
T = TypeVar("T")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="local mode needs Linux (setsid, /proc)"),
]


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


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    if not (ROOT / "feeder" / "__main__.py").exists() or not (ROOT / "gap_handler" / "__main__.py").exists():
        pytest.skip("feeder/gap_handler not written yet")
    # The database runs as the postgres user when the tests run as root: the run dir's parents must be
    # traversable (pytest's own tmp dirs are 0700), so use a world-traversable temp dir.
    base = Path(tempfile.mkdtemp(prefix="quaint-deploy-"))
    base.chmod(0o755)
    ports = {name: free_port() for name in ("feeder", "gap_handler", "simulator", "prometheus")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "SIM_", "BINANCE_"))},
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
        # Whatever a test did, nothing may outlive the module.
        run_script([str(ROOT / "cleanup.sh"), "--local", "--volumes"], env, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(240)
def test_deploy_prints_urls_and_reports_simulated_data(suite: Suite) -> None:
    out = suite.deploy_output
    assert f"http://127.0.0.1:{suite.ports['feeder']}/health" in out
    assert f"http://127.0.0.1:{suite.ports['gap_handler']}/health" in out
    assert "SIMULATED market data" in out
    # No secret in the output: the local cluster's URL is printed without its password.
    assert "postgres:postgres@" not in out
    assert {"simulator", "feeder", "gap_handler"} <= suite.pids.keys()
    for name in ("feeder", "gap_handler", "simulator"):
        assert (suite.run_dir / "logs" / f"{name}.log").stat().st_size > 0


@pytest.mark.timeout(240)
def test_both_services_healthy_and_data_arrives(suite: Suite) -> None:
    for name in ("feeder", "gap_handler"):
        status, body = http_get(f"http://127.0.0.1:{suite.ports[name]}/health")
        assert status == 200, f"{name} /health: {status} {body[:500]!r}"
        assert json.loads(body)["status"] == "healthy"

    def ws_candles() -> int | None:
        n = suite.fetchval("SELECT count(DISTINCT symbol) FROM candles_1m WHERE source = 'ws'")
        return int(n) if n == len(SYMBOLS) else None

    def book_ticks() -> int | None:
        n = suite.fetchval("SELECT count(DISTINCT symbol) FROM book_ticker")
        return int(n) if n == len(SYMBOLS) else None

    def features() -> int | None:
        n = suite.fetchval("SELECT count(DISTINCT symbol) FROM feature_cache")
        return int(n) if n == len(SYMBOLS) else None

    wait_for(ws_candles, 60, "live candles of every symbol")
    wait_for(book_ticks, 60, "book ticks of every symbol")
    wait_for(features, 60, "feature rows of every symbol")
    # The stream keeps coming: more closed candles within a few (simulated) minutes.
    before = int(suite.fetchval("SELECT count(*) FROM candles_1m WHERE source = 'ws'"))

    def more() -> bool:
        return int(suite.fetchval("SELECT count(*) FROM candles_1m WHERE source = 'ws'")) >= before + 4

    wait_for(more, 30, "more live candles")


@pytest.mark.timeout(240)
def test_punched_hole_is_backfilled(suite: Suite) -> None:
    # The gap handler first makes HISTORY_DAYS (1 day) complete from REST: wait for that window.
    lo_sql = "date_trunc('minute', now()) - INTERVAL '3 hours'"
    window = f"symbol = 'BTCUSDT' AND time >= {lo_sql} AND time < {lo_sql} + INTERVAL '60 minutes'"

    def bootstrapped() -> bool:
        return int(suite.fetchval(f"SELECT count(*) FROM candles_1m WHERE {window}")) == 60

    wait_for(bootstrapped, 90, "the 1-day history to be backfilled")
    hole = (
        f"symbol = 'BTCUSDT' AND time >= {lo_sql} + INTERVAL '20 minutes'"
        f" AND time < {lo_sql} + INTERVAL '30 minutes'"
    )
    expected = suite.fetchval(f"SELECT array_agg(time ORDER BY time) FROM candles_1m WHERE {hole}")
    assert len(expected) == 10
    punched_at = suite.fetchval("SELECT now()")
    assert suite.execute(f"DELETE FROM candles_1m WHERE {hole}") == "DELETE 10"

    def refilled() -> bool:
        times = suite.fetchval(
            f"SELECT array_agg(time ORDER BY time) FROM candles_1m WHERE {hole} AND source = 'rest' "
            "AND ingested_at > $1",
            punched_at,
        )
        return times == expected

    wait_for(refilled, 60, "the gap handler to backfill the 10 deleted minutes")

    def logged() -> bool:
        n = suite.fetchval(
            "SELECT count(*) FROM data_quality_logs WHERE event_type = 'gap_backfilled'"
            " AND symbol = 'BTCUSDT' AND time > $1 AND gap_start <= $2 AND gap_end >= $3",
            punched_at,
            expected[0],
            expected[-1],
        )
        return int(n) >= 1

    wait_for(logged, 30, "a gap_backfilled row covering the hole in data_quality_logs")


@pytest.mark.timeout(240)
def test_prometheus_scrapes_both_services(suite: Suite) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus binary missing (Debian: apt-get install --no-install-recommends prometheus)")
    assert "prometheus" in suite.pids, "deploy.sh did not start Prometheus although it is installed"
    base = f"http://127.0.0.1:{suite.ports['prometheus']}"

    def targets_up() -> dict[str, str] | None:
        status, body = http_get(f"{base}/api/v1/targets")
        if status != 200:
            return None
        health = {t["labels"]["job"]: t["health"] for t in json.loads(body)["data"]["activeTargets"]}
        return health if health.get("feeder") == "up" and health.get("gap_handler") == "up" else None

    health = wait_for(targets_up, 60, "Prometheus to report both targets up")
    assert health["feeder"] == health["gap_handler"] == "up"

    def ingested() -> float | None:
        query = urllib.parse.quote('sum(feeder_rows_written_total{table="candles_1m"})')
        status, body = http_get(f"{base}/api/v1/query?query={query}")
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        value = float(result[0]["value"][1]) if result else 0.0
        return value if value > 0 else None

    assert wait_for(ingested, 60, "a non-zero feeder_rows_written_total in Prometheus") > 0

    def recovered() -> float | None:
        query = urllib.parse.quote("sum(quaint_gap_handler_candles_recovered_total)")
        status, body = http_get(f"{base}/api/v1/query?query={query}")
        result = json.loads(body)["data"]["result"] if status == 200 else []
        value = float(result[0]["value"][1]) if result else 0.0
        return value if value > 0 else None

    assert wait_for(recovered, 60, "a non-zero gap handler recovery counter in Prometheus") > 0


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics page can produce, including families with no sample yet."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            names.update(family + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum"))
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


@pytest.mark.timeout(240)
def test_prometheus_evaluates_every_alert_rule_on_real_metrics(suite: Suite) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus binary missing (Debian: apt-get install --no-install-recommends prometheus)")
    base = f"http://127.0.0.1:{suite.ports['prometheus']}"
    expected = set(re.findall(r"^\s*- alert: (\w+)$", (ROOT / "prometheus" / "alerts.yml").read_text(), re.M))
    assert len(expected) >= 10

    def evaluated() -> list[dict[str, Any]] | None:
        status, body = http_get(f"{base}/api/v1/rules?type=alert")
        if status != 200:
            return None
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        # Prometheus reports a zero time until a rule's first evaluation.
        done = all(not r["lastEvaluation"].startswith("0001-") for r in rules)
        return rules if done and {r["name"] for r in rules} == expected else None

    rules = wait_for(evaluated, 60, "Prometheus to load and evaluate every rule of alerts.yml")
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), rules
    exported: set[str] = set()
    for name in ("feeder", "gap_handler"):
        status, body = http_get(f"http://127.0.0.1:{suite.ports[name]}/metrics")
        assert status == 200
        exported |= exported_names(body.decode())
    for rule in rules:
        used = set(re.findall(r"\b(?:feeder|quaint_gap_handler)_[a-z0-9_]+", rule["query"]))
        if not used:  # only Prometheus' own `up` (QuaintServiceDown)
            assert rule["query"].startswith("up{"), rule["query"]
            continue
        assert used <= exported, f"{rule['name']} uses metrics no service exports: {used - exported}"


@pytest.mark.timeout(240)
def test_ml_example_reads_current_features(suite: Suite) -> None:
    url = urllib.parse.urlsplit(suite.db_url)
    env = {
        **suite.env,
        "DB_HOST": url.hostname or "127.0.0.1",
        "DB_PORT": str(url.port),
        "DB_USER": url.username or "postgres",
        "DB_PASSWORD": url.password or "",
        "DB_NAME": url.path.lstrip("/"),
    }

    def features() -> bool:
        return int(suite.fetchval("SELECT count(*) FROM feature_cache WHERE symbol = 'ETHUSDT'")) > 0

    wait_for(features, 60, "feature rows")
    done = run_script([sys.executable, "scripts/ml_example.py", "--symbol", "ETHUSDT"], env, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["symbol"] == "ETHUSDT"
    assert result["version"] == "v1"
    assert result["features"] and result["model_input"]
    newest = suite.fetchval("SELECT max(time) FROM feature_cache WHERE symbol = 'ETHUSDT'")
    assert result["time"] <= newest.isoformat()


@pytest.mark.timeout(240)
def test_cleanup_leaves_nothing_running(suite: Suite) -> None:
    db_port = int((suite.run_dir / "pgdata" / "port").read_text())
    postmaster = int((suite.run_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    pids = {**suite.pids, "postgres": postmaster}
    ports = {**suite.ports, "database": db_port}
    assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())
    t0 = time.monotonic()
    done = run_script([str(ROOT / "cleanup.sh"), "--local", "--volumes"], suite.env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"cleanup.sh --local --volumes: {time.monotonic() - t0:.1f} s")

    def gone(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"  # exited; only waiting for its parent to reap it

    still = {name: pid for name, pid in pids.items() if not gone(pid)}
    assert not still, f"still running after cleanup: {still}"
    open_ports = {name: port for name, port in ports.items() if listening(port)}
    assert not open_ports, f"still listening after cleanup: {open_ports}"
    assert not suite.run_dir.exists(), "--volumes must delete the run directory"
