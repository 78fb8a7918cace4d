"""Test support for running services: a free TCP port, and either service run by the real
lifecycle (:func:`quaint.service.lifecycle.serve`) inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic

from aiohttp import web

from quaint.service.lifecycle import S, ServiceSpec, serve


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served(Generic[S]):
    app: web.Application
    service: S
    port: int
    stop: asyncio.Event
    task: asyncio.Task[int]  # serve()'s: its result is the exit code

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def shutdown(self) -> int:
        """Stop as SIGTERM would; the exit code."""
        self.stop.set()
        return await self.task


@asynccontextmanager
async def served(spec: ServiceSpec[S]) -> AsyncIterator[Served[S]]:
    """``serve(spec)`` in this loop, once it listens; stopped at the end as SIGTERM would.
    ``RuntimeError`` with the exit code if it ends before it listens."""
    stop = asyncio.Event()
    ready: asyncio.Future[tuple[web.Application, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(spec, stop=stop, on_ready=lambda app, port: ready.set_result((app, port)))
    )
    waiting: list[asyncio.Future[Any]] = [task, ready]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        raise RuntimeError(f"{spec.name} did not start (exit code {task.result()})")
    app, port = ready.result()
    handle = Served(app, app[spec.key], port, stop, task)
    try:
        yield handle
    finally:
        if not task.done():
            stop.set()
            await asyncio.wait([task])
