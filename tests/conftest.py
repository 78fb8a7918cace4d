"""Shared fixtures: one real TimescaleDB server per session, a fresh schema-loaded database per test.

- ``pg_server`` (session): :class:`tests.support.database.PgServer`, the server (``.url``, ``.url_for(db)``).
- ``db_templates`` (session): :class:`tests.support.database.TemplateDatabases` holding ``quaint_template``.
- ``db_url`` (function): URL (str) of a new database copied from the template; dropped afterwards.
- ``db_pool`` (function): an ``asyncpg.Pool`` on ``db_url`` with ``quaint.store.pool.prepare_connection``
  as its per-connection init (as the services have); closed afterwards.
- ``cron_db_url`` (session): URL (str) of the database named by ``cron.database_name``, the only one
  where pg_cron works. Shared by the whole session (not reset between tests) and without the schema.

Tests that use any of these are marked ``db`` automatically (deselect with ``-m "not db"``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from tests.support.database import PgServer, TemplateDatabases, cron_database_url, running_server

_DB_FIXTURES = frozenset({"pg_server", "db_templates", "db_url", "db_pool", "cron_db_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _DB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    # Synchronous on purpose: starting the server is subprocess work and must not tie an event loop
    # to the session.
    with running_server() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def db_templates(pg_server: PgServer) -> AsyncIterator[TemplateDatabases]:
    # Imported here so that test collection works even while the schema module is broken or absent.
    from quaint.store.schema import apply_schema

    templates = TemplateDatabases(pg_server)
    await templates.build(apply_schema)
    yield templates
    await templates.drop_template()


@pytest_asyncio.fixture
async def db_url(db_templates: TemplateDatabases) -> AsyncIterator[str]:
    async with db_templates.fresh() as url:
        yield url


@pytest_asyncio.fixture
async def db_pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    # The services' own per-connection set-up (JSONB codec), so tests see what they see.
    from quaint.store.pool import prepare_connection

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4, init=prepare_connection)
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def cron_db_url(pg_server: PgServer) -> str:
    return await cron_database_url(pg_server)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With QUAINT_NO_SKIP=1 (set by test.sh once it has installed every tool), a skipped test
    fails the run: in CI a skip would be a test that silently did not run."""
    if os.environ.get("QUAINT_NO_SKIP") != "1" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(f"QUAINT_NO_SKIP=1: {len(skipped)} test(s) skipped; failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
