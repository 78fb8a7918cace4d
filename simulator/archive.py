"""data.binance.vision on the simulator's own port (aiohttp shell over :mod:`simulator.archive_files`).

* ``GET /data/spot/{monthly|daily}/klines/<SYM>/1m/<SYM>-1m-<period>.zip`` and ``.zip.CHECKSUM``;
* ``GET /?prefix=...&delimiter=/&marker=...&max-keys=N``: the bucket's ListObjects v1 listing
  (pages of at most ``--archive-max-keys`` keys, so paging can be exercised);
* ``GET /_sim/archive``: what was served (requests, peak concurrent downloads, bytes, builds).

So ``ARCHIVE_BASE_URL=http://127.0.0.1:<port>`` points a client at it, listing included. Files are
made on request from the truth, a few kept (``--archive-cache-files``). Faults: per file (missing,
truncated, wrong CHECKSUM, header row, re-upload), slow answers and throttled downloads, and the
REST fault list (``/_sim/rest_errors`` with ``"path": "/data/"``) for 429/5xx answers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, OrderedDict
from dataclasses import dataclass

from aiohttp import web

from quaint.binance.archive import ArchiveFile, parse_key
from quaint.binance.models import MINUTE_MS
from simulator.archive_files import (
    MAX_KEYS,
    ArchiveCatalog,
    BuiltFile,
    ZipBuilder,
    checksum_body,
    error_xml,
    page_xml,
    select_page,
)
from simulator.state import STATE, SimState

_DAY_MS = 1440 * MINUTE_MS
_XML = "application/xml"
_THROTTLE_STEPS_PER_S = 20
CacheKey = tuple[ArchiveFile, int | None, bool, int, tuple[tuple[int, int, str | None], ...]]


@dataclass(eq=False)
class ArchiveServer:
    state: SimState
    catalog: ArchiveCatalog
    cache_files: int
    max_keys: int

    def __post_init__(self) -> None:
        self._cache: OrderedDict[CacheKey, BuiltFile] = OrderedDict()
        self._building: dict[CacheKey, asyncio.Lock] = {}
        self.requests: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.bytes_sent = 0
        self.builds = 0

    def _key(self, file: ArchiveFile) -> CacheKey:
        fault = self.state.faults.archive.of(file)
        outages = tuple(
            (r.start, r.end, r.symbol)
            for r in self.state.faults.outages
            if r.symbol in (None, file.symbol) and r.start < file.end_ms and r.end > file.start_ms
        )
        if fault is None:
            return file, None, False, 0, outages
        return file, fault.keep_rows, fault.header, fault.generation, outages

    async def built(self, file: ArchiveFile) -> BuiltFile:
        """The file's bytes as its faults say now (made once per variant; a few are cached)."""
        key = self._key(file)
        lock = self._building.setdefault(key, asyncio.Lock())
        try:
            async with lock:  # a second request for a file being made waits for it
                hit = self._cache.get(key)
                if hit is None:
                    hit = await self._build(file)
                    self._cache[key] = hit
                    while len(self._cache) > self.cache_files:
                        self._cache.popitem(last=False)
                self._cache.move_to_end(key)
                return hit
        finally:
            if not lock.locked():
                self._building.pop(key, None)

    async def _build(self, file: ArchiveFile) -> BuiltFile:
        self.builds += 1
        exchange, now = self.state.exchange, self.state.clock.now_ms()
        builder = ZipBuilder(file, self.state.faults.archive.of(file), self.catalog.published_ms(file))
        day = file.start_ms
        while day < file.end_ms and not builder.full:
            builder.add(exchange.truth(file.symbol, day, day + _DAY_MS, now))
            day += _DAY_MS
            await asyncio.sleep(0)  # a month is 31 days of work: let the stream go on meanwhile
        return builder.finish()

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "bytes_sent": self.bytes_sent,
            "builds": self.builds,
            "cached_files": len(self._cache),
            "faults": self.state.faults.archive.snapshot(),
        }


ARCHIVE = web.AppKey("simulator_archive", ArchiveServer)


def _xml(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type=_XML)


def _no_such_key(key: str) -> web.Response:
    return _xml(error_xml("NoSuchKey", "The specified key does not exist.", key), 404)


