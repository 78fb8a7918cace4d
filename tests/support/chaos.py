"""Support for the chaos run (``tests/test_chaos.py``): configuration, a seeded fault
plan, supervised service processes, and the simulator's clock shared with a gap
handler process.

Why a shared clock. The gap handler decides what is due, and which rows of a REST
answer are final, on the exchange's time: its own clock (``now_ms``) plus an offset
sampled from ``GET /api/v3/time`` (:mod:`gap_handler.core.exchange_clock`). That only holds
while its clock advances at the exchange's rate, and the accelerated simulator's clock
runs ``speed`` times faster than the wall clock. Its clock is
``start_ms + (monotonic - wall_origin) * 1000 * speed``; ``CLOCK_MONOTONIC`` is the
same for every process on the machine, so the test writes those three numbers to a
file whenever it changes the clock, and ``python -m tests.support.chaos gap-handler``
runs the real service (``gap_handler.__main__.main``, which takes its clock as a
parameter) with a ``now_ms`` computed from the file, ``lag_ms`` behind the exchange
(the sampled offset takes the lag back out; it is there to show a skewed host clock
does no harm).

Every random choice comes from one ``random.Random(seed)``: the same seed gives the same
plan (kinds, simulated times, parameters).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import random
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from gap_handler.__main__ import main as gap_handler_main
from quaint.binance.models import MINUTE_MS

# ---- configuration -------------------------------------------------------------------------

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")


@dataclass(frozen=True)
class ChaosConfig:
    """What to run; ``from_env`` reads ``QUAINT_CHAOS_*`` (defaults: the CI run)."""

    minutes: int = 10_000  # simulated minutes checked: [t0, t0 + minutes)
    faults: int = 60  # faults planned (PostgreSQL restarts are skipped off a local cluster)
    seed: int = 20_251_124
    speed: float = 6_000.0  # simulated seconds per wall second
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChaosConfig:
        env = os.environ if env is None else env
        d = cls()

        def num(name: str, default: float, lo: float, hi: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name}: not a number: {raw!r}") from None
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name}: must be within [{lo:g}, {hi:g}], got {raw!r}")
            return value

        raw_symbols = env.get("QUAINT_CHAOS_SYMBOLS", "").strip()
        symbols = tuple(s.strip().upper() for s in raw_symbols.split(",") if s.strip()) or d.symbols
        return cls(
            minutes=int(num("QUAINT_CHAOS_MINUTES", d.minutes, 500, 500_000)),
            faults=int(num("QUAINT_CHAOS_FAULTS", d.faults, 0, 100_000)),
            seed=int(num("QUAINT_CHAOS_SEED", d.seed, 0, 2**63 - 1)),
            speed=num("QUAINT_CHAOS_SPEED", d.speed, 60, 100_000),
            symbols=symbols,
        )

    @property
    def wall_s(self) -> float:
        """Wall seconds the simulated window takes at ``speed``."""
        return self.minutes * 60.0 / self.speed


# ---- the fault plan ------------------------------------------------------------------------

# Relative frequency of each kind; every kind gets at least one fault when the plan has
# room for all of them.
KIND_WEIGHTS: dict[str, int] = {
    "ws_drop": 7,  # every WebSocket reset (abort) or closed (1001)
    "ws_stall": 5,  # the stream stops sending for a few wall seconds
    "ws_shutdown": 2,  # serverShutdown event, then the close
    "ws_frames": 3,  # a burst of malformed, duplicated or reordered frames
    "feed_gap": 5,  # minutes never streamed (REST has them)
    "outage": 5,  # minutes the exchange never has (neither stream nor REST)
    "pg_restart": 3,  # PostgreSQL stopped (fast) and started again
    "kill_feeder": 5,  # SIGKILL, restarted by the test
    "kill_gap_handler": 5,  # SIGKILL, restarted by the test
    "rest_429": 6,  # a burst of 429 + Retry-After
    "rest_5xx": 6,  # a burst of 500/502/503/504
    "rest_418": 2,  # an IP ban (418 + Retry-After) until it expires
}
RANGE_KINDS = frozenset({"feed_gap", "outage"})  # registered up front: they name simulated minutes


@dataclass(frozen=True)
class Fault:
    at_ms: int  # simulated time it fires (range faults: their first minute)
    kind: str
    params: dict[str, Any]

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())


def allocate(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` over the kinds in proportion to ``weights`` (largest remainder),
    at least one each when ``total`` allows."""
    kinds = list(weights)
    if total <= 0:
        return dict.fromkeys(kinds, 0)
    base = 1 if total >= len(kinds) else 0
    rest = total - base * len(kinds)
    weight_sum = sum(weights.values())
    shares = {k: rest * weights[k] / weight_sum for k in kinds}
    counts = {k: base + int(shares[k]) for k in kinds}
    left = total - sum(counts.values())
    for k in sorted(kinds, key=lambda k: (-(shares[k] - int(shares[k])), kinds.index(k)))[:left]:
        counts[k] += 1
    return counts


