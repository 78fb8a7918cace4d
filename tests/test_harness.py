"""The test-database harness itself: the server has what the project needs, and fresh databases are
independent and cheap. Uses a tiny local schema so it does not depend on quaint.store.schema."""

from __future__ import annotations

import http.server
import socketserver
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from tests.support.database import (
    CRON_DATABASE,
    TIMESCALE_IMAGE,
    HarnessError,
    PgServer,
    TemplateDatabases,
    docker_available,
    docker_image_present,
    quote_ident,
    running_server,
    server_source,
)


async def tiny_schema(conn: asyncpg.Connection) -> None:
    # A hypertable, so the template carries TimescaleDB's catalog and scheduler like the real schema.
    await conn.execute(
        """
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        CREATE TABLE probe (ts timestamptz NOT NULL, note text NOT NULL);
        SELECT create_hypertable('probe', by_range('ts', INTERVAL '1 day'));
        """
    )


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def harness_templates(pg_server: PgServer) -> AsyncIterator[TemplateDatabases]:
    templates = TemplateDatabases(pg_server, template="quaint_harness_template", prefix="quaint_harness")
    await templates.build(tiny_schema)
    yield templates
    await templates.drop_template()


@pytest_asyncio.fixture
async def harness_db(harness_templates: TemplateDatabases) -> AsyncIterator[asyncpg.Connection]:
    async with harness_templates.fresh() as url:
        conn = await asyncpg.connect(url)
        try:
            yield conn
        finally:
            await conn.close()


@pytest_asyncio.fixture
async def admin(pg_server: PgServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_server.url)
    try:
        yield conn
    finally:
        await conn.close()


def needs_pg_cron(pg_server: PgServer) -> None:
    # The timescale/timescaledb image is the Community edition without pg_cron; there the schema uses
    # TimescaleDB policies instead, so pg_cron is only required of the other servers.
    if pg_server.source == "docker":
        pytest.skip("the timescale/timescaledb image has no pg_cron (Community edition uses policies)")


async def test_extensions_available(admin: asyncpg.Connection, pg_server: PgServer) -> None:
    rows = await admin.fetch(
        "SELECT name FROM pg_available_extensions WHERE name IN ('timescaledb', 'pg_cron')"
    )
    names = {r["name"] for r in rows}
    assert "timescaledb" in names
    needs_pg_cron(pg_server)
    assert "pg_cron" in names


async def test_preloaded_libraries(admin: asyncpg.Connection, pg_server: PgServer) -> None:
    libraries = {lib.strip() for lib in (await admin.fetchval("SHOW shared_preload_libraries")).split(",")}
    assert "timescaledb" in libraries
    needs_pg_cron(pg_server)
    assert "pg_cron" in libraries
    cron_db = await admin.fetchval("SELECT current_setting('cron.database_name', true)")
    assert cron_db, "cron.database_name is not set"
    if pg_server.source == "local":
        assert cron_db == CRON_DATABASE
    assert await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", cron_db) == 1


async def test_timescaledb_license_readable(harness_db: asyncpg.Connection, pg_server: PgServer) -> None:
    license_ = await harness_db.fetchval("SELECT current_setting('timescaledb.license')")
    assert license_ in ("apache", "timescale")
    if pg_server.source == "local":
        assert license_ == "apache"  # scripts/pg_cluster.sh builds the Apache edition
    assert await harness_db.fetchval("SELECT count(*) FROM timescaledb_information.hypertables") == 1


