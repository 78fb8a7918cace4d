"""A cut-off host (issue 18): feeder B runs in its own network namespace, reaching the
simulator and the database over a veth link only; feeder A and the database stay on this
host. B's link is cut, then given loss and latency (``tc netem``), while A keeps streaming.
No minute is lost (A had them all; no gap handler runs), B's stale watchdog and ``/health``
report the cut, and B recovers when the link returns: at the end A is stopped and B alone
stores the last minutes.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from quaint.binance.models import MINUTE_MS
from tests.support.chaos import ServiceProcess
from tests.support.feeder import SIM_START, minute_of, quality_rows, stored_candles, until_sim
from tests.support.ha import (
    REPO,
    HttpProcess,
    db_env,
    duplicate_ticks,
    healthy,
    newest_update_id,
    ticks_after,
)
from tests.support.netns import Netns, netns_unavailable, network_namespace, tcp_relay
from tests.support.services import free_port
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.ha, pytest.mark.slow]

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"cannot create a network namespace here: {reason}")
    with network_namespace() as ns:
        yield ns


class Isolated:
    """Feeder B: ``python -m feeder`` inside the namespace; its /health read from there."""

    def __init__(self, ns: Netns, env: dict[str, str], log_dir: Path):
        self.ns = ns
        self.port = free_port()
        env = {**env, "FEEDER_HOST": "127.0.0.1", "FEEDER_PORT": str(self.port)}
        argv = ns.argv(sys.executable, "-m", "feeder")
        self.proc = ServiceProcess("feeder-b", argv, env, log_dir / "feeder-b.log", REPO)

    async def health(self) -> tuple[int, Any]:
        return await self.ns.http_json(f"http://127.0.0.1:{self.port}/health")

    async def state(self) -> dict[str, Any]:
        status, body = await self.health()
        return body if status in (200, 503) and isinstance(body, dict) else {}


async def _b_healthy(b: Isolated) -> bool:
    body = await b.state()
    return body.get("status") == "healthy"


async def _b_reports_the_cut(b: Isolated) -> bool:
    # The watchdog marks every symbol stale; the database may still look connected (a silent
    # link raises nothing until a write times out), so staleness is what must show.
    body = await b.state()
    states = body.get("symbol_states", {})
    return body.get("status") != "healthy" and states.get("stale") == len(SYMBOLS)


async def _b_wrote_more(b: Isolated, than: int) -> bool:
    return int((await b.state()).get("candles_processed", 0)) > than


@pytest.mark.timeout(420)
async def test_a_cut_off_feeder_loses_nothing_reports_it_and_recovers(
    db_url: str, tmp_path: Path, netns: Netns
) -> None:
    db = urlsplit(db_url)
    async with (
        running_simulator(start=SIM_START, speed=60, symbols=SYMBOLS, history_days=1) as sim,
        tcp_relay(netns.host_ip, sim.host, sim.port) as sim_relay,
        tcp_relay(netns.host_ip, db.hostname or "127.0.0.1", db.port or 5432) as db_relay,
    ):
        env = db_env(
            db_url,
            SYMBOLS=",".join(SYMBOLS),
            BINANCE_WS_URL=sim.ws_url,
            BINANCE_REST_URL=sim.rest_url,
            BOOK_TICKER_MODE="all",
            BATCH_TIMEOUT_MS="100",
            WEBSOCKET_RECONNECT_INTERVAL_S="0.2",
            WEBSOCKET_RECONNECT_MAX_S="1",
            WS_OPEN_TIMEOUT_S="3",
            STALE_STREAM_TIMEOUT_S="3",
            DB_RETRY_INTERVAL_S="0.2",
            DB_RETRY_MAX_S="1",
            BOOK_TAKEOVER_S="4",
        )
        relayed = f"{netns.host_ip}:{sim_relay.port}"
        b_env = {
            **env,
            "DB_HOST": netns.host_ip,
            "DB_PORT": str(db_relay.port),
            "BINANCE_WS_URL": f"ws://{relayed}",
            "BINANCE_REST_URL": f"http://{relayed}",
        }
        a = HttpProcess("feeder-a", "feeder", env, tmp_path, "FEEDER_PORT")
        b = Isolated(netns, b_env, tmp_path)
        first = minute_of(sim.clock.now_ms()) + MINUTE_MS  # the first minute both stream from its start
        try:
            await a.proc.start()
            await b.proc.start()
            await wait_for(functools.partial(healthy, a), 60, "feeder-a healthy", interval=0.1)
            await wait_for(functools.partial(_b_healthy, b), 60, "feeder-b healthy", interval=0.2)
            await until_sim(sim, sim.clock.now_ms() + 2 * MINUTE_MS)

            # The cut: B goes silent, A and the database carry on.
            netns.cut()
            await wait_for(functools.partial(_b_reports_the_cut, b), 60, "feeder-b stale", interval=0.2)
            mark = {s: await newest_update_id(db_url, s) for s in SYMBOLS}
            for s in SYMBOLS:  # A writes every symbol's ticks (it takes over what B owned)
                after = functools.partial(ticks_after, db_url, s, mark[s])
                await wait_for(after, 60, f"{s} book ticks while feeder-b is cut off")
            await until_sim(sim, sim.clock.now_ms() + 5 * MINUTE_MS)
            written = int((await b.state()).get("candles_processed", 0))
            netns.restore()
            await wait_for(functools.partial(_b_healthy, b), 90, "feeder-b healthy again", interval=0.2)
            await wait_for(functools.partial(_b_wrote_more, b, written), 90, "feeder-b writing again")

            # A bad link: loss and latency; B keeps streaming and writing through it.
            relays = (sim_relay, db_relay)
            print("bad link:", netns.degrade(5, 80, relays))
            written = int((await b.state()).get("candles_processed", 0))
            await wait_for(functools.partial(_b_wrote_more, b, written), 90, "feeder-b writing over loss")
            await until_sim(sim, sim.clock.now_ms() + 3 * MINUTE_MS)
            netns.heal(relays)

            # B alone: what it stores from here proves it recovered completely.
            await a.proc.terminate(30)
            alone = minute_of(sim.clock.now_ms()) + MINUTE_MS
            await until_sim(sim, alone + 4 * MINUTE_MS)
            end = minute_of(sim.clock.now_ms()) - MINUTE_MS

            async def all_stored() -> bool:
                for s in SYMBOLS:
                    if len(await stored_candles(db_url, s, first, end)) < len(sim.truth(s, first, end)):
                        return False
                return True

            await wait_for(all_stored, 60, "every closed candle of the window stored")
        finally:
            await a.proc.close()
            await b.proc.close()
    assert a.proc.unexpected == [] and b.proc.unexpected == []
    for s in SYMBOLS:
        assert await stored_candles(db_url, s, first, end) == sim.truth(s, first, end)
        assert sim.truth(s, alone, end), "B alone had minutes to store"
    assert await duplicate_ticks(db_url) == 0
    assert await quality_rows(db_url, "gap_detected") == []
