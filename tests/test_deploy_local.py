"""End to end: ``./deploy.sh --local --simulate`` brings the whole suite up on this machine.

The real scripts start the project's own database cluster, the bundled simulator (at 60x speed),
the feeder, the gap handler and a real Prometheus server, on free ports and in a temporary run
directory. The tests then watch real data arrive, punch a hole into the stored history and wait for
the gap handler to fill it, check Prometheus's view of both services, run the ML example with the
settings ``scripts/local_suite.sh env`` prints, SIGKILL the feeder and wait for its supervisor to
bring it back, and finally ``./cleanup.sh --local --volumes`` must leave nothing running.

Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_local_suite import ROOT, SYMBOLS, Suite, http_get, listening, run_script, running_suite, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="local mode needs Linux (setsid, /proc)"),
]


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    with running_suite() as s:
        yield s


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
    # The DB_* settings it chose (the cluster's own port, not 5432), and how to get them into a shell.
    port = (suite.run_dir / "pgdata" / "port").read_text().strip()
    assert f"DB_HOST=127.0.0.1 DB_PORT={port} DB_USER=postgres DB_NAME=btc_ml_production" in out
    assert 'eval "$(scripts/local_suite.sh env)"' in out


@pytest.mark.timeout(240)
def test_prometheus_pages_are_linked_where_debian_serves_them(suite: Suite) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus binary missing (Debian: apt-get install --no-install-recommends prometheus)")
    links = re.findall(r"http://127\.0\.0\.1:\d+/\S*(?:alerts|targets)", suite.deploy_output)
    assert len(links) == 2, suite.deploy_output
    for link, title in zip(links, ("Alerts", "Targets"), strict=True):
        status, body = http_get(link)
        assert status == 200, f"{link}: {status}"
        assert title.encode() in body
    if "/classic/" in links[0]:
        # Debian's build has no newer UI: its bare /alerts is a 404, which is why the classic one is named.
        assert http_get(f"http://127.0.0.1:{suite.ports['prometheus']}/alerts")[0] == 404


@pytest.mark.timeout(240)
def test_env_prints_the_running_suites_settings(suite: Suite) -> None:
    shell = suite.shell_env()
    url = urllib.parse.urlsplit(suite.db_url)
    assert shell["DB_HOST"] == "127.0.0.1" and shell["DB_PORT"] == str(url.port)
    assert shell["DB_USER"] == "postgres" and shell["DB_NAME"] == "btc_ml_production"
    assert shell["DATABASE_URL"] == f"postgresql://postgres@127.0.0.1:{url.port}/btc_ml_production"
    # The simulator the services read, never the real Binance.
    assert shell["BINANCE_REST_URL"] == f"http://127.0.0.1:{suite.ports['simulator']}"
    assert shell["BINANCE_WS_URL"] == f"ws://127.0.0.1:{suite.ports['simulator']}"
    assert shell["SYMBOLS"] == ",".join(SYMBOLS)
    assert shell["FEEDER_PORT"] == str(suite.ports["feeder"])
    assert shell["GAP_HANDLER_PORT"] == str(suite.ports["gap_handler"])
    assert shell["SIM_PORT"] == str(suite.ports["simulator"])


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
        return bool(times == expected)

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
def test_ml_example_refuses_to_guess_next_to_the_suite(suite: Suite) -> None:
    # suite.env has no DB_*: as in a fresh shell, the defaults (localhost:5432) are not this suite.
    assert not any(k.startswith("DB_") for k in suite.env)
    done = run_script([sys.executable, "scripts/ml_example.py", "--symbol", "ETHUSDT"], suite.env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'eval "$(scripts/local_suite.sh env)"' in done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.timeout(240)
def test_ml_example_reads_current_features(suite: Suite) -> None:
    env = {**suite.env, **suite.shell_env()}

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


def status_of(suite: Suite) -> str:
    done: subprocess.CompletedProcess[str] = run_script(
        [str(ROOT / "scripts" / "local_suite.sh"), "status"], suite.env, timeout=60
    )
    return done.stdout


@pytest.mark.timeout(240)
def test_a_killed_service_is_restarted(suite: Suite) -> None:
    """SIGKILL (no stop request, no chance to clean up): the supervisor starts the feeder again, says
    so in its log and in `status`, and the data flows again."""
    old = int(suite.state("feeder")["child"])
    assert f"feeder: running (pid {old}; no restarts)" in status_of(suite)
    before = int(suite.fetchval("SELECT count(*) FROM candles_1m WHERE source = 'ws'"))
    os.kill(old, signal.SIGKILL)

    def restarted() -> int | None:
        state = suite.state("feeder")
        new = int(state.get("child") or 0)
        if state.get("state") != "running" or new in (0, old):
            return None
        status, _ = http_get(f"http://127.0.0.1:{suite.ports['feeder']}/health")
        return new if status == 200 else None

    new = wait_for(restarted, 60, "the feeder to be restarted and healthy")
    assert suite.state("feeder")["restarts"] == "1" and suite.state("feeder")["last_exit"] == "137"
    assert f"feeder: running (pid {new}; restarts 1, last exit: signal KILL at " in status_of(suite)
    log = (suite.run_dir / "logs" / "feeder.log").read_text()
    assert "feeder ended without a stop request (killed by signal 9 (KILL))" in log
    assert "restarting feeder (restart 1)" in log

    def flowing() -> bool:
        return int(suite.fetchval("SELECT count(*) FROM candles_1m WHERE source = 'ws'")) >= before + 4

    wait_for(flowing, 60, "live candles from the restarted feeder")
    # Deploying again next to it starts nothing new, and an earlier crash is not a failed start.
    again = run_script([str(ROOT / "deploy.sh"), "--local", "--simulate"], suite.env, timeout=200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"feeder already running (pid {suite.pids['feeder']})" in again.stderr
    assert int(suite.state("feeder")["child"]) == new


@pytest.mark.timeout(240)
def test_cleanup_leaves_nothing_running(suite: Suite) -> None:
    db_port = int((suite.run_dir / "pgdata" / "port").read_text())
    postmaster = int((suite.run_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    # The supervisors (the pid files) and the services they run now (restarted ones included).
    services = {f"{name} service": int(suite.state(name)["child"]) for name in suite.pids}
    logs = {name: suite.run_dir / "logs" / f"{name}.log" for name in suite.pids}
    pids = {**suite.pids, **services, "postgres": postmaster}
    ports = {**suite.ports, "database": db_port}
    assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())
    t0 = time.monotonic()
    done = run_script([str(ROOT / "cleanup.sh"), "--local"], suite.env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"cleanup.sh --local: {time.monotonic() - t0:.1f} s")
    # Read before --volumes deletes them.
    logs_read = {name: path.read_text() for name, path in logs.items()}
    done = run_script([str(ROOT / "cleanup.sh"), "--local", "--volumes"], suite.env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

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
    # Each was stopped by request, and that was final (its supervisor is gone, checked above).
    for name, text in logs_read.items():
        last = text.rstrip().splitlines()[-1]
        assert last.endswith(f"{name} stopped on request (exit code 0) ====="), text[-2000:]
