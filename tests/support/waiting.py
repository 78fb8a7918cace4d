"""Waiting on a condition with a deadline: every test waits this way, never with a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, *, interval: float = 0.02
) -> None:
    """Poll an async condition every ``interval`` s until true; ``TimeoutError`` naming ``what``
    after ``within`` s."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_until(
    predicate: Callable[[], bool], within: float = 30.0, what: str = "condition", *, interval: float = 0.005
) -> None:
    """:func:`wait_for` of a plain condition (in-process state: polled every 5 ms by default)."""

    async def check() -> bool:
        return predicate()

    await wait_for(check, within, what, interval=interval)
