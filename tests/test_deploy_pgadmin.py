"""pgAdmin 4 in a real headless Chromium, configured by the project's own pgadmin/ files.

A private PostgreSQL + TimescaleDB cluster holds a ``btc_ml_production`` database with the schema
and some candles, and requires a password (scram-sha-256). ``pgadmin/entrypoint.sh`` (the Docker
image's start-up) renders ``pgadmin/servers.json`` and writes the pgpass file; a real pgAdmin 4
server (PyPI ``pgadmin4``, in its own venv made by ``scripts/pgadmin_env.sh``) imports the server
list. The browser then logs in, opens the pre-configured server without any password prompt (so the
pgpass file is what logged it in), opens the ``btc_ml_production`` database and runs a query in
the Query Tool that returns the candles. The screenshot is saved in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from pgadmin_ui import CHROMIUM_ARGS, open_server_without_prompt, require_chromium, tree_entry

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
EMAIL = "admin@example.com"
DB_NAME = "btc_ml_production"
# The newest five of the candles inserted below, newest first, as pgAdmin shows NUMERIC values.
EXPECTED_CLOSES = ["50001.25", "50002.25", "50003.25", "50004.25", "50005.25"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.db,
    pytest.mark.skipif(sys.platform != "linux", reason="the browser set-up is Debian/Linux only"),
]


def pgadmin_venv() -> Path:
    done = subprocess.run(
        [str(ROOT / "scripts" / "pgadmin_env.sh"), "--path"], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip())


@dataclass
class PgAdmin:
    base_url: str
    login_password: str


@dataclass
class Database:
    port: int
    password: str


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A private cluster (the postgres user must reach its directory, hence not under tmp_path)."""
    base = Path(tempfile.mkdtemp(prefix="quaint-pgadmin-db-"))
    base.chmod(0o755)
    pgdata = base / "pgdata"
    cluster = ROOT / "scripts" / "pg_cluster.sh"
    try:
        done = subprocess.run(
            [str(cluster), "start", "--dir", str(pgdata), "--db", DB_NAME, "--fast"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        url = done.stdout.strip().splitlines()[-1]
        # ':' and '\' must survive the pgpass file's escaping.
        password = f"q:{secrets.token_hex(12)}\\z"
        asyncio.run(_prepare(url, password))
        # From now on TCP logins need the password: only the pgpass file can open the server in pgAdmin.
        (pgdata / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        asyncio.run(_reload(url, password))
        yield Database(port=int((pgdata / "port").read_text()), password=password)
    finally:
        subprocess.run([str(cluster), "stop", "--dir", str(pgdata)], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


async def _prepare(url: str, password: str) -> None:
    from quaint.store.schema import apply_schema

    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        await conn.execute(
            "INSERT INTO candles_1m (symbol, time, open, high, low, close, volume) "
            "SELECT 'BTCUSDT', date_trunc('minute', now()) - make_interval(mins => g), "
            "50000 + g, 50002 + g, 49999 + g, 50000.25 + g, 1.5 FROM generate_series(1, 30) AS g"
        )
        await conn.execute("SELECT set_config('password_encryption', 'scram-sha-256', false)")
        await conn.execute(f"ALTER USER postgres PASSWORD '{password.replace(chr(39), chr(39) * 2)}'")
    finally:
        await conn.close()


async def _reload(url: str, password: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    # The new rules are in force: no password, no login; the right one works.
    deadline = time.monotonic() + 10
    while True:
        try:
            probe = await asyncpg.connect(url.replace("postgres:postgres@", "postgres:wrong@"))
        except asyncpg.InvalidPasswordError:
            break
        await probe.close()
        assert time.monotonic() < deadline, "pg_hba.conf reload did not take effect"
        await asyncio.sleep(0.1)
    conn = await asyncpg.connect(url, password=password)
    await conn.close()


@pytest.fixture
def pgadmin(database: Database, tmp_path: Path) -> Iterator[PgAdmin]:
    """A running pgAdmin 4 (server mode) set up through pgadmin/entrypoint.sh; yields its base URL."""
    venv = pgadmin_venv()
    python = venv / "bin" / "python"
    packages = sorted(venv.glob("lib/python3*/site-packages/pgadmin4"))
    if not python.exists() or not packages:
        pytest.skip(f"no pgAdmin venv at {venv}: run scripts/pgadmin_env.sh to create it")
    pkg = packages[-1]
    data = tmp_path / "pgadmin"
    data.mkdir()
    port = free_port()
    config = tmp_path / "config_quaint.py"
    config.write_text(
        "SERVER_MODE = True\n"
        f"DATA_DIR = {str(data)!r}\n"
        f"LOG_FILE = {str(data / 'pgadmin4.log')!r}\n"
        "DEFAULT_SERVER = '127.0.0.1'\n"
        f"DEFAULT_SERVER_PORT = {port}\n"
        "MASTER_PASSWORD_REQUIRED = False\n"
        "UPGRADE_CHECK_ENABLED = False\n"
    )
    login_password = secrets.token_urlsafe(16)
    servers = tmp_path / "servers.json"
    env = {
        **os.environ,
        # pgAdmin reads this file instead of a config_local.py inside its venv.
        "CONFIG_DISTRO_FILE_PATH": str(config),
        "PGADMIN_SETUP_EMAIL": EMAIL,
        "PGADMIN_SETUP_PASSWORD": login_password,
        # What docker-compose.yml passes to the pgadmin container, pointed at this test's server.
        "PGADMIN_DEFAULT_EMAIL": EMAIL,
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(database.port),
        "DB_USER": "postgres",
        "DB_NAME": DB_NAME,
        "DB_PASSWORD": database.password,
        "PGADMIN_STORAGE_DIR": str(data / "storage"),
        "PGADMIN_SERVER_JSON_FILE": str(servers),
        "QUAINT_SERVERS_TEMPLATE": str(ROOT / "pgadmin" / "servers.json"),
        "PGADMIN_PYTHON": str(python),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "pgadmin" / "entrypoint.sh"), "true"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert database.password not in done.stdout + done.stderr, "the entrypoint printed the password"
    rendered = json.loads(servers.read_text())["Servers"]["1"]
    assert (rendered["Host"], rendered["Port"], rendered["MaintenanceDB"]) == (
        "127.0.0.1",
        database.port,
        DB_NAME,
    )
    pgpass = data / "storage" / EMAIL.replace("@", "_") / ".pgpass"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600

    for args in (["setup-db"], ["load-servers", str(servers), "--user", EMAIL]):
        done = subprocess.run(
            [str(python), str(pkg / "setup.py"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"setup.py {args[0]}: {done.stdout}\n{done.stderr}"
    assert "1 Server(s)" in done.stdout, done.stdout

    log = (tmp_path / "pgadmin.out").open("w")
    server = subprocess.Popen(
        [str(python), str(pkg / "pgAdmin4.py")], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/misc/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"pgAdmin exited: {(tmp_path / 'pgadmin.out').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "pgAdmin did not answer /misc/ping within 60 s"
            time.sleep(0.25)
        yield PgAdmin(base, login_password)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


@pytest.fixture
def chromium() -> str:
    """Checked before anything is started: the browser and its driver."""
    chromium: str = require_chromium()
    return chromium


@pytest.mark.timeout(300)
def test_pgadmin_opens_the_preconfigured_database_and_queries_candles(
    chromium: str, pgadmin: PgAdmin
) -> None:
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        try:
            # The pre-configured server, in the default group: no set-up clicks, no password prompt.
            open_server_without_prompt(
                page, pgadmin.base_url, EMAIL, pgadmin.login_password, "timescaledb", DB_NAME
            )
            tree_entry(page, DB_NAME).locator(".file-name").click()
            page.wait_for_function(
                "name => [...document.querySelectorAll('.file-entry.active .file-name')]"
                ".some(e => e.textContent.trim() === name)",
                arg=DB_NAME,
            )
            page.get_by_role("button", name="Tools").click()
            page.get_by_role("menuitem", name="Query Tool").click()
            tool = page.locator('iframe[id^="id-query-tool_"]:visible').last.content_frame
            editor = tool.locator(".cm-content").first
            editor.click()
            page.keyboard.type("SELECT symbol, time, close FROM candles_1m ORDER BY time DESC LIMIT 5")
            page.keyboard.press("F5")
            tool.get_by_text("Total rows: 5").wait_for()
            cells = tool.locator(".rdg-cell").all_inner_texts()
            closes = [c.strip() for c in cells if c.strip().startswith("5000")]
            assert closes == EXPECTED_CLOSES, cells
            assert cells.count("BTCUSDT") == 5, cells
            assert tool.get_by_text(f"{DB_NAME}/postgres@timescaledb").first.is_visible()
        finally:
            page.screenshot(path=str(ARTIFACTS / "pgadmin_query_tool.png"))
            browser.close()
    print(f"browser part: {time.monotonic() - t0:.1f} s; screenshot {ARTIFACTS / 'pgadmin_query_tool.png'}")
