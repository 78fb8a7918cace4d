"""Chaos: the whole system against a faulty exchange, a restarting database and killed services.

The simulator (in this process, 5 symbols) runs ``QUAINT_CHAOS_MINUTES`` (10,000) simulated minutes
at ``QUAINT_CHAOS_SPEED`` (6000: 100 simulated minutes per wall second) while the feeder and the gap
handler run as real processes (``python -m feeder``; the gap handler through
``python -m tests.support.chaos gap-handler``, which is ``python -m gap_handler`` on the simulator's
clock, see :mod:`tests.support.chaos`). ``QUAINT_CHAOS_FAULTS`` (60) faults, seeded by
``QUAINT_CHAOS_SEED``, hit at random simulated times: WebSocket drops, stalls, serverShutdown,
malformed/duplicated/reordered frames, feed gaps, exchange outages, PostgreSQL restarts (only on the
session's private cluster), SIGKILL of either service (restarted by the test), 429 bursts, 5xx
bursts and 418 bans.

At this speed the live stream cannot carry everything; the gap handler's backfill makes up for it.
Then the clock stops and the gap handler settles, and for every symbol:

* every minute of ``[t0, t0 + minutes)`` the exchange has (``/_sim/truth``) is stored exactly
  once and equals it; nothing else is stored in the window;
* every outage window is exactly one ``gap_unrecoverable`` row (first missing minute, last
  missing minute inclusive), and there is no other;
* neither service exited except by the test's own SIGKILLs (and the final SIGTERM, exit 0).

The fault log and the final counts are printed (``pytest -s`` or ``-rP`` shows them on success) and
written to ``test-artifacts/chaos/report.txt`` with the services' logs.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import pytest

from feeder.settings import FeederSettings
from gap_handler.settings import GapHandlerSettings
from quaint.binance.models import MINUTE_MS, Candle, ms_to_datetime
from quaint.store.candles import fetch_candles
from simulator.clock import LiveClock
from tests.support.chaos import (
    KIND_WEIGHTS,
    RANGE_KINDS,
    ChaosConfig,
    Fault,
    FileClock,
    ServiceProcess,
    allocate,
    plan_faults,
    write_clock,
)
from tests.support.database import PgServer
from tests.support.services import free_port
from tests.support.simulator import SimHandle, running_simulator

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "chaos"
CFG = ChaosConfig.from_env()

# The gap handler's clock runs this far behind the exchange's (see tests.support.chaos).
LAG_MS = 60_000
GAP_THRESHOLD_S = 70
# Frozen this far past the window's end: its last minute is due for the lagging gap handler.
END_MARGIN_MS = LAG_MS + GAP_THRESHOLD_S * 1000 + 3 * MINUTE_MS
BAN_S = 2.0
SETTLE_S = 90.0
# Start-up + the simulated window + settling and the checks, with room for a loaded machine.
TIMEOUT_S = int(150 + 1.5 * CFG.wall_s + SETTLE_S + 0.5 * CFG.faults)


def service_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without anything a service would read as its configuration."""
    names = {n.upper() for n in (*FeederSettings.model_fields, *GapHandlerSettings.model_fields)}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and not k.startswith("SIM_")}
    env.update(extra)
    return env


def db_env(db_url: str) -> dict[str, str]:
    p = urlsplit(db_url)
    return {
        "DB_HOST": p.hostname or "127.0.0.1",
        "DB_PORT": str(p.port or 5432),
        "DB_USER": unquote(p.username or "postgres"),
        "DB_PASSWORD": unquote(p.password or ""),
        "DB_NAME": unquote(p.path.lstrip("/")),
        "DB_CONNECT_TIMEOUT_S": "60",
    }


@dataclass
class LogEntry:
    wall_s: float  # since the clock started
    sim_ms: int
    fault: Fault
    note: str = ""


@dataclass
class SymbolCounts:
    truth: int = 0
    stored: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    duplicates: int = 0
    from_ws: int = 0
    from_rest: int = 0
    outages: int = 0
    unrecoverable_rows: int = 0
    unrecoverable_wrong: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


