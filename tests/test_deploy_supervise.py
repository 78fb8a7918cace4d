"""scripts/supervise.sh, the local suite's restart supervisor, run for real on small commands: a crash
is restarted with a growing delay and logged with its exit code, bad configuration (exit 2) is not
restarted, and a stop request reaches the child once and is never followed by a restart.

The SIGKILL of a real service of a running suite is in tests/test_deploy_local.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUPERVISE = ROOT / "scripts" / "supervise.sh"
T = TypeVar("T")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the supervisor is for Linux (/proc)")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@dataclass
class Supervised:
    process: subprocess.Popen[bytes]
    log: Path
    state_file: Path

    def state(self) -> dict[str, str]:
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def log_text(self) -> str:
        return self.log.read_text()

    def exit_code(self) -> int | None:
        return self.process.poll()


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Callable[[str], Supervised]]:
    started: list[Supervised] = []

    def start(script: str) -> Supervised:
        log = tmp_path / f"service{len(started)}.log"
        state = tmp_path / f"service{len(started)}.state"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(SUPERVISE), "demo", str(state), "bash", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group, as local_suite.sh's setsid gives it
            )
        s = Supervised(process, log, state)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.process.poll() is None:
            os.killpg(s.process.pid, signal.SIGKILL)
        s.process.wait(timeout=30)


def test_a_crashing_command_is_restarted_with_growing_delays(supervise: Callable[[str], Supervised]) -> None:
    s = supervise("echo run; exit 1")

    def three_restarts() -> dict[str, str] | None:
        state = s.state()
        return state if int(state.get("restarts") or 0) >= 3 else None

    state = wait_for(three_restarts, "3 restarts")
    assert state["last_exit"] == "1"
    text = s.log_text()
    ended = r"demo ended without a stop request \(exit code 1\) after \d+s; restart (\d+) in (\d+)s"
    delays = re.findall(ended, text)
    assert delays[:3] == [("1", "1"), ("2", "2"), ("3", "4")], text
    assert "restarting demo (restart 1)" in text and "restarting demo (restart 2)" in text
    assert text.count("run\n") >= 3

    # A stop request during a wait ends the supervisor without another start.
    def waiting_long_enough() -> bool:
        # At least 2 s left of the wait: the stop request below comes well before the next start.
        state = s.state()
        return state.get("state") == "waiting" and int(state.get("next_start_at") or 0) - time.time() >= 2

    wait_for(waiting_long_enough, "a wait of 4 s or more between restarts")
    runs = s.log_text().count("run\n")
    s.process.send_signal(signal.SIGTERM)
    assert s.process.wait(timeout=30) == 0
    assert s.state()["state"] == "stopped"
    assert "demo stopped on request while waiting to restart" in s.log_text()
    assert s.log_text().count("run\n") == runs


def test_bad_configuration_is_not_restarted(supervise: Callable[[str], Supervised]) -> None:
    s = supervise("echo 'invalid configuration: X: bad' >&2; exit 2")
    assert s.process.wait(timeout=30) == 2
    state = s.state()
    assert state["state"] == "gave-up" and state["restarts"] == "0" and state["last_exit"] == "2"
    text = s.log_text()
    assert "invalid configuration: X: bad" in text
    assert "demo exited with code 2 (bad configuration, see above)" in text and "not restarted" in text
    assert "restarting" not in text


def test_a_killed_command_is_restarted_and_the_signal_logged(supervise: Callable[[str], Supervised]) -> None:
    s = supervise("echo started $$; exec sleep 600")
    first = int(wait_for(lambda: s.state().get("child"), "the first child"))
    wait_for(lambda: f"started {first}" in s.log_text(), "the child to run")
    os.kill(first, signal.SIGKILL)

    def second_child() -> int | None:
        st = s.state()
        child = int(st.get("child") or 0)
        return child if st.get("state") == "running" and child not in (0, first) else None

    second = wait_for(second_child, "a new child after the SIGKILL")
    wait_for(lambda: f"started {second}" in s.log_text(), "the new child to run")
    assert s.state()["restarts"] == "1" and s.state()["last_exit"] == "137"
    assert "demo ended without a stop request (killed by signal 9 (KILL))" in s.log_text()
    assert s.exit_code() is None


def test_a_stop_request_reaches_the_child_once_and_is_final(supervise: Callable[[str], Supervised]) -> None:
    # The child counts the SIGTERMs it gets and exits cleanly on the first.
    s = supervise("trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done")
    child = int(wait_for(lambda: s.state().get("child"), "the child"))
    wait_for(lambda: "ready" in s.log_text(), "the child to run")
    s.process.send_signal(signal.SIGTERM)
    assert s.process.wait(timeout=30) == 0
    text = s.log_text()
    assert text.count("got-term") == 1, text
    assert "demo stopped on request (exit code 0)" in text
    assert "restart" not in text
    assert s.state()["state"] == "stopped" and s.state()["restarts"] == "0"
    assert not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"


def test_a_clean_exit_without_a_stop_request_is_restarted(supervise: Callable[[str], Supervised]) -> None:
    """As with Docker's unless-stopped: only a stop request makes an exit final, whatever its code."""
    s = supervise("echo run; exit 0")
    wait_for(lambda: int(s.state().get("restarts") or 0) >= 1, "a restart after exit 0")
    assert "demo ended without a stop request (exit code 0)" in s.log_text()
