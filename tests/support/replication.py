"""A primary and a hot standby for the failover tests: two private clusters made by
``scripts/pg_cluster.sh`` (PostgreSQL + TimescaleDB), the standby a ``pg_basebackup -R`` of
the primary, streaming from it. Only where the harness runs its own clusters (the local
source); against an external or Docker server the caller skips.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from tests.support.database import _CLUSTER_SCRIPT, HarnessError, _cluster_parent_dir
from tests.support.waiting import wait_for

PG_BIN = Path(
    os.environ.get("QUAINT_PG_BIN", f"/usr/lib/postgresql/{os.environ.get('QUAINT_PG_VERSION', '15')}/bin")
)


@dataclass
class Node:
    datadir: str
    url: str = ""

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 5432)


@dataclass
class Pair:
    primary: Node
    standby: Node

    @property
    def hosts(self) -> str:
        """``DB_HOST`` naming both (DB_TARGET_SESSION_ATTRS=read-write picks the primary)."""
        return f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"

    async def stop_primary(self) -> None:
        await _run(str(_CLUSTER_SCRIPT), "stop", "--dir", self.primary.datadir)

    async def promote_standby(self) -> None:
        await _run(
            *_as_owner(self.standby.datadir),
            str(PG_BIN / "pg_ctl"),
            "promote",
            "-D",
            self.standby.datadir,
            "-w",
            "-t",
            "60",
        )

    async def replay_caught_up(self) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        primary = await asyncpg.connect(self.primary.url)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        finally:
            await primary.close()

        async def replayed() -> bool:
            conn = await asyncpg.connect(self.standby.url)
            try:
                return bool(await conn.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target))
            finally:
                await conn.close()

        await wait_for(replayed, 60, "the standby to replay the primary's WAL", interval=0.1)


def _as_owner(datadir: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


async def _run(*argv: str, within_s: float = 120) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(within_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise HarnessError(f"{argv[0]} {argv[1]} timed out after {within_s:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-15:])
        raise HarnessError(f"{' '.join(argv[:3])} failed (exit {proc.returncode}):\n{tail}")
    lines = out.decode().strip().splitlines()
    return lines[-1] if lines else ""


@asynccontextmanager
async def replicated_pair() -> AsyncIterator[Pair]:
    """Both clusters running, the standby streaming; both stopped and removed afterwards."""
    parent = _cluster_parent_dir()
    pair = Pair(
        Node(tempfile.mkdtemp(prefix="quaint-ha-primary-", dir=parent)),
        Node(tempfile.mkdtemp(prefix="quaint-ha-standby-", dir=parent)),
    )
    try:
        pair.primary.url = await _run(str(_CLUSTER_SCRIPT), "start", "--dir", pair.primary.datadir, "--fast")
        standby = pair.standby.datadir
        if os.geteuid() == 0:
            shutil.chown(standby, "postgres", "postgres")
        os.chmod(standby, 0o700)
        await _run(
            *_as_owner(standby),
            str(PG_BIN / "pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(pair.primary.port), "-U", "postgres",
            "-D", standby, "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        for leftover in ("port", "url", "server.log"):  # the primary's, copied with its files
            with suppress(FileNotFoundError):
                os.unlink(Path(standby) / leftover)
        pair.standby.url = await _run(str(_CLUSTER_SCRIPT), "start", "--dir", standby, "--fast")
        yield pair
    finally:
        for node in (pair.standby, pair.primary):
            if (Path(node.datadir) / "PG_VERSION").exists():
                with suppress(HarnessError):
                    await _run(str(_CLUSTER_SCRIPT), "stop", "--dir", node.datadir)
            shutil.rmtree(node.datadir, ignore_errors=True)
