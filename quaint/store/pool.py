"""The asyncpg pool: created once per process, with classified retry at start-up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import structlog

from quaint.service.retry import jittered_backoff
from quaint.service.settings import Settings
from quaint.store.errors import RETRYABLE_CONNECT_ERRORS

log = structlog.get_logger(__name__)


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached (or refused us) at start-up."""


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments: several hosts are tried in order, each connection kept only
    when the server matches ``DB_TARGET_SESSION_ATTRS`` (read-write: the primary)."""
    hosts = settings.db_hosts
    return {
        "host": hosts[0][0] if len(hosts) == 1 else [h for h, _ in hosts],
        "port": hosts[0][1] if len(hosts) == 1 else [p for _, p in hosts],
        "target_session_attrs": settings.db_target_session_attrs,
        "user": settings.db_user,
        "password": settings.db_password.get_secret_value() or None,
        "database": settings.db_name,
    }


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """Per-connection set-up: JSONB as Python objects (orjson)."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(settings: Settings, *, delays: Iterator[float] | None = None) -> asyncpg.Pool:
    """Create the process's pool, retrying reachability errors until
    ``db_connect_timeout_s`` has passed. Wrong credentials or a missing database fail
    at once: retrying cannot fix them."""
    deadline = time.monotonic() + settings.db_connect_timeout_s
    delays = delays or jittered_backoff(0.5, 5.0)
    target = f"{','.join(f'{h}:{p}' for h, p in settings.db_hosts)}/{settings.db_name}"
    while True:
        try:
            pool = await asyncpg.create_pool(
                **connect_kwargs(settings),
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                init=prepare_connection,
                timeout=10,
                command_timeout=60,
            )
        except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
            raise DatabaseUnavailable(
                f"database {target} refused the credentials of user {settings.db_user!r}: {exc}"
            ) from None
        except asyncpg.InvalidCatalogNameError:
            raise DatabaseUnavailable(f"database {settings.db_name!r} does not exist on {target}") from None
        except RETRYABLE_CONNECT_ERRORS as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"database {target} unreachable for {settings.db_connect_timeout_s:.0f}s: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            delay = min(next(delays), remaining)
            log.warning("database_unreachable", target=target, error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
        else:
            assert pool is not None
            return pool


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 10.0) -> None:
    """Close gracefully; connections still busy after ``timeout_s`` are terminated."""
    try:
        async with asyncio.timeout(timeout_s):
            await pool.close()
    except TimeoutError:
        pool.terminate()
