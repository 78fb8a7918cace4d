"""What every benchmark needs: machine facts, its own durable cluster, RESULT lines,
process CPU/RSS readings. Benchmarks print figures; tests assert correctness."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "pg_cluster.sh"


def result(name: str, value: float, unit: str) -> None:
    """The one machine-readable line per headline figure."""
    shown = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    print(f"RESULT {name} {shown} {unit}", flush=True)


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


@contextlib.contextmanager
def durable_cluster(database: str = "btc_ml_production") -> Iterator[str]:
    """A private cluster with production durability (fsync on, unlike the test cluster),
    so write figures are honest. Yields the URL of ``database``."""
    parent = os.environ.get("QUAINT_BENCH_TMPDIR") or (
        "/dev/shm" if shutil.disk_usage("/dev/shm").free > 4 * 2**30 else None
    )
    datadir = tempfile.mkdtemp(prefix="quaint-bench-pg-", dir=parent)
    try:
        out = subprocess.run(
            [str(CLUSTER_SCRIPT), "start", "--dir", datadir, "--db", database],
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        )
        url = out.stdout.strip().splitlines()[-1]
        try:
            yield url
        finally:
            subprocess.run([str(CLUSTER_SCRIPT), "stop", "--dir", datadir], check=False, timeout=60)
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class ProcSample:
    rss_mb: float
    cpu_s: float
    at: float


def sample_process(pid: int) -> ProcSample:
    """RSS (MiB) and user+system CPU seconds of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return ProcSample(rss_kb / 1024, cpu, time.monotonic())


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    elapsed = after.at - before.at
    return 100.0 * (after.cpu_s - before.cpu_s) / elapsed if elapsed > 0 else 0.0


def psql(url: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """``psql`` on the database at ``url`` (no psqlrc, stop at the first error) with ``args``,
    and the environment that carries the password."""
    parts = urlsplit(url)
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", parts.hostname or "127.0.0.1"]
    cmd += ["-p", str(parts.port or 5432), "-U", unquote(parts.username or "postgres")]
    cmd += ["-d", unquote(parts.path.lstrip("/")), *args]
    return cmd, {**os.environ, "PGPASSWORD": unquote(parts.password or "")}
