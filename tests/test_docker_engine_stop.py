"""``scripts/docker_engine.sh stop`` returns once the engine has exited, even when nobody reaps it.

dockerd is started detached, so after it exits its parent is whatever adopts orphans. Where PID 1 never
waits for adopted children (seen in CI: a container's init), the exited engine stays a zombie; a
liveness check by ``kill -0`` called it alive forever and ``stop`` never returned (CI: the compose test's
teardown timed out after 180 s). Here this test process is the stand-in engine's parent and does not wait
for it, which makes the same zombie. No Docker engine is needed: the stand-in only carries dockerd's
command line, which is how the script recognises its engine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE_SCRIPT = ROOT / "scripts" / "docker_engine.sh"
MARKER = ".quaint-docker-engine"


def _state(pid: int) -> str:
    """The process state letter from /proc (``Z`` for a zombie), or ``gone``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(") ", 1)[1][0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_stop_returns_when_the_exited_engine_is_an_unreaped_zombie(tmp_path: Path) -> None:
    directory = tmp_path / "engine"
    directory.mkdir()
    (directory / MARKER).touch()
    # argv[0] "dockerd" and "--data-root DIR/root " as the script's engine_pid() looks for them;
    # `python -c` ignores the arguments after its program. SIGTERM ends it at once.
    fake = subprocess.Popen(
        [
            "bash",
            "-c",
            'exec -a dockerd "$0" -c "import time; time.sleep(600)" --data-root "$1/root" --pidfile x',
            sys.executable,
            str(directory),
        ]
    )
    try:
        (directory / "dockerd.pid").write_text(f"{fake.pid}\n")
        # Its exec replaces bash's command line with dockerd's: wait for that (generous poll count).
        for _ in range(600):
            if b"--data-root" in Path(f"/proc/{fake.pid}/cmdline").read_bytes():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the stand-in engine's command line never appeared")

        # The script's own limits are 90 s for the engine to stop, then 10 s after SIGKILL: stopping
        # an engine that exited at once must return well inside them, and the old check never returned.
        done = subprocess.run(
            [str(ENGINE_SCRIPT), "stop", "--dir", str(directory), "--purge"],
            capture_output=True,
            text=True,
            timeout=85,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert _state(fake.pid) == "Z", "the stand-in should be an unreaped zombie (this test did not wait)"
        assert "killing it" not in done.stderr
        assert not directory.exists(), "--purge deletes the directory"
    finally:
        fake.kill()
        fake.wait()
