"""Every database error either service can meet, classified once by type.

Callers handle an error by its class, never by its message:

* ``CONNECTION_LOST``: the server is unreachable, restarting or cut the connection. The
  work is kept (buffered, or left for the next scan) and retried with backoff.
* ``TRANSIENT``: the statement lost a race and would succeed if run again: a deadlock
  (40P01), a serialization failure (40001), a lock timeout (55P03), a cancelled query
  (57014: statement timeout), too many connections (53300). Retried at once with a
  short backoff and counted; the database is not "down".
* ``REJECTED``: the server refuses these rows (bad data, a constraint the code should
  never violate). Running the same statement again fails the same way: the rows are
  isolated and reported, never retried for ever.
* ``SERVER``: the server answers but fails for a reason an operator must fix (schema
  missing, privileges, disk full, read-only standby). Kept and retried like an outage,
  and logged as an error.

A service exits only on bad configuration, so every class is handled where it occurs.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg

T = TypeVar("T")

# "Not reachable yet" (server starting, restarting, network): what a connection attempt retries.
RETRYABLE_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    # Several hosts, none the primary yet (a promotion under way): the next try may find it.
    asyncpg.TargetServerAttributeNotMatched,
)

# A query whose connection went away (or whose state is unknown after a client timeout).
CONNECTION_LOST_ERRORS: tuple[type[BaseException], ...] = (
    *RETRYABLE_CONNECT_ERRORS,
    asyncpg.InterfaceError,
    # A connection cut mid-operation by a server shutdown can be handed out again with
    # its protocol stuck ("cannot switch to state 11; another operation (2) is in
    # progress", MagicStack/asyncpg#784, #1069): unusable, and the pool terminates it on
    # release. Found by tests/test_chaos.py (PostgreSQL restarts under load).
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.PostgresConnectionError,
)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.TransactionRollbackError,  # deadlock 40P01, serialization 40001 and the rest of class 40
    asyncpg.LockNotAvailableError,  # 55P03: lock_timeout, NOWAIT
    asyncpg.QueryCanceledError,  # 57014: statement_timeout (never our own cancel: that is CancelledError)
    asyncpg.TooManyConnectionsError,  # 53300: another client holds the slots for now
)

REJECTED_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)

# Everything a database call can raise: what a shell catches before classifying.
DB_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_LOST_ERRORS, asyncpg.PostgresError)


class DbErrorClass(enum.StrEnum):
    CONNECTION_LOST = "connection_lost"
    TRANSIENT = "transient"
    REJECTED = "rejected"
    SERVER = "server"


def classify_db_error(exc: BaseException) -> DbErrorClass:
    """The class of an error from :data:`DB_ERRORS` (anything else is a bug: ``TypeError``)."""
    # Transient first: TooManyConnectionsError is also a connect-retry error, and the
    # query that met it can simply run again.
    if isinstance(exc, TRANSIENT_ERRORS):
        return DbErrorClass.TRANSIENT
    if isinstance(exc, CONNECTION_LOST_ERRORS):
        return DbErrorClass.CONNECTION_LOST
    if isinstance(exc, REJECTED_ERRORS):
        return DbErrorClass.REJECTED
    if isinstance(exc, asyncpg.PostgresError):
        return DbErrorClass.SERVER
    raise TypeError(f"not a database error: {type(exc).__name__}")


def describe(exc: BaseException) -> str:
    """One line for logs and events: type, SQLSTATE when the server sent one, message."""
    state = getattr(exc, "sqlstate", None)
    code = f" [{state}]" if isinstance(state, str) else ""
    return f"{type(exc).__name__}{code}: {exc}"[:300]


async def retry_transient(
    op: Callable[[], Awaitable[T]],
    delays: Iterator[float],
    *,
    max_attempts: int,
    on_retry: Callable[[BaseException, float], None],
) -> T:
    """Run ``op`` until it succeeds, retrying only :data:`TRANSIENT_ERRORS`, at most
    ``max_attempts`` times in all; the last transient error (and any other) propagates.
    ``op`` must be safe to run again (one statement, or a whole transaction)."""
    attempt = 1
    while True:
        try:
            return await op()
        except TRANSIENT_ERRORS as exc:
            if attempt >= max_attempts:
                raise
            delay = next(delays)
            on_retry(exc, delay)
            attempt += 1
            await asyncio.sleep(delay)
