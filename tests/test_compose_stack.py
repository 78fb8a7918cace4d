"""`docker compose up` for real: the project's own ./deploy.sh --simulate on a private Docker engine.

scripts/docker_engine.sh starts a dockerd of this test's own (data root, socket and config in a fresh
directory; no iptables rules or forwarding on the machine) and loads the base and the TEST STAND-IN images
from the machine's cache (building them the first time): no image registry is reachable here, so the
upstream images docker-compose.yml names are replaced, inside that engine only, by stand-ins built from
Debian packages and PyPI (tests/docker/; see tests/docker_stack.py). The stand-in TimescaleDB is the
Apache edition. Then ./deploy.sh --simulate --pull never runs with COMPOSE_FILE adding
tests/docker/compose.e2e.yml, and the tests below check the running stack, in file order, ending with
./cleanup.sh. Marker ``docker``: ``./test.sh -m docker`` runs this alone. Timings (engine, images,
deploy) are printed at the end and written to test-artifacts/compose/timings.txt.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator

import asyncpg
import pytest
from docker_stack import (
    ARTIFACTS,
    DB_NAME,
    PGADMIN_EMAIL,
    PROJECT,
    ROOT,
    SYMBOLS,
    Engine,
    Stack,
    deployed_stack,
    http_json,
    missing_prerequisite,
    running_engine,
    wait_for,
)
from pgadmin_ui import CHROMIUM_ARGS, open_server_without_prompt, require_chromium, tree_entry

from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.binance.parse import parse_rest_klines
from quaint.store.candles import fetch_candles
from tests.support.database import server_source

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]
SERVICES = ("timescaledb", "simulator", "data-feeder", "gap-handler", "pgadmin", "prometheus")
OUR_IMAGES = ("data-feeder", "gap-handler", "simulator")
# Whom each container's main process runs as (the stand-ins use the upstream images' users).
RUNS_AS = {"timescaledb": "postgres", "pgadmin": "pgadmin", "prometheus": "nobody"}
RUNS_AS |= dict.fromkeys(OUR_IMAGES, "quaint")
REST_ROWS = (
    "SELECT count(*) FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3 AND source = 'rest'"
)
# Run with QUAINT_TEST_SERVER=docker against this engine: the harness's container path, for real.
HARNESS_PROBE = """
import asyncio, asyncpg
from tests.support.database import running_server
QUERY = "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
async def main(url):
    conn = await asyncpg.connect(url)
    print(await conn.fetchval(QUERY))
    await conn.close()
with running_server() as server:
    print(server.source)
    asyncio.run(main(server.url))
"""


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    reason = missing_prerequisite()
    if reason is not None:
        # Skipped only when nobody asked for it: under ./test.sh (QUAINT_NO_SKIP=1) or -m docker it fails.
        asked = os.environ.get("QUAINT_NO_SKIP") == "1" or "docker" in str(request.config.option.markexpr)
        (pytest.fail if asked else pytest.skip)(reason)
    with running_engine() as eng:
        yield eng
    lines = [f"{name}: {seconds:.1f} s" for name, seconds in eng.timings.items()]
    (ARTIFACTS / "timings.txt").write_text("\n".join(lines) + "\n")
    print("\ncompose stack timings: " + "; ".join(lines))


@pytest.fixture(scope="module")
def stack(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    t0 = time.monotonic()
    with deployed_stack(engine, tmp_path_factory.mktemp("compose")) as running:
        yield running
    engine.timings["stack (deploy, tests, cleanup)"] = time.monotonic() - t0


async def connect(stack: Stack) -> asyncpg.Connection:
    return await asyncpg.connect(stack.db_url, password=stack.db_password, timeout=10)


def sim_now(stack: Stack) -> int:
    return int(http_json(stack.url("SIM_PUBLISH_PORT", "/_sim/clock"))["now"])


async def assert_matches_truth(stack: Stack, conn: asyncpg.Connection, symbol: str, lo: int, hi: int) -> None:
    """Every minute in [lo, hi) is stored exactly once and equals the exchange's own candle."""
    url = stack.url("SIM_PUBLISH_PORT", f"/_sim/truth?symbol={symbol}&start={lo}&end={hi}")
    truth = parse_rest_klines(http_json(url), symbol)
    assert [c.open_time for c in truth] == list(range(lo, hi, MINUTE_MS))
    assert await fetch_candles(conn, symbol, lo, hi) == truth


