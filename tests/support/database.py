"""Real PostgreSQL + TimescaleDB servers and throwaway databases for tests.

Server resolution, in order:
1. ``TEST_DATABASE_URL``: an existing server (any database on it; used as the maintenance connection).
2. ``QUAINT_TEST_SERVER=docker``, and only then: a container of ``QUAINT_TEST_DOCKER_IMAGE`` (default the
   ``timescale/timescaledb`` image below) via testcontainers, on the engine at ``DOCKER_HOST``. The image
   must already be in that engine: nothing is ever pulled (Ryuk, testcontainers' reaper, is off because it
   is an image pull of its own; the container is stopped by this module's context manager).
   ``QUAINT_TEST_DOCKER_NETWORK`` names a network for it (default: the engine's default bridge).
3. Otherwise a private cluster in a temporary directory via ``scripts/pg_cluster.sh start --fast``.
A Docker engine that merely answers never selects (2): it may have no registry, or be another test's.

Fresh databases are ``CREATE DATABASE ... TEMPLATE quaint_template`` (6-9 ms on the tmpfs test cluster,
40-55 ms with fsync on, plus ~3 ms to drop). TRUNCATE of every table measured 2.5 ms, but a copy also
resets sequences, TimescaleDB jobs and chunks, settings and any DDL a test ran, so tests cannot leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

# The result (if any) is ignored: appliers may report what they did.
SchemaApplier = Callable[[asyncpg.Connection], Awaitable[object]]
ServerSource = Literal["env", "docker", "local"]

# Same TimescaleDB version as the locally built Apache edition, so behaviour differs only by licence.
TIMESCALE_IMAGE = "timescale/timescaledb:2.19.3-pg15"
DEFAULT_TEMPLATE = "quaint_template"
CRON_DATABASE = "btc_ml_production"
_CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg_cluster.sh"
_DOCKER_SOCKET = "/var/run/docker.sock"
_SHM_DIR = "/dev/shm"
# Containers often give /dev/shm only 64 MB; a test cluster with a day of candles needs far more.
_SHM_MIN_FREE = 2 * 1024**3


class HarnessError(RuntimeError):
    """The test database server could not be provided."""


def quote_ident(name: str) -> str:
    """SQL identifier quoting (asyncpg has no helper for DDL identifiers)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class PgServer:
    """A running server. ``url`` names a database that always exists on it."""

    url: str
    source: ServerSource

    def url_for(self, database: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + quote(database, safe="")))

    @property
    def database(self) -> str:
        return urlsplit(self.url).path.lstrip("/") or "postgres"


# ---- server discovery ----


