"""Real processes for the benchmarks: the simulator, the feeder and the gap handler as
``python -m ...`` subprocesses on free ports, their /metrics, and the database's
processes (for CPU/RSS). Every process started here is terminated (then killed) on
the way out, whatever happened."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg

from bench.common import ROOT, ProcSample, cpu_percent, sample_process
from quaint.service.settings import db_env_from_url
from quaint.store.schema import apply_schema

PYTHON = sys.executable
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes], what: str) -> None:
    """Poll ``url`` until it answers (any status); fail early if ``proc`` died."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering {url}")
        with contextlib.suppress(OSError):
            http_get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not answer {url} within {deadline_s:g} s")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sample(self) -> ProcSample:
        return sample_process(self.proc.pid)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(http_get(self.base + "/metrics")[1])

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def spawn(name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str) -> Iterator[Service]:
    """Start ``argv``, wait until ``ready_path`` answers on ``port``; always stop it after."""
    log_file: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in finally)
        prefix=f"quaint-bench-{name}-", suffix=".log", delete=False
    )
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    service = Service(name, proc, port, Path(log_file.name))
    try:
        try:
            wait_http(f"{service.base}{ready_path}", 60, proc, name)
        except (RuntimeError, TimeoutError):
            print(f"--- {name} log (last lines) ---\n{service.log_tail()}", file=sys.stderr)
            raise
        yield service
    finally:
        stop(proc)
        log_file.close()
        if os.environ.get("QUAINT_BENCH_KEEP_LOGS") != "1":
            Path(log_file.name).unlink(missing_ok=True)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> int | None:
    """SIGTERM (the services flush and exit 0), then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def base_env() -> dict[str, str]:
    # No stray settings from the caller's shell leak into a measured service.
    prefixes = (
        *("DB_", "FEEDER_", "BATCH_", "BOOK_TICKER_", "SIM_", "GAP_HANDLER_", "ARCHIVE_"),
        *("USE_UVLOOP", "SYMBOLS"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(LOG_FORMAT="json", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    return env


def db_env(db_url: str) -> dict[str, str]:
    """The ``DB_*`` variables of a database URL (user and password decoded)."""
    return db_env_from_url(db_url)


@contextlib.contextmanager
def simulator(symbols: list[str], *args: str) -> Iterator[Service]:
    port = free_port()
    argv = [PYTHON, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--symbols", ",".join(symbols), "--log-level", "warning", *args]
    with spawn("simulator", argv, base_env(), port, "/api/v3/ping") as sim:
        yield sim


def _service(
    module: str, db_url: str, sim: Service, symbols: list[str], settings: dict[str, str]
) -> contextlib.AbstractContextManager[Service]:
    """``python -m <module>`` against ``sim`` on a free port; ``settings`` are extra env vars.
    Each service reads its own ``<MODULE>_HOST``/``<MODULE>_PORT``."""
    port = free_port()
    prefix = module.upper()
    env = {**base_env(), **db_env(db_url), "SYMBOLS": ",".join(symbols)}
    env.update(BINANCE_WS_URL=f"ws://127.0.0.1:{sim.port}", BINANCE_REST_URL=sim.base)
    env.update({f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": str(port), **settings})
    return spawn(module, [PYTHON, "-m", module], env, port, "/health")


def feeder(
    db_url: str, sim: Service, symbols: list[str], **settings: str
) -> contextlib.AbstractContextManager[Service]:
    return _service("feeder", db_url, sim, symbols, settings)


def gap_handler(
    db_url: str, sim: Service, symbols: list[str], **settings: str
) -> contextlib.AbstractContextManager[Service]:
    # REST benchmarks measure REST: archives only where a benchmark asks (from the simulator).
    defaults = {"ARCHIVE_ENABLED": "false", "ARCHIVE_BASE_URL": sim.base}
    return _service("gap_handler", db_url, sim, symbols, {**defaults, **settings})


# ---- metrics ----

MetricKey = tuple[str, frozenset[tuple[str, str]]]


def parse_metrics(text: str) -> dict[MetricKey, float]:
    """Prometheus text exposition -> {(name, labels): value}."""
    out: dict[MetricKey, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        with contextlib.suppress(ValueError):
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(samples: dict[MetricKey, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def histogram_quantile(samples: dict[MetricKey, float], name: str, q: float, **labels: str) -> float:
    """Upper bound of the bucket holding quantile ``q`` (like Prometheus, but without
    interpolation: the answer is 'at most this', never a made-up value inside a bucket)."""
    buckets: dict[float, float] = {}
    want = set(labels.items())
    for (n, ls), v in samples.items():
        if n == f"{name}_bucket" and want <= ls:
            bound = float(dict(ls)["le"])
            buckets[bound] = buckets.get(bound, 0.0) + v
    if not buckets:
        return float("nan")
    total = buckets[max(buckets)]
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return float("inf")


# ---- the database's processes ----


async def _data_directory(db_url: str) -> str:
    conn = await asyncpg.connect(db_url)
    try:
        return str(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()


def postmaster_pid(db_url: str) -> int:
    datadir = asyncio.run(_data_directory(db_url))
    return int(Path(datadir, "postmaster.pid").read_text().split()[0])


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


class ProcessGroupSampler:
    """CPU% of a process tree (postgres: postmaster + backends + workers) between two
    samples; processes that appear or vanish in between count from their own samples."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._first: dict[int, ProcSample] = {}

    def _sample_all(self) -> dict[int, ProcSample]:
        out = {}
        for pid in [self.root, *children(self.root)]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                out[pid] = sample_process(pid)
        return out

    def start(self) -> None:
        self._first = self._sample_all()

    def cpu_percent(self) -> float:
        last = self._sample_all()
        total = 0.0
        for pid, after in last.items():
            before = self._first.get(pid)
            if before is not None:
                total += cpu_percent(before, after)
        return total

    def rss_mb(self) -> float:
        return sum(s.rss_mb for s in self._sample_all().values())


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class MachineCpu:
    """Whole-machine busy CPU% between ``start()`` and ``percent()`` (100 % per core)."""

    def __init__(self) -> None:
        self._t0 = self._i0 = 0

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]

    def start(self) -> None:
        self._t0, self._i0 = self._read()

    def percent(self) -> float:
        t1, i1 = self._read()
        cores = os.cpu_count() or 1
        return 100.0 * cores * (1 - (i1 - self._i0) / max(1, t1 - self._t0))


async def reset_database(url: str, tables: tuple[str, ...]) -> None:
    """Apply the schema (idempotent) and empty ``tables``: each measurement starts from
    the same state."""
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        await conn.execute("TRUNCATE " + ", ".join(tables))  # fixed names from the benches, not input
    finally:
        await conn.close()
