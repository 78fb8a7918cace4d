"""Apply ``timescaledb/init.sql`` (the single source of truth) at start-up."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# The project's layout: <root>/quaint/store/schema.py and <root>/timescaledb/init.sql.
DEFAULT_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "timescaledb" / "init.sql"
# A fixed key: every process applying the schema serialises on it.
SCHEMA_LOCK_KEY = 0x51_55_41_49_4E_54  # "QUAINT"

INSTALL_HINT = (
    "TimescaleDB is not available on the database server. Install it: on Debian/Ubuntu run "
    "`sudo scripts/pg_cluster.sh install` (builds the Apache edition and pg_cron), or use the "
    "timescale/timescaledb Docker image (docker compose up timescaledb); the extension must also be "
    "listed in shared_preload_libraries."
)


class TimescaleUnavailable(RuntimeError):
    """The server has no TimescaleDB: the services cannot run."""


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    license: str  # "timescale" (Community) or "apache"
    automation: str  # "timescaledb" | "pg_cron" | "service"

    @property
    def compression(self) -> bool:
        return self.license == "timescale"


def schema_path() -> Path:
    return Path(os.environ.get("QUAINT_SCHEMA_FILE", DEFAULT_SCHEMA_PATH))


async def check_timescaledb(conn: asyncpg.Connection) -> None:
    row = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available,"
        " current_setting('shared_preload_libraries') AS preload"
    )
    assert row is not None
    if not row["available"] or "timescaledb" not in row["preload"]:
        raise TimescaleUnavailable(INSTALL_HINT)


async def apply_schema(conn: asyncpg.Connection, path: Path | None = None) -> SchemaInfo:
    """Run init.sql under a session advisory lock, so services starting together do
    not race on CREATE statements; then report the licence and the job scheduler."""
    await check_timescaledb(conn)
    sql = (path or schema_path()).read_text(encoding="utf-8")
    await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
    try:
        await conn.execute(sql)
    except Exception:
        # A connection lost mid-script takes its session lock with it, and unlocking on it
        # would only replace the error that says so (asyncpg: "cannot switch to state 12;
        # another operation (2) is in progress"): the caller must see the lost connection.
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
        raise
    await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
    row = await conn.fetchrow(
        "SELECT current_setting('timescaledb.license') AS license, quaint_automation_mode() AS automation"
    )
    assert row is not None
    return SchemaInfo(license=row["license"], automation=row["automation"])


async def set_retention(conn: asyncpg.Connection, key: str, interval: str) -> None:
    """Change one retention setting read by quaint_cleanup (e.g. book ticks, in days)."""
    status = await conn.execute(
        "UPDATE quaint_config SET value = ($2::text)::interval::text WHERE key = $1", key, interval
    )
    if status != "UPDATE 1":
        raise ValueError(f"unknown retention setting {key!r}")


def log_schema_info(info: SchemaInfo) -> None:
    """Say once, at start-up, what this licence means for the data."""
    if not info.compression:
        log.warning(
            "compression_unavailable",
            license=info.license,
            detail="TimescaleDB Apache edition: candles_1m stays uncompressed",
            automation=info.automation,
        )
    else:
        log.info("schema_ready", license=info.license, automation=info.automation)
