"""Chaos, two-feeder mode (issue 18): the run of :mod:`tests.test_chaos` with two feeders on the
same symbols and a primary + hot standby (``pg_basebackup``, streaming, both with TimescaleDB)
in place of one server. Every service is given both hosts (``DB_HOST=primary,standby``,
``DB_TARGET_SESSION_ATTRS=read-write``). The seeded schedule kills either feeder (the
``kill_feeder`` faults pick one, seeded) and holds one ``db_failover``: the primary stopped,
the standby promoted after a pause; ``pg_restart`` faults restart whichever is primary then.

The same checks as the one-feeder run: every minute of the window the exchange has is stored
exactly once and equals it (0 missing, 0 duplicate, 0 differing), each outage is one
``gap_unrecoverable`` row, no service exited on its own; and the gap handler recorded the
switch (a ``db_failover`` row on the new primary), and no book tick is stored twice.

Shorter than the one-feeder run (``QUAINT_CHAOS_HA_MINUTES``, 3000 simulated minutes, and
``QUAINT_CHAOS_HA_FAULTS``, 30 faults, at the same speed and seed), which keeps its own
runtime: this is a second test, marked ``chaos`` and ``ha``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from pathlib import Path

import asyncpg
import pytest

from quaint.binance.models import MINUTE_MS, Candle
from quaint.store.schema import apply_schema
from tests.support.chaos import ChaosConfig, Fault
from tests.support.database import PgServer
from tests.support.ha import duplicate_ticks
from tests.support.replication import Pair, replicated_pair
from tests.support.simulator import SimHandle
from tests.test_chaos import CFG, ROOT, SETTLE_S, ChaosRun, LogEntry, chaos_simulator, run_reported

ARTIFACTS_HA = ROOT / "test-artifacts" / "chaos-ha"


def ha_config(cfg: ChaosConfig, env: dict[str, str] | None = None) -> ChaosConfig:
    env = dict(os.environ) if env is None else env
    try:
        base = ChaosConfig.from_env(
            {
                "QUAINT_CHAOS_MINUTES": env.get("QUAINT_CHAOS_HA_MINUTES", "3000"),
                "QUAINT_CHAOS_FAULTS": env.get("QUAINT_CHAOS_HA_FAULTS", "30"),
            }
        )
    except ValueError as exc:
        raise ValueError(str(exc).replace("QUAINT_CHAOS_", "QUAINT_CHAOS_HA_")) from None
    return dataclasses.replace(cfg, minutes=base.minutes, faults=base.faults)


HA_CFG = ha_config(CFG)
# The one-feeder run's budget, plus the two clusters' start and base backup.
TIMEOUT_S = int(240 + 1.5 * HA_CFG.wall_s + SETTLE_S + 0.5 * HA_CFG.faults)


class HaChaosRun(ChaosRun):
    def __init__(self, cfg: ChaosConfig, sim: SimHandle, pair: Pair, work: Path) -> None:
        self.pair = pair
        super().__init__(cfg, sim, pair.primary.url, pair.primary.datadir, work)
        self.artifacts = ARTIFACTS_HA
        self.feeders.append(self.make_feeder("feeder2"))
        for svc in self.services:
            svc.env.update(DB_HOST=pair.hosts, DB_TARGET_SESSION_ATTRS="read-write")
        # In the middle half of the window, seeded apart from the plan (which stays the
        # one-feeder run's for the same seed).
        rng = random.Random(cfg.seed + 18)
        at = self.t0 + int(rng.uniform(0.25, 0.75) * cfg.minutes) * MINUTE_MS
        failover = Fault(at, "db_failover", {"down_s": round(rng.uniform(0.5, 3.0), 2)})
        self.plan = sorted([*self.plan, failover], key=lambda f: (f.at_ms, f.kind))
        self.failed_over = False
        self.tick_duplicates = self.ticks = -1

    def fire_other(self, f: Fault, entry: LogEntry) -> None:
        if f.kind == "db_failover":
            self.spawn(f, self.db_failover(f.params["down_s"], entry))
        else:
            super().fire_other(f, entry)

    async def db_failover(self, down_s: float, entry: LogEntry) -> None:
        async with self.pg_lock:
            self.pg_down = True
            try:
                await self.pair.stop_primary()
                await asyncio.sleep(down_s)  # the modelled time without a primary
                await self.pair.promote_standby()
            finally:
                self.pg_down = False
            # From here the standby is the primary: the checks read it, pg_restart restarts it.
            self.db_url, self.datadir = self.pair.standby.url, self.pair.standby.datadir
            self.failed_over = True
            entry.note = f"primary stopped, standby promoted after {down_s:g} s"

    async def check(self, truth: dict[str, list[Candle]], expected: dict[str, list[tuple[int, int]]]) -> None:
        await super().check(truth, expected)
        # One writer per symbol's book ticks (feeder.book_owner), through every kill and switch.
        self.tick_duplicates = await duplicate_ticks(self.db_url)
        conn = await asyncpg.connect(self.db_url, timeout=10)
        try:
            self.ticks = int(await conn.fetchval("SELECT count(*) FROM book_ticker"))
        finally:
            await conn.close()

    def report(self) -> str:
        return (
            super().report()
            + f"\nbook_ticker: {self.ticks} ticks, {self.tick_duplicates} (symbol, update_id) twice"
        )

    def failures(self) -> list[str]:
        out = super().failures()
        if self.tick_duplicates:
            out.append(f"{self.tick_duplicates} book ticks stored twice (symbol, update_id)")
        if not self.failed_over:
            out.append("the database failover did not happen")
        elif self.quality.get("db_failover", 0) < 1:
            out.append("no db_failover row on the new primary")
        if min(f.kills for f in self.feeders) < 1:
            out.append(f"not both feeders were killed: {[(f.name, f.kills) for f in self.feeders]}")
        return out


@pytest.mark.chaos
@pytest.mark.ha
@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
async def test_chaos_two_feeders_and_a_failover_keep_history_complete_and_exact(
    pg_server: PgServer, tmp_path: Path
) -> None:
    if pg_server.source != "local":
        pytest.skip(f"the PostgreSQL server is {pg_server.source}: no private clusters to replicate")
    async with replicated_pair() as pair:
        conn = await asyncpg.connect(pair.primary.url)
        try:
            await apply_schema(conn)
        finally:
            await conn.close()
        async with chaos_simulator(HA_CFG) as sim:
            run = HaChaosRun(HA_CFG, sim, pair, tmp_path)
            await run_reported(run)
    failures = run.failures()
    assert not failures, "\n".join(failures)


def test_ha_config_from_env() -> None:
    cfg = ha_config(ChaosConfig(), {"QUAINT_CHAOS_HA_MINUTES": "1000", "QUAINT_CHAOS_HA_FAULTS": "12"})
    assert (cfg.minutes, cfg.faults, cfg.speed) == (1000, 12, ChaosConfig().speed)
    assert (ha_config(ChaosConfig(), {}).minutes, ha_config(ChaosConfig(), {}).faults) == (3000, 30)
    with pytest.raises(ValueError, match="QUAINT_CHAOS_HA_MINUTES"):
        ha_config(ChaosConfig(), {"QUAINT_CHAOS_HA_MINUTES": "10"})