async def _before(request: web.Request, kind: str) -> web.Response | None:
    """Counting, injected latency, and an injected 429/5xx from the REST fault list."""
    server, faults = request.app[ARCHIVE], request.app[STATE].faults
    server.requests[kind] += 1
    if faults.archive.latency_s > 0:
        await asyncio.sleep(faults.archive.latency_s)  # injected latency, by design
    injected = faults.next_rest_fault(request.path)
    if injected is None:
        return None
    server.requests[f"injected_{injected.status}"] += 1
    code = "SlowDown" if injected.status in (429, 503) else "InternalError"
    headers = {"Retry-After": str(injected.retry_after_s)}
    return _xml(error_xml(code, "Please reduce your request rate."), injected.status, headers)


async def get_object(request: web.Request) -> web.StreamResponse:
    server, state = request.app[ARCHIVE], request.app[STATE]
    key = request.path.lstrip("/")
    parsed = parse_key(key)
    kind = "checksum" if parsed is not None and parsed[1] else "zip"
    server.in_flight += 1
    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
    try:
        failed = await _before(request, kind)
        if failed is not None:
            return failed
        if parsed is None or not server.catalog.exists(parsed[0], state.clock.now_ms()):
            server.requests["not_found"] += 1
            return _no_such_key(key)
        file, is_checksum = parsed
        built = await server.built(file)
        if is_checksum:
            digest = built.sha256
            if state.faults.archive.take_bad_checksum(file):
                digest = hashlib.sha256(b"not " + built.body).hexdigest()
            state.faults.archive.checksum_served(file)
            server.bytes_sent += len(body := checksum_body(digest, file))
            return web.Response(body=body, content_type="text/plain")
        return await _send(request, built)
    finally:
        server.in_flight -= 1


async def _send(request: web.Request, built: BuiltFile) -> web.StreamResponse:
    """The zip, at ``bytes_per_s`` when a throttle is set (a slow download, not a slow start)."""
    server, faults = request.app[ARCHIVE], request.app[STATE].faults.archive
    resp = web.StreamResponse(headers={"ETag": f'"{built.md5}"', "Content-Type": "application/zip"})
    resp.content_length = len(built.body)
    await resp.prepare(request)
    rate = faults.bytes_per_s
    step = len(built.body) if rate == 0 else max(1, rate // _THROTTLE_STEPS_PER_S)
    for offset in range(0, len(built.body), step):
        await resp.write(built.body[offset : offset + step])
        server.bytes_sent += min(step, len(built.body) - offset)
        if rate:
            await asyncio.sleep(step / rate)  # injected slowness, by design
    await resp.write_eof()
    return resp


async def list_objects(request: web.Request) -> web.Response:
    server, state = request.app[ARCHIVE], request.app[STATE]
    failed = await _before(request, "listing")
    if failed is not None:
        return failed
    query = request.query
    if query.get("list-type", "1") != "1":
        return _xml(error_xml("InvalidArgument", "Only ListObjects version 1 is served."), 400)
    raw_max = query.get("max-keys", str(MAX_KEYS))
    if not raw_max.isdigit():
        return _xml(
            error_xml("InvalidArgument", "Provided max-keys not an integer or within integer range"), 400
        )
    max_keys = min(int(raw_max), MAX_KEYS, server.max_keys)
    prefix, delimiter, marker = query.get("prefix", ""), query.get("delimiter", ""), query.get("marker", "")
    keys = server.catalog.keys(prefix, state.clock.now_ms())
    page = select_page(keys, prefix, delimiter, marker, max_keys)
    body = page_xml(page, prefix, delimiter, marker, max_keys, server.catalog)
    server.bytes_sent += len(body)
    return _xml(body)


async def archive_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[ARCHIVE].snapshot())


def add_routes(app: web.Application) -> None:
    state = app[STATE]
    s = state.settings
    catalog = ArchiveCatalog(
        state.exchange,
        state.faults.archive,
        daily_delay_ms=int(s.archive_daily_delay_h * 3_600_000),
        monthly_delay_ms=int(s.archive_monthly_delay_h * 3_600_000),
    )
    app[ARCHIVE] = ArchiveServer(state, catalog, s.archive_cache_files, s.archive_max_keys)
    app.router.add_get("/", list_objects)
    app.router.add_get("/data/{key:.+}", get_object)
    app.router.add_get("/_sim/archive", archive_stats)
