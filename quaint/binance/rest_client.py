"""A thin REST client for the public spot market-data endpoints (no API key).

request -> parse -> typed result, or a typed error the caller can act on:

* :class:`RateLimited` (429) and :class:`IpBanned` (418) carry ``Retry-After``;
* :class:`ServerError` (5xx), :class:`TransportError` (timeouts, connection
  failures) and :class:`MalformedResponse` (a body that does not parse) are
  transient: retry with backoff;
* :class:`ApiRejected` (any other 4xx, e.g. -1121 invalid symbol) is permanent.

The client never retries or sleeps: rate control and retry policy belong to the caller.
Every answer reports ``X-MBX-USED-WEIGHT-1M`` when the exchange sent it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from quaint.binance.errors import ProtocolError
from quaint.binance.models import KlineColumns
from quaint.binance.parse import parse_api_error, parse_timestamp
from quaint.binance.rest_parse import parse_rest_kline_columns
from quaint.binance.universe import ListedSymbol, UniverseError, parse_listed
from quaint.service.retry import parse_retry_after

KLINES_PATH = "/api/v3/klines"
TIME_PATH = "/api/v3/time"
EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
_MAX_BODY_BYTES = 8 << 20
# The whole market's exchangeInfo: ~2 kB per symbol, a few thousand symbols.
_MAX_EXCHANGE_INFO_BYTES = 64 << 20
_DEFAULT_RETRY_AFTER_S = 60.0


class RestError(Exception):
    """Base of every error :class:`RestClient` raises."""

    def __init__(self, message: str, *, status: int | None = None, used_weight: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.used_weight = used_weight


class RateLimited(RestError):
    """429: the request weight or request rate limit was exceeded."""

    def __init__(self, retry_after: float, used_weight: int | None = None) -> None:
        super().__init__(f"rate limited; retry after {retry_after:g} s", status=429, used_weight=used_weight)
        self.retry_after = retry_after


class IpBanned(RestError):
    """418: the IP is banned (after ignoring 429s) until Retry-After has passed."""

    def __init__(self, retry_after: float, used_weight: int | None = None) -> None:
        super().__init__(f"IP banned for {retry_after:g} s", status=418, used_weight=used_weight)
        self.retry_after = retry_after


class ServerError(RestError):
    """5xx: the exchange failed; the request may succeed later."""


class TransportError(RestError):
    """Timeout or connection failure before a complete answer arrived."""


class MalformedResponse(RestError):
    """A 2xx body that does not follow the documented shape."""


class ApiRejected(RestError):
    """A 4xx the exchange will keep refusing (bad symbol, bad parameters)."""

    def __init__(self, status: int, code: int | None, msg: str, used_weight: int | None = None) -> None:
        super().__init__(f"HTTP {status} code={code} {msg}", status=status, used_weight=used_weight)
        self.code = code
        self.msg = msg


@dataclass(frozen=True, slots=True)
class KlinesPage:
    rows: KlineColumns
    used_weight: int | None


@dataclass(frozen=True, slots=True)
class ServerTime:
    server_ms: int  # the exchange's clock when it answered
    used_weight: int | None


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit_type: str  # REQUEST_WEIGHT | RAW_REQUESTS | ORDERS
    interval: str  # SECOND | MINUTE | DAY
    interval_num: int
    limit: int

    @property
    def window_s(self) -> int:
        return {"SECOND": 1, "MINUTE": 60, "DAY": 86_400}.get(self.interval, 60) * self.interval_num


@dataclass(frozen=True, slots=True)
class ExchangeLimits:
    rate_limits: list[RateLimit]
    used_weight: int | None

    def weight_per_minute(self) -> int | None:
        for r in self.rate_limits:
            if r.limit_type == "REQUEST_WEIGHT" and r.window_s == 60:
                return r.limit
        return None


def parse_rate_limits(body: object) -> list[RateLimit]:
    """``rateLimits`` of an exchangeInfo body."""
    if not isinstance(body, Mapping):
        raise ProtocolError("body", "expected an object")
    items = body.get("rateLimits")
    if not isinstance(items, list):
        raise ProtocolError("rateLimits", "expected an array")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ProtocolError(f"rateLimits[{i}]", "expected an object")
        kind, interval, num, limit = (
            item.get("rateLimitType"),
            item.get("interval"),
            item.get("intervalNum"),
            item.get("limit"),
        )
        if not (isinstance(kind, str) and isinstance(interval, str)):
            raise ProtocolError(f"rateLimits[{i}]", "expected rateLimitType and interval strings")
        if type(num) is not int or type(limit) is not int or num <= 0 or limit <= 0:
            raise ProtocolError(f"rateLimits[{i}]", "expected positive intervalNum and limit")
        out.append(RateLimit(kind, interval, num, limit))
    return out


def parse_server_time(body: object) -> int:
    """``{"serverTime": ms}`` of ``GET /api/v3/time`` -> ms."""
    if not isinstance(body, Mapping):
        raise ProtocolError("body", "expected an object")
    if "serverTime" not in body:
        raise ProtocolError("serverTime", "missing")
    return parse_timestamp(body["serverTime"], "serverTime")


def _used_weight(headers: Mapping[str, str]) -> int | None:
    raw = headers.get(USED_WEIGHT_HEADER)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str]) -> float:
    return parse_retry_after(headers.get("Retry-After"), _DEFAULT_RETRY_AFTER_S)


def _decode_json(body: bytes) -> Any:
    """The standard library's decoder, not orjson: orjson (yyjson) allocates a document
    buffer of about 12 times the input up front, 2 MB for a 170 kB page of 1000 klines,
    and glibc keeps heap that size around once it has been freed (the gap handler's RSS
    after a backfill, ``python -m bench memory``). The stdlib's peak is the decoded objects
    themselves, at 0.6 ms a page instead of 0.3 ms. What it accepts beyond orjson (NaN,
    huge integers, UTF-16 bodies) the parsers refuse or the final-row check never stores."""
    return json.loads(body)


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, but never more than the cap (+1 byte, to tell it was exceeded)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    return b"".join(chunks)


class RestClient:
    """Uses the caller's session (one per process); owns nothing."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 10.0) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _get(
        self, path: str, params: Mapping[str, str], cap: int = _MAX_BODY_BYTES
    ) -> tuple[Any, int | None]:
        url = self._base + path
        try:
            async with self._session.get(url, params=params, timeout=self._timeout) as resp:
                status, headers = resp.status, resp.headers
                body = await _read_capped(resp, cap)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(f"{path}: {type(exc).__name__}: {exc}") from exc
        used = _used_weight(headers)
        if status == 429:
            raise RateLimited(_retry_after(headers), used)
        if status == 418:
            raise IpBanned(_retry_after(headers), used)
        if status >= 500:
            raise ServerError(f"{path}: HTTP {status}", status=status, used_weight=used)
        if len(body) > cap:
            raise MalformedResponse(f"{path}: body larger than {cap} bytes", status=status)
        try:
            decoded = _decode_json(body) if body else None
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; deep nesting
            decoded = None
            if 200 <= status < 300:
                raise MalformedResponse(f"{path}: invalid JSON", status=status, used_weight=used) from None
        if status >= 400:
            try:
                err = parse_api_error(decoded)
            except ProtocolError:
                raise ApiRejected(status, None, f"HTTP {status}", used) from None
            raise ApiRejected(status, err.code, err.msg, used)
        if not 200 <= status < 300:
            raise MalformedResponse(f"{path}: unexpected HTTP {status}", status=status, used_weight=used)
        return decoded, used

    async def klines(self, symbol: str, start_ms: int, end_ms: int | None, limit: int) -> KlinesPage:
        """1-minute klines with open time in [start_ms, end_ms] (end inclusive, as Binance)."""
        params = {"symbol": symbol, "interval": "1m", "startTime": str(start_ms), "limit": str(limit)}
        if end_ms is not None:
            params["endTime"] = str(end_ms)
        body, used = await self._get(KLINES_PATH, params)
        try:
            rows = parse_rest_kline_columns(body, symbol)
        except ProtocolError as exc:
            raise MalformedResponse(f"klines: {exc}", status=200, used_weight=used) from None
        return KlinesPage(rows, used)

    async def server_time(self) -> ServerTime:
        """The exchange's clock (``GET /api/v3/time``, weight 1)."""
        body, used = await self._get(TIME_PATH, {})
        try:
            server_ms = parse_server_time(body)
        except ProtocolError as exc:
            raise MalformedResponse(f"time: {exc}", status=200, used_weight=used) from None
        return ServerTime(server_ms, used)

    async def exchange_limits(self, symbol: str | None = None) -> ExchangeLimits:
        """``rateLimits`` from exchangeInfo (one symbol keeps the body small)."""
        body, used = await self._get(EXCHANGE_INFO_PATH, {"symbol": symbol} if symbol else {})
        try:
            limits = parse_rate_limits(body)
        except ProtocolError as exc:
            raise MalformedResponse(f"exchangeInfo: {exc}", status=200, used_weight=used) from None
        return ExchangeLimits(limits, used)

    async def listed_symbols(self) -> list[ListedSymbol]:
        """Every symbol of exchangeInfo with its status and quote asset (weight 20)."""
        body, used = await self._get(EXCHANGE_INFO_PATH, {}, _MAX_EXCHANGE_INFO_BYTES)
        try:
            return parse_listed(body)
        except UniverseError as exc:
            raise MalformedResponse(str(exc), status=200, used_weight=used) from None


__all__ = [
    "ApiRejected",
    "ExchangeLimits",
    "IpBanned",
    "KlinesPage",
    "MalformedResponse",
    "RateLimit",
    "RateLimited",
    "RestClient",
    "RestError",
    "ServerError",
    "ServerTime",
    "TransportError",
    "parse_rate_limits",
    "parse_server_time",
]
