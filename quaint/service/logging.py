"""structlog set-up: JSON lines on stdout (console renderer on a TTY), secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

_SECRET_MARKERS = ("password", "secret", "token", "api_key", "apikey", "authorization", "dsn")


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any key that looks like a credential."""
    for key in event_dict:
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = "***"
    return event_dict


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's logging (aiohttp, asyncpg, websockets).

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when ``stream`` is a TTY).
    """
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer(_json_dumps)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Third-party libraries are chatty at INFO (access logs, connection chatter).
    root.setLevel(max(numeric, logging.WARNING))


class LogThrottle:
    """Allow at most ``burst`` messages per key per ``interval_s``; count the rest.

    Sans-I/O: the caller passes the monotonic time. Used so that a flood of malformed
    frames produces a few log lines plus a summary, not a million lines.
    """

    def __init__(self, interval_s: float = 10.0, burst: int = 5) -> None:
        self.interval_s = interval_s
        self.burst = burst
        self._windows: dict[str, tuple[float, int, int]] = {}

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """Return (log this one?, messages suppressed since the last one logged)."""
        start, count, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self.interval_s:
            start, count = now, 0
        if count < self.burst:
            self._windows[key] = (start, count + 1, 0)
            return True, suppressed
        self._windows[key] = (start, count, suppressed + 1)
        return False, suppressed + 1
