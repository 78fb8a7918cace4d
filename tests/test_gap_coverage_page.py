"""``GET /coverage.html`` (issue 16): the heat map of stored / missing / exchange-outage
minutes per symbol and day, in the real headless Chromium the suite already uses
(Playwright, as tests/test_deploy_pgadmin.py). Every cell and total is checked against
``GET /coverage``; the page loads nothing from anywhere but the service. The screenshot
is saved in ``test-artifacts/gap_coverage.png``."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pgadmin_ui import CHROMIUM_ARGS, require_chromium

from gap_handler.core.intervals import DAY_MS, history_start
from quaint.binance.models import MINUTE_MS
from tests.support.gap_handler import served_api, settings_for
from tests.support.simulator import running_simulator

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
DAYS = 4

pytestmark = pytest.mark.slow


async def _get(base: str, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(base + path) as resp:
        return resp.status, resp.content_type, await resp.text()


def _read_page(chromium: str, url: str, base: str, shot: Path) -> dict[str, Any]:
    """Open the page, wait until it has drawn the map, and read back what it shows."""
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 420})
            page.on("request", lambda r: requested.append(r.url))
            page.goto(url)
            page.wait_for_selector("body[data-loaded]", timeout=30_000)
            shown: dict[str, Any] = page.evaluate(
                """() => ({
                  loaded: document.body.dataset.loaded,
                  rows: [...document.querySelectorAll("tr[data-symbol]")].map((tr) => ({
                    symbol: tr.dataset.symbol,
                    cells: [...tr.querySelectorAll("td.cell")].map((td) => ({
                      date: td.dataset.date, stored: +td.dataset.stored, missing: +td.dataset.missing,
                      unrecoverable: +td.dataset.unrecoverable, colour: getComputedStyle(td).backgroundColor,
                    })),
                    stored: +tr.querySelector("td.stored").textContent,
                    missing: +tr.querySelector("td.missing").textContent,
                    unrecoverable: +tr.querySelector("td.unrecoverable").textContent,
                  })),
                  total_stored: +document.querySelector("#totals td.stored").textContent,
                  total_missing: +document.querySelector("#totals td.missing").textContent,
                })"""
            )
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    shown["requested"] = requested
    return shown


@pytest.mark.skipif(sys.platform != "linux", reason="the browser set-up is Debian/Linux only")
async def test_coverage_page_shows_what_coverage_says(db_url: str) -> None:
    chromium = require_chromium()
    # Noon on the simulator's clock: the day so far is all within the history the handler
    # fills (one day), so an outage early today makes a day of outage only (grey); the
    # days before that history stay missing (red).
    wall = int(time.time() * 1000)
    noon = wall - wall % DAY_MS - DAY_MS + 12 * 3600_000 + 30_000
    async with running_simulator(symbols=SYMBOLS, speed=0, start=noon) as sim:
        now = sim.clock.now_ms()
        assert history_start(now, 1) < now - now % DAY_MS
        today = now - now % DAY_MS
        sim.faults.add_outage(today + 120 * MINUTE_MS, today + 210 * MINUTE_MS, "ETHUSDT")
        settings = settings_for(
            db_url, sim.rest_url, symbols=SYMBOLS, history_days=1, rate_limit_requests_per_sec=100
        )
        async with served_api(settings, sim.clock.now_ms) as (base, _app):
            expected: dict[str, list[dict[str, Any]]] = {}
            async with aiohttp.ClientSession() as http:
                for symbol in SYMBOLS:
                    async with http.get(f"{base}/coverage?symbol={symbol}&days={DAYS}") as resp:
                        assert resp.status == 200
                        expected[symbol] = (await resp.json())["days"]
            assert sum(d["unrecoverable"] for d in expected["ETHUSDT"]) == 90
            assert all(sum(d["missing"] for d in expected[s]) > DAY_MS // MINUTE_MS for s in SYMBOLS)

            status, ctype, _ = await _get(base, "/coverage.html?days=0")
            assert status == 400 and ctype == "application/json"
            status, ctype, html = await _get(base, f"/coverage.html?days={DAYS}")
            assert status == 200 and ctype == "text/html"

            shot = ARTIFACTS / "gap_coverage.png"
            shown = await asyncio.to_thread(
                _read_page, chromium, f"{base}/coverage.html?days={DAYS}", base, shot
            )
    assert shown["loaded"] == "true"
    assert all(u.startswith(base + "/") for u in shown["requested"]), shown["requested"]
    assert [r["symbol"] for r in shown["rows"]] == SYMBOLS
    for row in shown["rows"]:
        days = expected[row["symbol"]]
        assert [(c["date"], c["stored"], c["missing"], c["unrecoverable"]) for c in row["cells"]] == [
            (d["date"], d["stored"], d["missing"], d["unrecoverable"]) for d in days
        ]
        assert row["stored"] == sum(d["stored"] for d in days)
        assert row["missing"] == sum(d["missing"] for d in days)
        assert row["unrecoverable"] == sum(d["unrecoverable"] for d in days)
        # Complete days green, missing ones red, outage-only ones grey: three colours apart.
        for cell, day in zip(row["cells"], days, strict=True):
            if day["missing"]:
                assert "(215, 48, 31" in cell["colour"], cell
            elif day["unrecoverable"]:
                assert cell["colour"] == "rgb(155, 155, 155)"
            else:
                assert cell["colour"] == "rgb(46, 157, 79)"
    eth_today = shown["rows"][1]["cells"][-1]
    assert (eth_today["missing"], eth_today["unrecoverable"]) == (0, 90)
    assert shown["total_stored"] == sum(d["stored"] for s in SYMBOLS for d in expected[s])
    assert shown["total_missing"] == sum(d["missing"] for s in SYMBOLS for d in expected[s])
    assert shot.stat().st_size > 0
    assert "http://" not in html and "https://" not in html  # no external asset, no CDN
