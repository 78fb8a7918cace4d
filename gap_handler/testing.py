"""Test support for the gap handler (used by tests/test_gap_*.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gap_handler.api import COMPONENTS_KEY, build_app
from gap_handler.app import Components, components, service_loops
from gap_handler.settings import GapHandlerSettings
from quaint.service.runtime import bound_port, start_http
from quaint.service.settings import db_fields_from_url

# Shared by the fuzz tests (tests/test_gap_fuzz*.py).
# Examples that reuse a function-scoped fixture (a simulator, a served app) across examples.
ONCE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)
# Printable ASCII only: what an HTTP client can put in a header value unchanged.
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


def settings_for(db_url: str, rest_url: str, **overrides: Any) -> GapHandlerSettings:
    """Settings pointing at a test database and a simulator; nothing read from the environment."""
    values: dict[str, Any] = {
        **db_fields_from_url(db_url),
        "db_connect_timeout_s": 10,
        "binance_rest_url": rest_url,
        "gap_handler_host": "127.0.0.1",
        "gap_handler_port": 0,
        "log_format": "json",
        "use_uvloop": False,
    }
    values.update(overrides)
    return GapHandlerSettings.model_validate(values)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.02
) -> None:
    """Poll an async condition until true; TimeoutError naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_service(
    settings: GapHandlerSettings,
    *,
    now_ms: Callable[[], int],
    registry: CollectorRegistry | None = None,
    loops: bool = True,
) -> AsyncIterator[Components]:
    """The service's components with its TaskGroup running (scan loop, listener and
    daily jobs when ``loops``); stopped like SIGTERM would at the end of the block."""
    async with components(settings, registry or CollectorRegistry(), now_ms=now_ms) as c:
        task = asyncio.create_task(c.service.run(service_loops(c) if loops else []))
        try:
            yield c
        finally:
            c.service.stop()
            await task


@asynccontextmanager
async def served_api(
    settings: GapHandlerSettings, now_ms: Callable[[], int]
) -> AsyncIterator[tuple[str, web.Application]]:
    """The whole HTTP service (:func:`gap_handler.api.build_app`) on a free port, once its
    first scan has run and the bootstrap is done: yields (base URL, app). Stopped at the
    end of the block as SIGTERM would."""
    app = build_app(settings, CollectorRegistry(), now_ms=now_ms)
    runner = await start_http(app, "127.0.0.1", 0)
    try:
        await wait_for(idle(app[COMPONENTS_KEY]), 20, "bootstrap")
        yield f"http://127.0.0.1:{bound_port(runner)}", app
    finally:
        await runner.cleanup()


def idle(c: Components, min_scans: int = 1) -> Callable[[], Awaitable[bool]]:
    """Condition: at least ``min_scans`` scans done, nothing queued or running."""

    async def check() -> bool:
        svc = c.service
        return svc.scans >= min_scans and svc.queue.qsize() == 0 and not any(svc.running.values())

    return check