def plan_faults(rng: random.Random, t0: int, minutes: int, total: int, symbols: Sequence[str]) -> list[Fault]:
    """Seeded faults over the simulated window ``[t0, t0 + minutes)``, sorted by time.

    Outages never touch each other (two minutes apart at least, whatever their symbols),
    so each one must come back as exactly one ``gap_unrecoverable`` row per symbol it
    hits; all range faults end well before the window does, so later minutes exist to
    prove them."""
    counts = allocate(total, KIND_WEIGHTS)
    faults: list[Fault] = []
    lo, hi = t0 + 10 * MINUTE_MS, t0 + (minutes - 150) * MINUTE_MS
    outages: list[tuple[int, int]] = []
    for kind, n in counts.items():
        for _ in range(n):
            if kind in RANGE_KINDS:
                faults.append(_range_fault(rng, kind, lo, hi, symbols, outages))
            else:
                at = lo + int(rng.random() * (hi - lo))
                faults.append(Fault(at, kind, _params(rng, kind)))
    faults.sort(key=lambda f: (f.at_ms, f.kind))
    return faults


def _range_fault(
    rng: random.Random, kind: str, lo: int, hi: int, symbols: Sequence[str], outages: list[tuple[int, int]]
) -> Fault:
    symbol = None if rng.random() < 0.4 else rng.choice(list(symbols))
    longest = 30 if kind == "outage" else 90
    for _ in range(10_000):
        length = rng.randint(1, longest)
        start = lo + rng.randrange((hi - lo) // MINUTE_MS - longest) * MINUTE_MS
        end = start + length * MINUTE_MS
        if kind == "outage":
            if any(start < b + 2 * MINUTE_MS and a < end + 2 * MINUTE_MS for a, b in outages):
                continue
            outages.append((start, end))
        return Fault(start, kind, {"start": start, "end": end, "minutes": length, "symbol": symbol})
    raise ValueError("no room left for another outage: use fewer faults or more minutes")


def _params(rng: random.Random, kind: str) -> dict[str, Any]:
    match kind:
        case "ws_drop":
            return {"mode": rng.choice(["abort", "close"])}
        case "ws_stall":
            return {"seconds": round(rng.uniform(0.3, 3.0), 2)}
        case "ws_shutdown":
            return {"grace_s": round(rng.uniform(0.1, 1.0), 2)}
        case "ws_frames":
            return {"fault": rng.choice(["malformed", "duplicate", "reorder"]), "count": rng.randint(5, 300)}
        case "pg_restart":
            return {"down_s": round(rng.uniform(0.2, 2.5), 2)}
        case "kill_feeder" | "kill_gap_handler":
            return {"restart_after_s": round(rng.uniform(0.0, 1.5), 2)}
        case "rest_429":
            return {"count": rng.randint(2, 10), "retry_after_s": 1}
        case "rest_5xx":
            return {"status": rng.choice([500, 502, 503, 504]), "count": rng.randint(1, 12)}
        case "rest_418":
            return {}
    raise ValueError(f"unknown fault kind {kind!r}")


# ---- the shared simulated clock -----------------------------------------------------------------


def write_clock(path: Path, *, start_ms: int, speed: float, wall_origin: float, lag_ms: int) -> None:
    """Publish the simulator's clock mapping (atomically: readers see old or new)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(
        orjson.dumps({"start_ms": start_ms, "speed": speed, "wall_origin": wall_origin, "lag_ms": lag_ms})
    )
    os.replace(tmp, path)


class FileClock:
    """``now_ms`` of the simulator, from the mapping in ``path`` (re-read when it changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._mapping: dict[str, Any] = {}
        self._load()

    def _load(self) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            self._mapping = orjson.loads(self.path.read_bytes())
            self._stamp = stamp

    def now_ms(self) -> int:
        self._load()
        m = self._mapping
        elapsed = (time.monotonic() - float(m["wall_origin"])) * 1000.0 * float(m["speed"])
        return int(m["start_ms"]) + math.floor(elapsed) - int(m["lag_ms"])


def run_gap_handler(clock_file: Path) -> int:
    """``python -m gap_handler`` exactly, but with ``now_ms`` read from ``clock_file``."""
    return gap_handler_main([], now_ms=FileClock(clock_file).now_ms)


# ---- supervised service processes -------------------------------------------------------------


_PR_SET_PDEATHSIG = 1
# Resolved here, in the parent: between fork and exec the child only calls it (no dlopen,
# no lock another thread of the parent might have held at fork time).
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the test process dies without cleaning up (a hard timeout), so do its services.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


@dataclass
class ServiceProcess:
    """A service run as a real process; exits the test did not cause are recorded and the
    service is started again (at most ``max_unexpected`` times, so a crash loop ends)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    max_unexpected: int = 5
    starts: int = 0
    kills: int = 0
    terminations: int = 0
    unexpected: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    proc: asyncio.subprocess.Process | None = None
    _expected_exit: bool = False
    _watcher: asyncio.Task[None] | None = None
    _log: IO[bytes] | None = None

    def __post_init__(self) -> None:
        self._log = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in close()

    async def start(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            raise RuntimeError(f"{self.name} is already running")
        if self._log is None:
            raise RuntimeError(f"{self.name} is closed")
        self.starts += 1
        self._log.write(f"==== start {self.starts} at monotonic {time.monotonic():.3f}\n".encode())
        self._expected_exit = False
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self._watcher = asyncio.create_task(self._watch(self.proc), name=f"watch-{self.name}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._expected_exit or proc is not self.proc:
            return
        self.unexpected.append(f"exit code {code} (start {self.starts}); log tail:\n{self.tail()}")
        if len(self.unexpected) <= self.max_unexpected:
            await self.start()

    async def kill(self) -> None:
        """SIGKILL and reap (the test's own fault: not an unexpected exit)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self._expected_exit = True
        self.kills += 1
        proc.kill()
        await proc.wait()

    async def terminate(self, within: float) -> int | None:
        """SIGTERM; the exit code, or None when it had to be killed after ``within`` s."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return proc.returncode if proc is not None else None
        self._expected_exit = True
        self.terminations += 1
        proc.terminate()
        try:
            async with asyncio.timeout(within):
                return await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None

    async def close(self) -> None:
        """Kill whatever still runs and release the log (cleanup: never raises)."""
        self._expected_exit = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 25) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def log_events(self) -> dict[str, int]:
        """How often each structured ``event`` appears in the log (all starts)."""
        counts: dict[str, int] = {}
        try:
            raw = self.log_path.read_bytes()
        except OSError:
            return counts
        for line in raw.splitlines():
            if not line.startswith(b"{"):
                continue
            try:
                event = orjson.loads(line).get("event")
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, str):
                counts[event] = counts.get(event, 0) + 1
        return counts


def main(argv: Sequence[str]) -> int:
    if list(argv[:1]) == ["gap-handler"] and len(argv) == 1:
        clock_file = os.environ.get("QUAINT_CHAOS_CLOCK_FILE")
        if not clock_file:
            print("QUAINT_CHAOS_CLOCK_FILE is not set", file=sys.stderr)
            return 2
        return run_gap_handler(Path(clock_file))
    print("usage: python -m tests.support.chaos gap-handler   (QUAINT_CHAOS_CLOCK_FILE=...)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
