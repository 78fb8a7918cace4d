"""Test support for the ``ha`` tests: services as real processes on one database."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from quaint.binance.models import MINUTE_MS
from quaint.service.settings import db_env_from_url
from tests.support.chaos import ServiceProcess
from tests.support.feeder import connect
from tests.support.services import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def db_env(db_url: str, **overrides: str) -> dict[str, str]:
    """The environment minus every setting of ours, plus the test database's DB_* variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "POSTGRES_", "GAP_", "FEEDER_", "BATCH_", "LEADER_", "SYMBOLS"))
    }
    env.update(db_env_from_url(db_url))
    env.update(LOG_FORMAT="json", USE_UVLOOP="false")
    env.update(overrides)
    return env


class HttpProcess:
    """A service process listening on its own free port."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path, port_variable: str):
        self.port = free_port()
        env = {**env, port_variable: str(self.port), port_variable.replace("_PORT", "_HOST"): "127.0.0.1"}
        self.proc = ServiceProcess(name, [sys.executable, "-m", module], env, log_dir / f"{name}.log", REPO)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get(self, path: str) -> tuple[int, Any]:
        """(status, JSON body); (0, None) while nothing answers."""
        try:
            async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
                raw = await resp.read()
                return resp.status, orjson.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()
        except (aiohttp.ClientError, OSError):
            return 0, None

    async def health(self) -> tuple[int, Any]:
        return await self.get("/health")

    async def wait_role(self, role: str, within: float = 60) -> None:
        async def has_role() -> bool:
            status, body = await self.health()
            return status == 200 and isinstance(body, dict) and body.get("role") == role

        await wait_for(has_role, within, f"{self.proc.name} healthy as {role}", interval=0.1)


def overlapping(answers: Iterable[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of klines answers that carried a common minute of one symbol."""
    listed = list(answers)
    pairs = []
    for i, (sym_i, lo_i, hi_i) in enumerate(listed):
        for j in range(i + 1, len(listed)):
            sym_j, lo_j, hi_j = listed[j]
            if sym_i == sym_j and lo_i <= hi_j and lo_j <= hi_i:
                pairs.append((i, j))
    return pairs


def minutes(start: int, end: int) -> int:
    return (end - start) // MINUTE_MS


# ---- book ticks of several feeders ----


async def duplicate_ticks(db_url: str) -> int:
    conn = await connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT symbol, update_id FROM book_ticker"
                " GROUP BY symbol, update_id HAVING count(*) > 1) d"
            )
        )
    finally:
        await conn.close()


async def ticks_since(db_url: str, symbol: str, update_id: int) -> int:
    conn = await connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM book_ticker WHERE symbol = $1 AND update_id > $2", symbol, update_id
            )
        )
    finally:
        await conn.close()


async def newest_update_id(db_url: str, symbol: str) -> int:
    conn = await connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT coalesce(max(update_id), 0) FROM book_ticker WHERE symbol = $1", symbol
            )
        )
    finally:
        await conn.close()


async def healthy(p: HttpProcess) -> bool:
    status, body = await p.health()
    return status == 200 and isinstance(body, dict) and body.get("status") == "healthy"


async def ticks_after(db_url: str, symbol: str, update_id: int) -> bool:
    return await ticks_since(db_url, symbol, update_id) > 0
