"""A database lost while a service applies the schema at start-up is retried, not a failed start.

Seen in the chaos run: the gap handler restarted, and PostgreSQL restarted while init.sql ran; the
schema step's ``finally`` unlocked on the dead connection, asyncpg answered "cannot switch to state
12; another operation (2) is in progress", that replaced the lost connection, and the service exited
with code 3. Here the same loss is made deterministic: init.sql is held inside its script by a lock
on ``candles_1m`` (its rollup views read that table), and its backend is terminated meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools

import asyncpg

from quaint.service.lifecycle import _prepare_database
from tests.support.gap_handler import settings_for
from tests.support.waiting import wait_for

WAITING_SCHEMA_BACKEND = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
"""


async def test_a_connection_lost_inside_the_schema_script_is_retried(db_url: str) -> None:
    settings = settings_for(db_url, "http://127.0.0.1:9", db_connect_timeout_s=60)
    blocker = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE candles_1m IN ACCESS EXCLUSIVE MODE")
        # Retries at once: the test's subject is that the loss is retried, not the backoff.
        prepared = asyncio.create_task(_prepare_database(pool, settings, itertools.repeat(0.05)))

        async def schema_waits_on_the_lock() -> bool:
            return await blocker.fetchval(WAITING_SCHEMA_BACKEND) is not None

        await wait_for(schema_waits_on_the_lock, 30, "init.sql waiting on candles_1m's lock")
        pid = await blocker.fetchval(WAITING_SCHEMA_BACKEND)
        assert await blocker.fetchval("SELECT pg_terminate_backend($1)", pid)
        # The first attempt's backend is gone; let the retry through.
        await tx.rollback()
        schema, origin = await asyncio.wait_for(prepared, 60)
        assert schema.license in ("apache", "timescale")
        assert origin.stored == settings.data_origin
        async with pool.acquire() as conn:
            # The lost session's advisory lock died with it: nothing holds the schema lock now.
            held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert held == 0
    finally:
        await pool.close()
        await blocker.close()