async def newest(conn: asyncpg.Connection, symbol: str) -> int:
    value = await conn.fetchval("SELECT max(time) FROM candles_1m WHERE symbol = $1", symbol)
    return int(value.timestamp() * 1000) if value else 0


def test_services_became_healthy_in_depends_on_order(stack: Stack) -> None:
    first: dict[tuple[str, str], int] = {}
    for event in stack.engine.events(stack.engine.started_at):
        service = event["Actor"]["Attributes"].get("com.docker.compose.service")
        action = event["Action"]
        if service and action in ("start", "health_status: healthy"):
            first.setdefault((service, action), int(event["timeNano"]))
    started = {s: first[(s, "start")] for s in SERVICES}
    healthy = {s: first[(s, "health_status: healthy")] for s in SERVICES}
    for service in ("data-feeder", "gap-handler", "pgadmin"):
        assert healthy["timescaledb"] < started[service], f"{service} started before timescaledb was healthy"
    for service in ("data-feeder", "gap-handler"):
        assert healthy["simulator"] < started[service], f"{service} started before the simulator was healthy"
    assert healthy["data-feeder"] < started["gap-handler"]
    assert max(started["data-feeder"], started["gap-handler"]) < started["prometheus"]
    for service in SERVICES:
        assert stack.container(service)["State"]["Health"]["Status"] == "healthy", service


def test_the_upstream_names_here_are_labelled_stand_ins(stack: Stack) -> None:
    images = {stack.container(s)["Config"]["Image"] for s in ("timescaledb", "prometheus")}
    images |= {"dpage/pgadmin4:9.18", "python:3.11.14-slim-bookworm"}
    for image in images:
        labels = stack.engine.inspect(image)["Config"]["Labels"] or {}
        assert labels.get("io.quaint.stand-in", "").startswith(f"TEST STAND-IN for {image} "), image


async def test_candles_book_ticks_and_features_arrive(stack: Stack) -> None:
    conn = await connect(stack)
    try:

        async def counts() -> dict[str, tuple[int, int, int]]:
            out = {}
            for symbol in SYMBOLS:
                ws = await conn.fetchval(
                    "SELECT count(*) FROM candles_1m WHERE symbol = $1 AND source = 'ws'", symbol
                )
                book = await conn.fetchval("SELECT count(*) FROM book_ticker WHERE symbol = $1", symbol)
                features = await conn.fetchval("SELECT count(*) FROM feature_cache WHERE symbol = $1", symbol)
                out[symbol] = (ws, book, features)
            return out

        deadline = time.monotonic() + 300
        while True:
            seen = await counts()
            if all(ws >= 30 and book >= 10 and f >= 5 for ws, book, f in seen.values()):
                break
            assert time.monotonic() < deadline, f"(ws candles, book ticks, features) per symbol: {seen}"
            await asyncio.sleep(1)
        for symbol in SYMBOLS:
            top = await newest(conn, symbol)
            await assert_matches_truth(stack, conn, symbol, top - 59 * MINUTE_MS, top + MINUTE_MS)
    finally:
        await conn.close()


async def test_a_punched_hole_is_backfilled(stack: Stack) -> None:
    conn = await connect(stack)
    try:
        symbol = SYMBOLS[1]
        lo = await newest(conn, symbol) - 40 * MINUTE_MS
        hi = lo + 10 * MINUTE_MS
        deleted = await conn.execute(
            "DELETE FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3",
            symbol,
            ms_to_datetime(lo),
            ms_to_datetime(hi),
        )
        assert deleted == "DELETE 10"
        deadline = time.monotonic() + 180
        while await conn.fetchval(REST_ROWS, symbol, ms_to_datetime(lo), ms_to_datetime(hi)) < 10:
            assert time.monotonic() < deadline, "the hole was not backfilled"
            await asyncio.sleep(1)
        await assert_matches_truth(stack, conn, symbol, lo, hi)
    finally:
        await conn.close()


