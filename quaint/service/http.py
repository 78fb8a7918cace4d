"""The aiohttp application both services start from: ``/health`` and ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from quaint.service.health import HealthReport

# Called with the request's query parameters (a service may detail its report on request).
HealthProbe = Callable[[Mapping[str, str]], Awaitable[HealthReport]]

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
HEALTH_KEY: web.AppKey[HealthProbe] = web.AppKey("health_probe")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=str), status=status, content_type="application/json")


def json_error(status: int, message: str, field_name: str | None = None) -> web.Response:
    """Every API error is JSON: ``{"error": ..., "field": ...}``."""
    body: dict[str, Any] = {"error": message}
    if field_name is not None:
        body["field"] = field_name
    return json_response(body, status)


async def _health(request: web.Request) -> web.Response:
    report = await request.app[HEALTH_KEY](request.query)
    return json_response({"status": report.status, **report.body}, report.http_status)


async def _metrics(request: web.Request) -> web.Response:
    # Honour the scraper's Accept header (Prometheus asks for OpenMetrics when it can).
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(request.app[REGISTRY_KEY]), headers={"Content-Type": content_type})


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and wrong methods answer JSON like every other error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return json_error(exc.status, exc.reason)


def create_service_app(registry: CollectorRegistry, health: HealthProbe) -> web.Application:
    """A new app with ``/health`` and ``/metrics``; services add their own routes."""
    app = web.Application(middlewares=[json_errors])
    app[REGISTRY_KEY] = registry
    app[HEALTH_KEY] = health
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
