"""The universe, asked of the exchange (shell around :mod:`quaint.binance.universe`).

A fixed ``SYMBOLS`` list needs no request. A pattern is resolved from exchangeInfo; at start
a failing request is retried with backoff until it succeeds (the service cannot know what to
collect before; an unreachable exchange is not bad configuration), at run time
:func:`refresh` returns ``None`` on failure and the caller keeps its current set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import structlog

from quaint.binance.rest_client import RestClient, RestError
from quaint.binance.universe import Resolution, UniverseSpec, resolve, static_resolution

log = structlog.get_logger(__name__)


async def refresh(client: RestClient, spec: UniverseSpec) -> Resolution | None:
    """One resolution, or ``None`` (logged) when exchangeInfo could not be read."""
    if not spec.dynamic:
        return static_resolution(spec)
    try:
        listed = await client.listed_symbols()
    except RestError as exc:
        log.warning("universe_refresh_failed", error=str(exc)[:300])
        return None
    return resolve(spec, listed)


async def resolve_at_start(
    client: RestClient, spec: UniverseSpec, delays: Callable[[], Iterator[float]]
) -> Resolution:
    waits = delays()
    while True:
        found = await refresh(client, spec)
        if found is not None:
            if spec.dynamic:
                log.info("universe_resolved", trading=len(found.trading), halted=len(found.halted))
            return found
        await asyncio.sleep(next(waits))


def ordered(symbols: frozenset[str] | set[str]) -> list[str]:
    """A stable order for a resolved set (connection plans, logs)."""
    return sorted(symbols)
