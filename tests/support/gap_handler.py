"""Test support for the gap handler (used by tests/test_gap_*.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gap_handler.service import GapHandler, assemble, spec
from gap_handler.settings import GapHandlerSettings
from quaint.service.lifecycle import open_resources, stop_within
from quaint.service.settings import db_fields_from_url
from tests.support.services import served
from tests.support.waiting import wait_for

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
        # The REST path unless a test asks for archives (the simulator serves them at rest_url).
        "archive_enabled": False,
        "archive_base_url": rest_url,
    }
    values.update(overrides)
    return GapHandlerSettings.model_validate(values)


@asynccontextmanager
async def assembled(
    settings: GapHandlerSettings, *, now_ms: Callable[[], int], registry: CollectorRegistry | None = None
) -> AsyncIterator[GapHandler]:
    """The gap handler assembled on its own resources (pool, schema, session) as
    ``serve()`` assembles it, not running; the resources close at the end of the block."""
    async with open_resources(settings) as resources:
        yield await assemble(settings, resources, registry=registry or CollectorRegistry(), now_ms=now_ms)


@asynccontextmanager
async def running_service(
    settings: GapHandlerSettings,
    *,
    now_ms: Callable[[], int],
    registry: CollectorRegistry | None = None,
    loops: bool = True,
) -> AsyncIterator[GapHandler]:
    """The gap handler with its TaskGroup running (scan loop, listener and daily jobs
    when ``loops``, else the workers alone); stopped at the end of the block as
    ``serve()`` stops it (``SHUTDOWN_DEADLINE_S``)."""
    async with assembled(settings, now_ms=now_ms, registry=registry) as handler:
        task = asyncio.create_task(handler.run() if loops else handler.backfills.run())
        try:
            yield handler
        finally:
            await stop_within(handler, task, settings.shutdown_deadline_s, "gap_handler")


@asynccontextmanager
async def served_api(
    settings: GapHandlerSettings, now_ms: Callable[[], int]
) -> AsyncIterator[tuple[str, web.Application]]:
    """The whole HTTP service (``serve(spec(...))``) on a free port, once its first scan
    has run and the bootstrap is done: yields (base URL, app). Stopped at the end of the
    block as SIGTERM would."""
    async with served(spec(settings, now_ms=now_ms)) as handle:
        await wait_for(idle(handle.service), 20, "bootstrap")
        yield handle.url, handle.app


def idle(c: GapHandler, min_scans: int = 1) -> Callable[[], Awaitable[bool]]:
    """Condition: at least ``min_scans`` scans done, nothing queued or running."""

    async def check() -> bool:
        svc = c.backfills
        return svc.scans >= min_scans and svc.queue.qsize() == 0 and not any(svc.running.values())

    return check