def _docker_api_status(path: str, timeout: float) -> int | None:
    """HTTP status of GET PATH on the engine at DOCKER_HOST (a unix socket; the default one when unset),
    or None when nothing answers there."""
    host = os.environ.get("DOCKER_HOST", "")
    socket_path = host.removeprefix("unix://") or _DOCKER_SOCKET
    if not Path(socket_path).exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(f"GET {quote(path)} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            status = sock.recv(64).split(b" ", 2)[1:2]
    except OSError:
        return None
    return int(status[0]) if status and status[0].isdigit() else None


def _docker_cli_ok(*args: str, timeout: float) -> bool:
    cli = shutil.which("docker")
    if cli is None:
        return False
    try:
        subprocess.run([cli, *args], capture_output=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _unix_engine() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


def docker_available(timeout: float = 2.0) -> bool:
    """Cheap, bounded check that a Docker engine answers (a docker CLI alone is not enough)."""
    if not _unix_engine():
        return _docker_cli_ok("info", timeout=timeout)
    return _docker_api_status("/_ping", timeout) == 200


def docker_image_present(image: str, timeout: float = 5.0) -> bool:
    """True when IMAGE is in the engine's local store (asks the engine; never pulls)."""
    if not _unix_engine():
        return _docker_cli_ok("image", "inspect", image, timeout=timeout)
    return _docker_api_status(f"/images/{image}/json", timeout) == 200


def server_source() -> ServerSource:
    """Where this session's server comes from (see the module docstring)."""
    if os.environ.get("TEST_DATABASE_URL"):
        return "env"
    forced = os.environ.get("QUAINT_TEST_SERVER", "")
    if forced not in ("", "docker", "local"):
        raise HarnessError(f"QUAINT_TEST_SERVER must be 'docker' or 'local', not {forced!r}")
    return "docker" if forced == "docker" else "local"


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """Provide a server for a whole test session and clean up whatever was started."""
    source = server_source()
    if source == "env":
        yield PgServer(os.environ["TEST_DATABASE_URL"], "env")
        return
    with _docker_server() if source == "docker" else _local_server() as server:
        yield server


def docker_test_image() -> str:
    return os.environ.get("QUAINT_TEST_DOCKER_IMAGE") or TIMESCALE_IMAGE


@contextlib.contextmanager
def _docker_server() -> Iterator[PgServer]:
    image = docker_test_image()
    engine = os.environ.get("DOCKER_HOST") or f"unix://{_DOCKER_SOCKET}"
    if not docker_available():
        raise HarnessError(f"QUAINT_TEST_SERVER=docker, but no Docker engine answers at {engine}")
    if not docker_image_present(image):
        raise HarnessError(
            f"QUAINT_TEST_SERVER=docker needs the image {image} in the engine at {engine}; the harness "
            "never pulls: build or load it there (QUAINT_TEST_DOCKER_IMAGE names another image), or unset "
            "QUAINT_TEST_SERVER to use a local cluster"
        )
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.config import testcontainers_config

    # Ryuk (the reaper container) would be pulled from Docker Hub; the with-block below stops ours.
    testcontainers_config.ryuk_disabled = True
    container = PostgresContainer(
        image, username="postgres", password="postgres", dbname=CRON_DATABASE, driver=None
    )
    if network := os.environ.get("QUAINT_TEST_DOCKER_NETWORK"):
        container.with_kwargs(network=network)
    # Throwaway container: durability off for speed; no telemetry from test runs.
    container.with_command(
        "postgres -c fsync=off -c synchronous_commit=off -c timescaledb.telemetry_level=off"
    )
    with container:
        yield PgServer(str(container.get_connection_url()), "docker")


def _cluster_script(*args: str, timeout: float) -> str:
    script = Path(os.environ.get("QUAINT_PG_CLUSTER_SCRIPT", str(_CLUSTER_SCRIPT)))
    if not script.is_file():
        raise HarnessError(f"{script} not found; set TEST_DATABASE_URL or QUAINT_PG_CLUSTER_SCRIPT")
    try:
        done = subprocess.run(
            [str(script), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{script.name} {args[0]} timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        # The script's own message says what to do (e.g. "run scripts/pg_cluster.sh install").
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise HarnessError(f"{script.name} {args[0]} failed (exit {done.returncode}):\n{tail}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _cluster_parent_dir() -> str | None:
    """Where throwaway clusters live: tmpfs when it is roomy, else the usual temp dir.

    On tmpfs CREATE DATABASE ... TEMPLATE took 6-9 ms against 10-120 ms on this machine's disk (it
    varies with other I/O). Directly under a shared temp root either way: the postgres user must be
    able to traverse every parent, which rules out pytest's per-user 0700 basetemp when run as root.
    """
    if configured := os.environ.get("QUAINT_PG_TMPDIR"):
        return configured
    with contextlib.suppress(OSError):
        stat = os.statvfs(_SHM_DIR)
        if os.access(_SHM_DIR, os.W_OK) and stat.f_bavail * stat.f_frsize >= _SHM_MIN_FREE:
            return _SHM_DIR
    return None


@contextlib.contextmanager
def _local_server() -> Iterator[PgServer]:
    datadir = tempfile.mkdtemp(prefix="quaint-pg-", dir=_cluster_parent_dir())
    try:
        url = _cluster_script("start", "--dir", datadir, "--fast", timeout=120)
        if not url.startswith("postgresql://"):
            raise HarnessError(f"pg_cluster.sh start printed no URL (got {url!r})")
        try:
            yield PgServer(url, "local")
        finally:
            _cluster_script("stop", "--dir", datadir, timeout=60)
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


async def cron_database_url(server: PgServer) -> str:
    """URL of the database named by ``cron.database_name``: pg_cron can only be used there.

    Falls back to the server's own database when pg_cron is not loaded (the Docker image)."""
    conn = await asyncpg.connect(server.url, timeout=30)
    try:
        name = await conn.fetchval("SELECT current_setting('cron.database_name', true)")
    finally:
        await conn.close()
    return server.url_for(name) if name else server.url


# ---- databases ----


class TemplateDatabases:
    """A schema-loaded template and cheap per-test copies of it.

    Every method opens its own short connection, so one instance can be shared by fixtures that
    run on different event loops (session-scoped template, function-scoped test databases).
    """

    def __init__(
        self, server: PgServer, template: str = DEFAULT_TEMPLATE, prefix: str = "quaint_test"
    ) -> None:
        self.server = server
        self.template = template
        # The pid keeps concurrent sessions against one shared server (TEST_DATABASE_URL) apart.
        self._prefix = f"{prefix}_{os.getpid()}_"
        self._counter = itertools.count(1)
        self._strategy = ""

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(self.server.url, timeout=30)
        try:
            yield conn
        finally:
            await conn.close()

    async def build(self, apply_schema: SchemaApplier) -> None:
        """(Re)create the template and load the schema into it."""
        async with self._admin() as admin:
            await _drop(admin, self.template)
            await admin.execute(f"CREATE DATABASE {quote_ident(self.template)}")
        conn = await asyncpg.connect(self.server.url_for(self.template), timeout=30)
        try:
            await apply_schema(conn)
        finally:
            await conn.close()
        async with self._admin() as admin:
            # TimescaleDB starts a scheduler in every database that has the extension, and any session
            # in the template makes CREATE DATABASE ... TEMPLATE fail ("being accessed by other users").
            # Refusing new connections keeps the scheduler out; then end the ones already there.
            await admin.execute(
                f"ALTER DATABASE {quote_ident(self.template)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )
            await _terminate_sessions(admin, self.template)
            # Measured for a TimescaleDB template: FILE_COPY 6 ms vs WAL_LOG 9 ms with fsync off, but
            # WAL_LOG 38-54 ms vs FILE_COPY 55-76 ms with fsync on (FILE_COPY forces checkpoints).
            if admin.get_server_version().major >= 15:
                fsync = await admin.fetchval("SELECT current_setting('fsync')")
                self._strategy = " STRATEGY " + ("FILE_COPY" if fsync == "off" else "WAL_LOG")

    async def create(self) -> str:
        """A new database copied from the template; returns its URL."""
        name = f"{self._prefix}{next(self._counter)}"
        sql = f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(self.template)}{self._strategy}"
        async with self._admin() as admin:
            deadline = time.monotonic() + 10
            while True:
                # Normally nothing is connected (the template refuses connections), but a session that
                # got in before it was locked would make CREATE DATABASE wait 5 s and then fail.
                await _terminate_sessions(admin, self.template)
                try:
                    await admin.execute(sql)
                    break
                except asyncpg.ObjectInUseError:
                    if time.monotonic() > deadline:
                        raise
        return self.server.url_for(name)

    async def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        async with self._admin() as admin:
            await _drop(admin, name)

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[str]:
        """A fresh database for the duration of the block, dropped afterwards so disk does not grow."""
        url = await self.create()
        try:
            yield url
        finally:
            await self.drop(url)

    async def drop_template(self) -> None:
        async with self._admin() as admin:
            await _drop(admin, self.template)


_OTHER_SESSIONS = "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"


async def _terminate_sessions(admin: asyncpg.Connection, database: str) -> None:
    await admin.execute(f"SELECT pg_terminate_backend(pid) {_OTHER_SESSIONS}", database)
    # Termination is asynchronous: wait until the sessions are really gone.
    deadline = time.monotonic() + 10
    while await admin.fetchval(f"SELECT count(*) {_OTHER_SESSIONS}", database):
        if time.monotonic() > deadline:
            raise HarnessError(f"sessions on {database} did not end within 10 s")
        await asyncio.sleep(0.02)


async def _drop(admin: asyncpg.Connection, database: str) -> None:
    # A template database cannot be dropped until it is unmarked.
    if await admin.fetchval("SELECT datistemplate FROM pg_database WHERE datname = $1", database):
        await admin.execute(f"ALTER DATABASE {quote_ident(database)} WITH IS_TEMPLATE false")
    # FORCE ends leftover sessions (TimescaleDB's scheduler, a leaked test connection).
    await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
