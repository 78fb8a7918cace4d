"""The CLI's progress bar and its log lines on a terminal (issue 16): a log line written
while the bar is shown clears the bar's line first and the bar is drawn again below it,
so neither overwrites the other. ``python -m gap_handler backfill`` runs with stdout and
stderr on a real pseudo-terminal, against the simulator and a real database; what it
wrote is replayed as a terminal shows it (``\\r`` back to the line's start, ``ESC[K``
erases to its end)."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import sys
from pathlib import Path

import orjson
import pytest

from gap_handler.core.intervals import history_start
from quaint.binance.models import ms_to_datetime
from quaint.service.settings import db_fields_from_url
from tests.support.simulator import running_simulator

ROOT = Path(__file__).resolve().parents[1]
BAR = re.compile(r"^\[[#.]{30}\] +\d+\.\d% \d+/\d+ min \d+ min/s ETA \S+ ?$")
BOOTSTRAP_BAR = re.compile(r"^ *\d+\.\d% files \d+ candles \d+/\d+ [\d.]+ MB \d+ min/s ETA \S+ ?$")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="a Linux pty")]


def screen(raw: str) -> list[str]:
    """The lines a terminal ends up showing for ``raw``."""
    lines: list[str] = []
    cur: list[str] = []
    col = i = 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            del cur[col:]
            i += 3
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
        i += 1
    if cur:
        lines.append("".join(cur))
    return lines


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:  # EIO: every writer of the pty has closed it
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _is_log_line(line: str) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


@pytest.mark.parametrize(
    ("command", "symbol_flag", "bar", "done"),
    [
        ("backfill", "--symbol", BAR, ("complete: ",)),
        ("bootstrap", "--symbols", BOOTSTRAP_BAR, ("BTCUSDT: complete", "archives: ", "took ")),
    ],
)
async def test_log_lines_pass_above_the_progress_bar(
    db_url: str, tmp_path: Path, command: str, symbol_flag: str, bar: re.Pattern[str], done: tuple[str, ...]
) -> None:
    async with running_simulator(symbols=["BTCUSDT"], speed=0, rest_latency_s=0.05) as sim:
        since = ms_to_datetime(history_start(sim.clock.now_ms(), 10)).isoformat()
        env = {
            k: v for k, v in os.environ.items() if not k.upper().startswith(("DB_", "POSTGRES_", "BINANCE_"))
        }
        env.update({k.upper(): str(v) for k, v in db_fields_from_url(db_url).items()})
        env.update(
            BINANCE_REST_URL=sim.rest_url,
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            QUAINT_RUN_DIR=str(tmp_path / "no-suite"),
            USE_UVLOOP="false",
            ARCHIVE_ENABLED="false",  # offline: the simulator serves REST only here
        )
        master, slave = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gap_handler",
                command,
                symbol_flag,
                "BTCUSDT",
                "--since",
                since,
                cwd=ROOT,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
            )
            os.close(slave)
            slave = -1
            raw = (await asyncio.wait_for(asyncio.to_thread(read_all, master), 120)).decode()
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
    assert code == 0, raw
    shown = screen(raw.replace("\r\n", "\n"))
    bad = [
        line
        for line in shown
        if line and not (_is_log_line(line) or bar.match(line) or line.startswith(done))
    ]
    assert not bad, "\n".join(bad)
    # A log line came while the bar was shown (else nothing here was tested) ...
    first_bar = raw.index("\r\x1b[K")
    assert '"event"' in raw[first_bar:].split(done[0])[0]
    # ... and the bar, at 100 %, is what stays on screen above the summary.
    summary = len(done)
    assert all(line.startswith(d) for line, d in zip(shown[-summary:], done, strict=True)), shown[-4:]
    assert bar.match(shown[-summary - 1]) and "100.0%" in shown[-summary - 1], shown[-4:]
