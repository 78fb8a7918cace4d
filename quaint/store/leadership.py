"""Leader election among gap handlers: one PostgreSQL session-level advisory lock.

The lock is held by a session, so it lives exactly as long as the holder's connection:
a holder that crashes, is killed or loses its network releases it when PostgreSQL closes
the session. It is taken on a dedicated connection (a pooled one would hand the session,
and the lock, to whichever caller acquires it next). Advisory locks are per database:
two deployments on one server do not contend.
"""

from __future__ import annotations

import hashlib
import math

import asyncpg


def session_settings(takeover_s: float, application_name: str) -> dict[str, str]:
    """Server-side TCP settings for the lock's session: a holder whose host stops answering
    loses its session (and so its locks) after about half of ``takeover_s``."""
    idle = max(1, math.floor(takeover_s / 4))
    interval = max(1, math.floor(takeover_s / 8))
    return {
        "application_name": application_name,
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": "2",
        "tcp_user_timeout": str(max(1000, int(takeover_s * 500))),
    }


# A fixed key in the advisory lock space (bigint): the first eight bytes of
# sha256("quaint.gap_handler.leader"), so no other tool's small integers collide with it.
LEADER_LOCK_KEY = 0x4E41_B796_83CF_5969
LEADER_APPLICATION_NAME = "quaint-gap-handler-leader"

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
# Who holds it (for the standby's log and health): the holding backend's client address.
HOLDER = """
SELECT a.pid, host(a.client_addr) AS client_addr, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid
  AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


# Which server this session is on (the database as the services see it): after a promotion
# it names the new primary.
SERVER = "SELECT coalesce(host(inet_server_addr()), 'local') || ':' || current_setting('port')"
LAST_LEADER_SERVER = """
SELECT details->>'server' FROM data_quality_logs WHERE event_type = 'leader_changed'
ORDER BY id DESC LIMIT 1
"""


async def server_identity(conn: asyncpg.Connection) -> str:
    """``address:port`` of the server this connection reached."""
    return str(await conn.fetchval(SERVER))


async def last_leader_server(conn: asyncpg.Connection) -> str | None:
    """The server the previous leader term started on, as its ``leader_changed`` row says."""
    value = await conn.fetchval(LAST_LEADER_SERVER)
    return None if value is None else str(value)


# Other candidates: sessions of this database with the same application name (their lock sessions).
OTHER_CANDIDATES = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()
"""


async def other_candidates(conn: asyncpg.Connection, application_name: str, *, within_s: float) -> int:
    """How many other sessions campaign under ``application_name`` (standbys, or a leader)."""
    return int(await conn.fetchval(OTHER_CANDIDATES, application_name, timeout=within_s))


async def try_lock(conn: asyncpg.Connection, *, within_s: float) -> bool:
    """Take the leader lock if nobody holds it; never waits for it."""
    return bool(await conn.fetchval(TRY_LOCK, LEADER_LOCK_KEY, timeout=within_s))


async def ping(conn: asyncpg.Connection, *, within_s: float) -> None:
    """The holder's session still answers (while it does, the lock is still its own)."""
    await conn.fetchval("SELECT 1", timeout=within_s)


async def holder(conn: asyncpg.Connection, *, within_s: float) -> dict[str, object] | None:
    """The session holding the lock (pid, client address, application name), or None."""
    row = await conn.fetchrow(HOLDER, LEADER_LOCK_KEY, timeout=within_s)
    return None if row is None else dict(row)


# ---- book tick ownership: one writer per symbol among redundant feeders ------------------


def book_lock_key(symbol: str) -> int:
    """The symbol's lock: a signed bigint from sha256 (distinct symbols never share one in
    practice, and none meets the leader's key)."""
    digest = hashlib.sha256(f"quaint.book_ticker:{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


TRY_BOOK_LOCKS = """
SELECT s FROM unnest($1::text[], $2::bigint[]) AS t(s, k) WHERE pg_try_advisory_lock(k)
"""


async def try_book_locks(conn: asyncpg.Connection, symbols: list[str], *, within_s: float) -> set[str]:
    """Take the book locks of ``symbols`` nobody holds; the symbols now held by this session.
    Call only for symbols not held yet: a lock taken twice must be released twice."""
    keys = [book_lock_key(s) for s in symbols]
    rows = await conn.fetch(TRY_BOOK_LOCKS, symbols, keys, timeout=within_s)
    return {str(r["s"]) for r in rows}


# Of a symbol's newest 20 ticks by receipt time (the previous owner's last writes, in the order it
# received them; the (symbol, time DESC) index reads only those), the highest update id: one
# query for 2,000 symbols reads 40,000 index entries.
BOOK_FENCES = """
SELECT s, (
    SELECT max(update_id) FROM (
        SELECT update_id FROM book_ticker WHERE symbol = s ORDER BY time DESC LIMIT 20
    ) newest
) AS fence
FROM unnest($1::text[]) AS s
"""


async def book_fences(conn: asyncpg.Connection, symbols: list[str], *, within_s: float) -> dict[str, int]:
    """Per symbol, the newest update id already stored (symbols with no tick left out). A
    feeder taking a symbol over writes only ticks past it: updates it received while the
    previous owner still wrote them are not stored twice."""
    rows = await conn.fetch(BOOK_FENCES, symbols, timeout=within_s)
    return {str(r["s"]): int(r["fence"]) for r in rows if r["fence"] is not None}