class ChaosRun:
    def __init__(
        self, cfg: ChaosConfig, sim: SimHandle, db_url: str, datadir: str | None, work: Path
    ) -> None:
        self.cfg = cfg
        self.sim = sim
        self.db_url = db_url
        self.datadir = datadir
        self.work = work
        self.rng = random.Random(cfg.seed)
        self.t0 = sim.clock.now_ms()
        self.t_end = self.t0 + cfg.minutes * MINUTE_MS
        self.plan = plan_faults(self.rng, self.t0, cfg.minutes, cfg.faults, cfg.symbols)
        self.log: list[LogEntry] = []
        self.errors: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.pg_lock = asyncio.Lock()
        self.pg_down = False
        self.clock_file = work / "sim_clock.json"
        self.started_wall = 0.0
        self.chaos_wall_s = 0.0
        self.settle_wall_s = 0.0
        self.exit_codes: dict[str, int | None] = {}
        self.counts: dict[str, SymbolCounts] = {}
        self.quality: dict[str, int] = {}
        self.unresolved = 0
        self.artifacts = ARTIFACTS
        self.feeder_kills = 0  # the two-feeder mode's kill_feeder faults take turns
        common = {"SYMBOLS": ",".join(cfg.symbols), "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
        self.common = common
        self.gh_port = free_port()
        self.gap_handler = ServiceProcess(
            "gap_handler",
            [sys.executable, "-m", "tests.support.chaos", "gap-handler"],
            service_env(
                {
                    **common,
                    **db_env(db_url),
                    "QUAINT_CHAOS_CLOCK_FILE": str(self.clock_file),
                    "BINANCE_REST_URL": sim.rest_url,
                    "GAP_HANDLER_HOST": "127.0.0.1",
                    "GAP_HANDLER_PORT": str(self.gh_port),
                    "HISTORY_DAYS": str(
                        math.ceil((cfg.minutes * MINUTE_MS + END_MARGIN_MS) / 86_400_000) + 1
                    ),
                    "RATE_LIMIT_REQUESTS_PER_SEC": "200",
                    "BACKFILL_CHECK_INTERVAL_S": "0.5",
                    "FULL_SCAN_INTERVAL_S": "10",
                    "GAP_DETECTION_THRESHOLD_S": str(GAP_THRESHOLD_S),
                    "RETRY_INITIAL_S": "0.1",
                    "RETRY_CAP_S": "1",
                    "REST_TIMEOUT_S": "5",
                    "SHUTDOWN_DEADLINE_S": "2",
                }
            ),
            work / "gap_handler.log",
            ROOT,
        )
        self.feeder = self.make_feeder("feeder")
        self.feeders = [self.feeder]

    def make_feeder(self, name: str) -> ServiceProcess:
        return ServiceProcess(
            name,
            [sys.executable, "-m", "feeder"],
            service_env(
                {
                    **self.common,
                    **db_env(self.db_url),
                    "BINANCE_WS_URL": self.sim.ws_url,
                    "FEEDER_HOST": "127.0.0.1",
                    "FEEDER_PORT": str(free_port()),
                    "WEBSOCKET_RECONNECT_INTERVAL_S": "0.1",
                    "WEBSOCKET_RECONNECT_MAX_S": "1",
                    "WS_OPEN_TIMEOUT_S": "5",
                    "STALE_STREAM_TIMEOUT_S": "2",
                    "GAP_DETECTION_THRESHOLD_S": str(GAP_THRESHOLD_S),
                    "BATCH_TIMEOUT_MS": "100",
                    "FEATURE_CACHE_INTERVAL_S": "2",
                    "DB_RETRY_INTERVAL_S": "0.2",
                    "DB_RETRY_MAX_S": "1",
                    "SHUTDOWN_FLUSH_TIMEOUT_S": "10",
                }
            ),
            self.work / f"{name}.log",
            ROOT,
        )

    @property
    def services(self) -> list[ServiceProcess]:
        return [*self.feeders, self.gap_handler]

    # ---- clock ------------------------------------------------------------------------------

    def set_speed(self, speed: float) -> None:
        self.sim.clock.set(speed=speed)
        state = self.sim.clock.state
        write_clock(
            self.clock_file,
            start_ms=state.start_ms,
            speed=state.speed,
            wall_origin=state.wall_origin,
            lag_ms=LAG_MS,
        )

    async def until_sim(self, ms: int) -> None:
        """The scheduler's wait: until the simulated clock reaches ``ms`` (a crashed fault
        action or a dead service does not stop it; they are reported at the end)."""
        while True:
            delay = self.sim.clock.wall_delay(ms)
            if delay <= 0:
                return
            await asyncio.sleep(min(delay, 0.05))

    # ---- the run ----------------------------------------------------------------------------

    async def execute(self) -> None:
        faults = self.sim.faults
        for f in self.plan:  # simulated minutes: known before any of them exists
            if f.kind == "outage":
                faults.add_outage(f.params["start"], f.params["end"], f.params["symbol"])
            elif f.kind == "feed_gap":
                faults.add_feed_gap(f.params["start"], f.params["end"], f.params["symbol"])
        self.set_speed(0)
        await self.gap_handler.start()
        await self.wait_gap_handler_idle(90, "the gap handler's history bootstrap")
        for feeder in self.feeders:
            await feeder.start()
        n = len(self.feeders)
        await self.wait(lambda: len(self.sim.state.hub.connections) >= n, 30, "the feeders' connections")
        self.started_wall = time.monotonic()
        self.set_speed(self.cfg.speed)
        for f in self.plan:
            await self.until_sim(f.at_ms)
            self.fire(f)
        await self.until_sim(self.t_end + END_MARGIN_MS)
        self.set_speed(0)
        self.chaos_wall_s = time.monotonic() - self.started_wall
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=60)
            for t in pending:
                t.cancel()
                self.errors.append(f"fault action still running after 60 s: {t.get_name()}")
        settle_from = time.monotonic()
        await self.settle()
        self.settle_wall_s = time.monotonic() - settle_from
        for svc in self.services:
            async with svc.lock:
                self.exit_codes[svc.name] = await svc.terminate(20)

    def fire(self, f: Fault) -> None:
        entry = LogEntry(time.monotonic() - self.started_wall, self.sim.clock.now_ms(), f)
        self.log.append(entry)
        sim, faults, p = self.sim, self.sim.faults, f.params
        match f.kind:
            case "outage" | "feed_gap":
                entry.note = "registered before the run"
            case "ws_drop":
                entry.note = f"{faults.drop_connections(p['mode'])} connection(s)"
            case "ws_stall":
                faults.stall(p["seconds"], sim.clock.wall())
            case "ws_shutdown":
                entry.note = f"{faults.server_shutdown(p['grace_s'])} connection(s)"
            case "ws_frames":
                faults.set_message_fault(p["fault"], {"count": p["count"]})
            case "rest_429":
                faults.add_rest_fault(429, p["count"], p["retry_after_s"], "/api/v3/klines")
            case "rest_5xx":
                faults.add_rest_fault(p["status"], p["count"], 1, "/api/v3/klines")
            case "rest_418":
                # Over the weight limit with ban_after=0: this address is banned for BAN_S.
                limiter = sim.state.limiter
                limiter.charge("127.0.0.1", limiter.limit + 1, int(sim.clock.wall() * 1000))
                entry.note = f"banned {BAN_S:g} s"
            case "pg_restart":
                if self.datadir is None:
                    entry.note = "SKIPPED: not the session's private cluster"
                else:
                    self.spawn(f, self.pg_restart(p["down_s"]))
            case "kill_feeder":
                victim = self.feeders[self.feeder_kills % len(self.feeders)]
                self.feeder_kills += 1
                entry.note = victim.name if len(self.feeders) > 1 else ""
                self.spawn(f, self.kill(victim, p["restart_after_s"], entry))
            case "kill_gap_handler":
                self.spawn(f, self.kill(self.gap_handler, p["restart_after_s"], entry))
            case _:
                self.fire_other(f, entry)

    def fire_other(self, f: Fault, entry: LogEntry) -> None:
        """A kind only a subclass plans (the two-feeder mode's database failover)."""
        raise AssertionError(f"unplanned fault kind {f.kind}")

    def spawn(self, f: Fault, action: Any) -> None:
        async def guarded() -> None:
            try:
                await action
            except Exception as exc:  # reported with the invariants, not lost in a task
                self.errors.append(f"{f.kind} at {f.at_ms}: {type(exc).__name__}: {exc}")

        self.tasks.append(asyncio.create_task(guarded(), name=f"{f.kind}@{f.at_ms}"))

    async def kill(self, svc: ServiceProcess, restart_after_s: float, entry: LogEntry) -> None:
        async with svc.lock:
            if not svc.running:
                entry.note = f"{entry.note} was not running".strip()
            await svc.kill()
            await asyncio.sleep(restart_after_s)  # the modelled downtime, not a synchronisation
            await svc.start()

    async def pg_restart(self, down_s: float) -> None:
        assert self.datadir is not None
        async with self.pg_lock:
            self.pg_down = True
            try:
                await cluster("stop", self.datadir)
                await asyncio.sleep(down_s)  # the modelled outage, not a synchronisation
            finally:
                await cluster("start", self.datadir)
                self.pg_down = False

    # ---- waiting ----------------------------------------------------------------------------

    async def wait(self, predicate: Any, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.05)

    async def gap_handler_health(self) -> dict[str, Any] | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
                http.get(f"http://127.0.0.1:{self.gh_port}/health") as resp,
            ):
                body: dict[str, Any] = await resp.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def gap_handler_idle(self) -> bool:
        h = await self.gap_handler_health()
        return (
            h is not None
            and h.get("last_scan_at") is not None
            and h.get("database_status") == "connected"
            and h["backfills_queued"] == 0
            and h["backfills_in_flight"] == 0
        )

    async def wait_gap_handler_idle(self, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not await self.gap_handler_idle():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {within} s waiting for {what}:\n{self.gap_handler.tail()}"
                )
            await asyncio.sleep(0.2)

    async def settle(self) -> None:
        """Until the window is complete and the gap handler idle, or ``SETTLE_S`` passes (then
        the checks report what is still wrong)."""
        truth = {s: self.sim.truth(s, self.t0, self.t_end) for s in self.cfg.symbols}
        expected = self.expected_outages()
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            if await self.gap_handler_idle() and await self.window_counts_match(truth, expected):
                break
            await asyncio.sleep(0.5)
        await self.check(truth, expected)

    async def window_counts_match(
        self, truth: dict[str, list[Candle]], expected: dict[str, list[tuple[int, int]]]
    ) -> bool:
        try:
            conn = await asyncpg.connect(self.db_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            for sym in self.cfg.symbols:
                n = await conn.fetchval(
                    "SELECT count(*) FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3",
                    sym,
                    ms_to_datetime(self.t0),
                    ms_to_datetime(self.t_end),
                )
                rows = await conn.fetchval(
                    "SELECT count(*) FROM data_quality_logs WHERE event_type = 'gap_unrecoverable'"
                    " AND symbol = $1",
                    sym,
                )
                if n != len(truth[sym]) or rows != len(expected[sym]):
                    return False
        finally:
            await conn.close()
        return True

    def expected_outages(self) -> dict[str, list[tuple[int, int]]]:
        """Per symbol, the outage windows as (first missing minute, last missing minute)."""
        out: dict[str, list[tuple[int, int]]] = {s: [] for s in self.cfg.symbols}
        for f in self.plan:
            if f.kind == "outage":
                for sym in [f.params["symbol"]] if f.params["symbol"] else self.cfg.symbols:
                    out[sym].append((f.params["start"], f.params["end"] - MINUTE_MS))
        return {s: sorted(v) for s, v in out.items()}

    # ---- the checks -------------------------------------------------------------------------

    async def check(self, truth: dict[str, list[Candle]], expected: dict[str, list[tuple[int, int]]]) -> None:
        conn = await asyncpg.connect(self.db_url, timeout=10)
        try:
            for sym in self.cfg.symbols:
                c = self.counts[sym] = SymbolCounts(truth=len(truth[sym]), outages=len(expected[sym]))
                stored = await fetch_candles(conn, sym, self.t0, self.t_end)
                c.stored = len(stored)
                by_time = Counter(x.open_time for x in stored)
                c.duplicates = sum(n - 1 for n in by_time.values())
                want = {x.open_time: x for x in truth[sym]}
                got = {x.open_time: x for x in stored}
                missing = sorted(want.keys() - got.keys())
                extra = sorted(got.keys() - want.keys())
                differing = sorted(t for t in want.keys() & got.keys() if want[t] != got[t])
                c.missing, c.extra, c.differing = len(missing), len(extra), len(differing)
                for label, times in (("missing", missing), ("extra", extra), ("differs", differing)):
                    c.examples += [f"{label} {ms_to_datetime(t).isoformat()}" for t in times[:3]]
                sources = await conn.fetch(
                    "SELECT source, count(*) AS n FROM candles_1m WHERE symbol = $1 AND time >= $2"
                    " AND time < $3 GROUP BY source",
                    sym,
                    ms_to_datetime(self.t0),
                    ms_to_datetime(self.t_end),
                )
                by_source = {r["source"]: r["n"] for r in sources}
                c.from_ws, c.from_rest = by_source.get("ws", 0), by_source.get("rest", 0)
                rows = await conn.fetch(
                    "SELECT gap_start, gap_end FROM data_quality_logs"
                    " WHERE event_type = 'gap_unrecoverable' AND symbol = $1 ORDER BY gap_start",
                    sym,
                )
                c.unrecoverable_rows = len(rows)
                got_windows = Counter((to_ms(r["gap_start"]), to_ms(r["gap_end"])) for r in rows)
                want_windows = Counter(expected[sym])
                for (a, b), n in sorted((got_windows - want_windows).items()):
                    c.unrecoverable_wrong.append(f"unexpected row {iso(a)}..{iso(b)} x{n}")
                for (a, b), n in sorted((want_windows - got_windows).items()):
                    c.unrecoverable_wrong.append(f"no row for outage {iso(a)}..{iso(b)} (x{n})")
            dupes = await conn.fetchval("SELECT count(*) - count(DISTINCT (symbol, time)) FROM candles_1m")
            if dupes:
                self.errors.append(f"{dupes} duplicate (symbol, time) rows in candles_1m")
            for r in await conn.fetch("SELECT event_type, count(*) AS n FROM data_quality_logs GROUP BY 1"):
                self.quality[r["event_type"]] = r["n"]
            # Every gap the feeder reported is, by now, stored or a proven outage: resolved.
            self.unresolved = await conn.fetchval(
                "SELECT count(*) FROM data_quality_logs"
                " WHERE event_type = 'gap_detected' AND NOT resolved AND gap_end < $1",
                ms_to_datetime(self.t_end),
            )
        finally:
            await conn.close()

    # ---- the report -------------------------------------------------------------------------

    def report(self) -> str:
        cfg, lines = self.cfg, []
        kinds = Counter(f.kind for f in self.plan)
        skipped = sum(1 for e in self.log if e.note.startswith("SKIPPED"))
        lines.append(
            f"chaos run: seed={cfg.seed} symbols={len(cfg.symbols)} minutes={cfg.minutes} speed={cfg.speed:g}"
            f" window={iso(self.t0)}..{iso(self.t_end)} (exclusive)"
        )
        lines.append(
            f"wall: chaos {self.chaos_wall_s:.1f} s, settle {self.settle_wall_s:.1f} s;"
            f" faults planned {len(self.plan)}, injected {len(self.log) - skipped}, skipped {skipped}"
        )
        lines.append("fault mix: " + ", ".join(f"{k}={n}" for k, n in sorted(kinds.items())))
        lines.append(
            "fault log (wall s since the clock started, simulated minute of the window, kind, params):"
        )
        for e in self.log:
            minute = (e.sim_ms - self.t0) / MINUTE_MS
            at = f"{e.wall_s:8.2f}s" if e.fault.kind not in RANGE_KINDS else "  (ahead)"
            note = f"  [{e.note}]" if e.note else ""
            lines.append(
                f"  {at} +{minute:8.1f}min {iso(e.sim_ms)}  {e.fault.kind:<16} {e.fault.describe()}{note}"
            )
        lines.append(
            "per symbol: truth stored missing extra differing duplicates | ws rest"
            " | outages gap_unrecoverable"
        )
        for sym, c in self.counts.items():
            lines.append(
                f"  {sym:<8} {c.truth:6d} {c.stored:6d} {c.missing:6d} {c.extra:5d} {c.differing:6d}"
                f" {c.duplicates:6d} | {c.from_ws:6d} {c.from_rest:6d}"
                f" | {c.outages:3d} {c.unrecoverable_rows:3d}"
            )
            lines += [f"      {x}" for x in (*c.examples, *c.unrecoverable_wrong)]
        lines.append(
            "data_quality_logs: "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.quality.items()))
            + f"; gap_detected left unresolved: {self.unresolved}"
        )
        for svc in self.services:
            lines.append(
                f"{svc.name}: starts={svc.starts} test_kills={svc.kills}"
                f" unexpected_exits={len(svc.unexpected)} exit_on_sigterm={self.exit_codes.get(svc.name)}"
            )
        gh = self.gap_handler.log_events()
        fd = sum((Counter(x.log_events()) for x in self.feeders), Counter[str]())
        lines.append(
            "gap_handler saw: "
            + ", ".join(
                f"{k}={gh.get(k, 0)}"
                for k in (
                    "rest_rate_limited",
                    "rest_ip_banned",
                    "rest_retry",
                    "backfill_gave_up",
                    "scan_failed",
                    "backfill_db_lost",
                    "gap_unrecoverable",
                    "backfill_checkpointed",
                )
            )
        )
        lines.append(
            "feeder log events: "
            + ", ".join(f"{k}={n}" for k, n in sorted(fd.items(), key=lambda kv: -kv[1])[:14])
        )
        stats = self.sim.stats.snapshot(self.sim.clock.wall())
        lines.append(
            f"simulator: REST by status {stats['requests_by_status']}, ws connections"
            f" {stats['ws_connections_total']}, closed {stats['ws_closed_by_reason']}"
        )
        if self.errors:
            lines.append("errors: " + "; ".join(self.errors))
        return "\n".join(lines)

    def save_artifacts(self, text: str) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (self.artifacts / "report.txt").write_text(text + "\n")
        for svc in self.services:
            if svc.log_path.exists():
                shutil.copyfile(svc.log_path, self.artifacts / svc.log_path.name)

    def failures(self) -> list[str]:
        out = list(self.errors)
        for sym, c in self.counts.items():
            if c.missing or c.extra or c.differing or c.duplicates:
                out.append(
                    f"{sym}: {c.missing} missing, {c.extra} extra, {c.differing} differing,"
                    f" {c.duplicates} duplicated: {c.examples}"
                )
            if c.unrecoverable_wrong:
                out.append(f"{sym}: gap_unrecoverable rows: {c.unrecoverable_wrong}")
        if self.unresolved:
            out.append(f"{self.unresolved} gap_detected row(s) in the window not resolved")
        if set(self.counts) != set(self.cfg.symbols):
            out.append("the final checks did not run")
        for svc in self.services:
            out += [f"{svc.name} exited on its own: {u}" for u in svc.unexpected]
            if self.exit_codes.get(svc.name) != 0:
                out.append(f"{svc.name} exit code on SIGTERM: {self.exit_codes.get(svc.name)}\n{svc.tail()}")
        injected = [e for e in self.log if not e.note.startswith("SKIPPED")]
        if len(self.log) != len(self.plan):
            out.append(f"only {len(self.log)} of {len(self.plan)} planned faults fired")
        if self.cfg.faults >= 50 and len(injected) < 50:
            out.append(f"only {len(injected)} faults injected (at least 50 wanted)")
        return out

    async def cleanup(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for svc in self.services:
            await svc.close()
        if self.datadir is not None and self.pg_down:
            await cluster("start", self.datadir)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


async def cluster(command: str, datadir: str) -> None:
    """``scripts/pg_cluster.sh stop|start --dir DATADIR`` (start with the harness's ``--fast``)."""
    args = [str(ROOT / "scripts" / "pg_cluster.sh"), command, "--dir", datadir]
    if command == "start":
        args.append("--fast")
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.fixture
async def datadir(pg_server: PgServer) -> str | None:
    """The private cluster's data directory, or None (PostgreSQL restarts are then skipped)."""
    if pg_server.source != "local":
        print(
            f"NOTE: the PostgreSQL server is {pg_server.source}, not the session's private cluster:"
            " the pg_restart faults are skipped"
        )
        return None
    conn = await asyncpg.connect(pg_server.url)
    try:
        return str(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
async def test_chaos_history_is_complete_and_exact(db_url: str, datadir: str | None, tmp_path: Path) -> None:
    async with chaos_simulator(CFG) as sim:
        run = ChaosRun(CFG, sim, db_url, datadir, tmp_path)
        await run_reported(run)
    failures = run.failures()
    assert not failures, "\n".join(failures)


def chaos_simulator(cfg: ChaosConfig) -> AbstractAsyncContextManager[SimHandle]:
    """The run's simulator, its clock stopped at the start minute: the window ends a day
    before real now. No rate limit or ban of its own (the faults inject those)."""
    now = int(time.time() * 1000)
    t0 = now - now % MINUTE_MS - cfg.minutes * MINUTE_MS - END_MARGIN_MS - 86_400_000
    return running_simulator(
        start=t0 - t0 % MINUTE_MS,
        speed=0,
        symbols=list(cfg.symbols),
        seed=cfg.seed,
        weight_limit=10_000_000,
        weight_window_s=1,
        ban_after=0,
        ban_s=BAN_S,
    )


async def run_reported(run: ChaosRun) -> None:
    """Execute ``run`` and, whatever happens, stop its services and print and keep its report."""
    try:
        await run.execute()
    finally:
        await run.cleanup()
        text = run.report()
        print(text)
        run.save_artifacts(text)


# ---- the helpers, without the run ------------------------------------------------------------


def test_fault_plan_is_seeded_and_keeps_outages_apart() -> None:
    t0 = 1_763_985_600_000
    plan = plan_faults(random.Random(5), t0, 10_000, 60, CFG.symbols)
    assert plan == plan_faults(random.Random(5), t0, 10_000, 60, CFG.symbols)
    assert plan != plan_faults(random.Random(6), t0, 10_000, 60, CFG.symbols)
    assert Counter(f.kind for f in plan) == allocate(60, KIND_WEIGHTS)
    assert min(allocate(60, KIND_WEIGHTS).values()) >= 1 and sum(allocate(7, KIND_WEIGHTS).values()) == 7
    assert [f.at_ms for f in plan] == sorted(f.at_ms for f in plan)
    assert all(t0 <= f.at_ms < t0 + 10_000 * MINUTE_MS for f in plan)
    outages = sorted((f.params["start"], f.params["end"]) for f in plan if f.kind == "outage")
    for (_, end), (start, _) in itertools.pairwise(outages):
        assert start >= end + 2 * MINUTE_MS
    for f in plan:
        if f.kind in RANGE_KINDS:
            assert f.params["end"] <= t0 + (10_000 - 60) * MINUTE_MS


def test_file_clock_is_the_simulator_clock_minus_the_lag(tmp_path: Path) -> None:
    clock = LiveClock(1_763_985_600_000, 6000.0)
    path = tmp_path / "clock.json"

    def publish() -> None:
        st = clock.state
        write_clock(path, start_ms=st.start_ms, speed=st.speed, wall_origin=st.wall_origin, lag_ms=LAG_MS)

    publish()
    shared = FileClock(path)
    for speed in (6000.0, 0.0, 60.0):
        clock.set(speed=speed)
        publish()
        before = clock.now_ms()
        seen = shared.now_ms()
        after = clock.now_ms()
        assert before - LAG_MS <= seen <= after - LAG_MS


def test_chaos_config_from_env() -> None:
    env = {"QUAINT_CHAOS_MINUTES": "20000", "QUAINT_CHAOS_FAULTS": "200", "QUAINT_CHAOS_SEED": "3"}
    cfg = ChaosConfig.from_env({**env, "QUAINT_CHAOS_SYMBOLS": "btcusdt, ethusdt"})
    assert (cfg.minutes, cfg.faults, cfg.seed, cfg.symbols) == (20_000, 200, 3, ("BTCUSDT", "ETHUSDT"))
    assert ChaosConfig.from_env({}) == ChaosConfig()
    with pytest.raises(ValueError, match="QUAINT_CHAOS_SPEED"):
        ChaosConfig.from_env({"QUAINT_CHAOS_SPEED": "fast"})