async def test_a_feed_gap_is_detected_and_backfilled(stack: Stack) -> None:
    symbol = SYMBOLS[0]
    lo = (sim_now(stack) // MINUTE_MS + 5) * MINUTE_MS
    hi = lo + 3 * MINUTE_MS
    http_json(stack.url("SIM_PUBLISH_PORT", "/_sim/feed_gap"), {"start": lo, "end": hi, "symbol": symbol})
    conn = await connect(stack)
    try:
        deadline = time.monotonic() + 180
        while await conn.fetchval(REST_ROWS, symbol, ms_to_datetime(lo), ms_to_datetime(hi)) < 3:
            assert time.monotonic() < deadline, "the feed gap was not backfilled over REST"
            await asyncio.sleep(1)
        await assert_matches_truth(stack, conn, symbol, lo - 2 * MINUTE_MS, hi + 2 * MINUTE_MS)
        reported = await conn.fetchval(
            "SELECT count(*) FROM data_quality_logs WHERE event_type = 'gap_detected' AND source = 'feeder'"
            " AND symbol = $1 AND gap_start <= $2 AND gap_end >= $2",
            symbol,
            ms_to_datetime(lo),
        )
        assert reported >= 1, "the feeder did not report the gap"
    finally:
        await conn.close()


async def test_restarting_the_database_mid_stream_loses_no_candle(stack: Stack) -> None:
    before = {s: stack.container(s)["State"] for s in ("data-feeder", "gap-handler")}
    restarts = {s: stack.container(s)["RestartCount"] for s in before}
    db_started = stack.container("timescaledb")["State"]["StartedAt"]
    conn = await connect(stack)
    try:
        last_event = await conn.fetchval("SELECT coalesce(max(id), 0) FROM data_quality_logs")
        edge = {s: await newest(conn, s) for s in SYMBOLS}
    finally:
        await conn.close()
    done = stack.compose("restart", "timescaledb", timeout=180)
    assert done.returncode == 0, done.stderr

    def back() -> bool:
        state = stack.container("timescaledb")["State"]
        return bool(state["StartedAt"] != db_started and state["Health"]["Status"] == "healthy")

    wait_for("timescaledb healthy again after the restart", back, timeout=180)
    conn = await connect(stack)
    try:
        deadline = time.monotonic() + 240
        while not all([await newest(conn, s) >= edge[s] + 30 * MINUTE_MS for s in SYMBOLS]):
            assert time.monotonic() < deadline, "candles did not resume after the database restart"
            await asyncio.sleep(1)
        for symbol in SYMBOLS:
            top = await newest(conn, symbol)
            await assert_matches_truth(stack, conn, symbol, edge[symbol] - 5 * MINUTE_MS, top + MINUTE_MS)
        # A short restart may fall between two writes (then the pool just reconnects) or cost one
        # db_unavailable event; either way nothing may be dropped.
        dropped = await conn.fetchval(
            "SELECT count(*) FROM data_quality_logs WHERE id > $1 AND event_type = 'data_dropped'", last_event
        )
        assert dropped == 0
    finally:
        await conn.close()
    for service, state in before.items():
        now = stack.container(service)
        assert now["State"]["StartedAt"] == state["StartedAt"], f"{service} was restarted"
        assert now["RestartCount"] == restarts[service]


def test_containers_run_unprivileged_and_ours_read_only(stack: Stack) -> None:
    docker = stack.engine.docker
    for service, user in RUNS_AS.items():
        name = f"{PROJECT}-{service}-1"
        uid = docker("exec", name, "awk", "/^Uid:/ {print $2}", "/proc/1/status").stdout.strip()
        assert uid != "0", f"{service} runs as root"
        assert docker("exec", name, "getent", "passwd", uid).stdout.split(":")[0] == user, service
    for service in OUR_IMAGES:
        info = stack.container(service)
        assert info["Config"]["User"] == "10001:10001"
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        name = f"{PROJECT}-{service}-1"
        write = docker("exec", name, "sh", "-c", "touch /probe", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, service
        assert docker("exec", name, "sh", "-c", "touch /tmp/probe && echo ok").stdout.strip() == "ok"


def test_prometheus_scrapes_both_services(stack: Stack) -> None:
    def both_up() -> bool:
        targets = http_json(stack.url("PROMETHEUS_PUBLISH_PORT", "/api/v1/targets"))["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health.get("feeder") == "up" and health.get("gap_handler") == "up"

    wait_for("Prometheus reporting the feeder and gap handler targets up", both_up, timeout=180)


def test_pgadmin_shows_the_server_without_a_password_prompt(stack: Stack) -> None:
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        try:
            base = stack.url("PGADMIN_PORT")
            password = stack.pgadmin_password
            open_server_without_prompt(page, base, PGADMIN_EMAIL, password, "timescaledb", DB_NAME)
            tree_entry(page, DB_NAME).wait_for()
        finally:
            page.screenshot(path=str(ARTIFACTS / "pgadmin_compose.png"))
            browser.close()


def test_the_project_image_builds_offline_with_buildkit(stack: Stack) -> None:
    # No registry answers here, and the Dockerfile has no "# syntax=" line for BuildKit to resolve.
    done = stack.engine.run(
        "/usr/bin/docker",
        "build",
        "--network",
        "host",
        "--progress",
        "plain",
        "--target",
        "feeder",
        "-t",
        "quaint2/offline-check:1",
        str(ROOT),
        env={"DOCKER_BUILDKIT": "1"},
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "docker/dockerfile" not in done.stderr


def test_the_harness_never_uses_this_engine_unasked_and_never_pulls(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", stack.engine.env["DOCKER_HOST"])
    monkeypatch.delenv("QUAINT_TEST_SERVER", raising=False)
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    assert server_source() == "local", "an answering engine chose the test database"
    images = set(stack.engine.lines("images", "--format", "{{.Repository}}:{{.Tag}}"))
    since = time.time()
    # Asked for, with the (stand-in) image present: a container, without Ryuk or any pull.
    probe = HARNESS_PROBE
    # This engine has no default bridge (it adds nothing to the machine's network): a network of its own.
    stack.engine.docker("network", "create", "quaint-harness")
    env = {
        **stack.engine.env,
        "QUAINT_TEST_SERVER": "docker",
        "QUAINT_TEST_DOCKER_NETWORK": "quaint-harness",
        "PYTHONPATH": str(ROOT),
    }
    done = stack.engine.run(sys.executable, "-c", probe, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["docker", "1"]
    missing = stack.engine.run(
        sys.executable,
        "-c",
        probe,
        env={**env, "QUAINT_TEST_DOCKER_IMAGE": "quaint-absent/timescaledb:1"},
        timeout=120,
        check=False,
    )
    assert missing.returncode != 0 and "never pulls" in missing.stderr
    assert set(stack.engine.lines("images", "--format", "{{.Repository}}:{{.Tag}}")) == images
    pulls = [e for e in stack.engine.events(since, kind="image") if e["Action"] == "pull"]
    assert pulls == []
    leftovers = stack.engine.lines("ps", "-a", "-q", "--filter", "label=org.testcontainers=true")
    assert leftovers == []
    stack.engine.docker("network", "rm", "quaint-harness")


def project_objects(stack: Stack, kind: str) -> list[str]:
    """Names of the compose project's containers, networks or volumes in the engine."""
    label = f"label=com.docker.compose.project={PROJECT}"
    if kind == "container":
        return sorted(stack.engine.lines("ps", "-a", "--filter", label, "--format", "{{.Names}}"))
    return sorted(stack.engine.lines(kind, "ls", "--filter", label, "--format", "{{.Name}}"))


def test_cleanup_keeps_the_data_and_volumes_removes_it(stack: Stack) -> None:
    done = stack.script(str(ROOT / "cleanup.sh"))
    assert done.returncode == 0, done.stderr
    assert project_objects(stack, "container") == []
    assert project_objects(stack, "network") == []
    volumes = [f"{PROJECT}_{v}" for v in ("pgadmin-data", "prometheus-data", "timescaledb-data")]
    assert project_objects(stack, "volume") == volumes
    kept = stack.engine.docker(
        "run",
        "--rm",
        "-v",
        f"{PROJECT}_timescaledb-data:/data:ro",
        "quaint-standin/debian:bookworm",
        "test",
        "-s",
        "/data/PG_VERSION",
        check=False,
    )
    assert kept.returncode == 0, "the database volume lost its data"
    done = stack.script(str(ROOT / "cleanup.sh"), "--volumes")
    assert done.returncode == 0, done.stderr
    assert project_objects(stack, "container") == project_objects(stack, "network") == []
    assert stack.engine.lines("volume", "ls", "-q") == []
    assert stack.engine.lines("ps", "-a", "-q") == []