async def test_fresh_databases_are_independent(harness_templates: TemplateDatabases) -> None:
    async with harness_templates.fresh() as first_url:
        conn = await asyncpg.connect(first_url)
        try:
            await conn.execute("INSERT INTO probe VALUES (now(), 'written in the first database')")
            assert await conn.fetchval("SELECT count(*) FROM probe") == 1
        finally:
            await conn.close()
    async with harness_templates.fresh() as second_url:
        assert second_url != first_url
        conn = await asyncpg.connect(second_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM probe") == 0
        finally:
            await conn.close()


async def test_fresh_database_is_dropped_afterwards(
    harness_templates: TemplateDatabases, admin: asyncpg.Connection
) -> None:
    async with harness_templates.fresh() as url:
        name = url.rsplit("/", 1)[1]
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
    assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0


async def test_fresh_databases_one_after_another(harness_templates: TemplateDatabases) -> None:
    # How fast (6-9 ms on tmpfs) is the harness's business, not an assertion: only that each works.
    names = set()
    for _ in range(5):
        async with harness_templates.fresh() as url:
            conn = await asyncpg.connect(url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM probe") == 0
            finally:
                await conn.close()
            names.add(url.rsplit("/", 1)[1])
    assert len(names) == 5


async def test_create_survives_a_session_in_the_template(pg_server: PgServer) -> None:
    # The failure mode the harness guards against: a session in the template (TimescaleDB's scheduler,
    # a stray psql) makes CREATE DATABASE ... TEMPLATE wait 5 s and fail ("being accessed by other users").
    templates = TemplateDatabases(pg_server, template="quaint_harness_busy_template", prefix="quaint_busy")
    await templates.build(tiny_schema)
    template = quote_ident(templates.template)
    admin = await asyncpg.connect(pg_server.url)
    try:
        is_locked = "SELECT NOT datallowconn FROM pg_database WHERE datname = $1"
        assert await admin.fetchval(is_locked, templates.template)
        # Let one session in, then lock again: the session stays, as one that got in before build()
        # locked the template would.
        await admin.execute(f"ALTER DATABASE {template} WITH ALLOW_CONNECTIONS true")
        intruder = await asyncpg.connect(pg_server.url_for(templates.template))
        await admin.execute(f"ALTER DATABASE {template} WITH ALLOW_CONNECTIONS false")
        try:
            # Without ending the intruder first, CREATE DATABASE would wait 5 s and fail: it
            # succeeds, and the intruder is gone.
            async with templates.fresh() as url:
                assert url.rsplit("/", 1)[1].startswith("quaint_busy")
            assert not await _still_alive(intruder)
        finally:
            await intruder.close()
    finally:
        await admin.close()
        await templates.drop_template()


async def _still_alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
        return False
    return True


def test_url_for_replaces_only_the_database() -> None:
    server = PgServer("postgresql://u:p@127.0.0.1:5433/base?sslmode=disable", "env")
    assert server.url_for("quaint_test_1") == "postgresql://u:p@127.0.0.1:5433/quaint_test_1?sslmode=disable"
    assert server.database == "base"


def test_quote_ident() -> None:
    assert quote_ident('we"ird') == '"we""ird"'


def test_docker_check_without_an_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert docker_available() is False


# ---- which server: a Docker engine that answers is not a reason to use it ----


class _FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A Docker API on a unix socket that has no images and records every request."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.requests: list[str] = []
        super().__init__(path, _FakeEngineHandler)


class _FakeEngineHandler(http.server.BaseHTTPRequestHandler):
    server: _FakeEngine

    def _answer(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        status = 200 if self.path.endswith("/_ping") else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK" if status == 200 else b"{}")

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeEngine]:
    # A short directory: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="quaint-fake-docker-") as tmp:
        path = str(Path(tmp) / "docker.sock")
        engine = _FakeEngine(path)
        thread = threading.Thread(target=engine.serve_forever, daemon=True)
        thread.start()
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
        monkeypatch.delenv("QUAINT_TEST_SERVER", raising=False)
        try:
            yield engine
        finally:
            engine.shutdown()
            engine.server_close()


def test_an_answering_engine_does_not_select_docker(fake_engine: _FakeEngine) -> None:
    assert docker_available() is True
    assert fake_engine.requests == ["GET /_ping"]
    assert server_source() == "local"


def test_docker_only_when_asked_and_never_pulls(
    fake_engine: _FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUAINT_TEST_SERVER", "docker")
    assert server_source() == "docker"
    assert docker_image_present(TIMESCALE_IMAGE) is False
    with pytest.raises(HarnessError) as info, running_server():
        pytest.fail("a server was provided without its image")
    message = str(info.value)
    assert TIMESCALE_IMAGE in message and "never pulls" in message and "QUAINT_TEST_SERVER" in message
    # The engine was asked whether the image is there; nothing was pulled (POST /images/create), no
    # container or Ryuk reaper created.
    assert all(r.startswith("GET ") for r in fake_engine.requests), fake_engine.requests
    assert "GET /images/timescale/timescaledb%3A2.19.3-pg15/json" in fake_engine.requests


def test_another_image_may_be_named(fake_engine: _FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAINT_TEST_SERVER", "docker")
    monkeypatch.setenv("QUAINT_TEST_DOCKER_IMAGE", "local/timescaledb:mine")
    with pytest.raises(HarnessError, match="local/timescaledb:mine"), running_server():
        pytest.fail("a server was provided without its image")


def test_an_unknown_server_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    monkeypatch.setenv("QUAINT_TEST_SERVER", "dokcer")
    with pytest.raises(HarnessError, match="must be 'docker' or 'local'"):
        server_source()
