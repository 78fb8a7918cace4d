"""The archive source over HTTP (aiohttp): listing, verified downloads, parsing in bounded memory.

What fetching one file came to is a value (:data:`quaint.binance.archive.FileResult`): ok, short,
missing (404), checksum mismatch, malformed. The caller decides what to do about each (REST for
what an archive lacks). Only transport failures raise, classified:

* :class:`ArchiveUnavailable`: 429, 5xx, timeouts or connection failures outlasted the retries
  (capped, jittered backoff from ``backoff``; a ``Retry-After`` is honoured, up to a cap);
* :class:`ArchiveRejected`: any other 4xx (a 403, a 400): asking again will not help;
* :class:`ListingMalformed`: a listing answer that is not a usable ListObjects page.

Memory: at most ``concurrency`` files are in flight. Each is downloaded once into a spool (in
memory up to ``spool_bytes``, on disk beyond), hashed as it arrives, then unzipped and parsed row
by row; :meth:`ArchiveClient.stream` hands the rows on in chunks of ``chunk_rows``, so neither the
CSV nor a whole file's columns are ever held.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TypeVar

import aiohttp

from quaint.binance.archive import (
    PUBLIC_BASE_URL,
    ArchiveChecksumMismatch,
    ArchiveFile,
    ArchiveMalformed,
    ArchiveMissing,
    ArchiveOk,
    ArchiveShort,
    FileResult,
    Period,
    archive_prefix,
    default_listing_url,
    parse_checksum,
)
from quaint.binance.archive_csv import ArchiveReader, concat_columns
from quaint.binance.archive_listing import (
    ListedFile,
    ListedObject,
    archive_files_in,
    continuation_marker,
    parse_list_page,
    symbols_in,
)
from quaint.binance.errors import ProtocolError
from quaint.binance.models import KlineColumns
from quaint.service.retry import jittered_backoff, parse_retry_after

DEFAULT_CONCURRENCY = 4
_CHECKSUM_MAX_BYTES = 4096
_LISTING_MAX_BYTES = 8 << 20  # a page of 1000 keys is about 300 kB
_MAX_PAGES = 100_000
_READ_CHUNK = 64 * 1024

Sink = Callable[[KlineColumns], Awaitable[None]]
Backoff = Callable[[], Iterator[float]]
T = TypeVar("T")


class ArchiveError(Exception):
    """Base of what :class:`ArchiveClient` raises."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ArchiveUnavailable(ArchiveError):
    """Transient failures (429, 5xx, timeouts, resets) outlasted the retry budget."""

    def __init__(self, message: str, *, status: int | None, attempts: int) -> None:
        super().__init__(message, status=status)
        self.attempts = attempts


class ArchiveRejected(ArchiveError):
    """A 4xx other than 404 and 429 (or a 404 of the listing endpoint itself): permanent."""


class ListingMalformed(ArchiveError):
    """A listing answer that does not parse, or pages that do not advance."""


@dataclass(frozen=True, slots=True)
class ListResult:
    objects: list[ListedObject]
    common_prefixes: list[str]
    pages: int


class _NotFound:
    """A 404: a value, not an exception, since it is a normal answer for a file."""


class _TooLarge(Exception):
    pass


_NOT_FOUND = _NotFound()


def _default_backoff() -> Iterator[float]:
    return jittered_backoff(0.5, 30.0)


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > cap:
            raise _TooLarge(f"answer larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class ArchiveClient:
    """Uses the caller's session; owns nothing but its concurrency slots."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str = PUBLIC_BASE_URL,
        *,
        listing_url: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int = 5,
        checksum_attempts: int = 2,
        backoff: Backoff = _default_backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        read_timeout_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        chunk_rows: int = 5000,
        spool_bytes: int = 8 << 20,
        max_keys: int | None = None,
    ) -> None:
        if concurrency < 1 or max_attempts < 1 or checksum_attempts < 1 or chunk_rows < 1:
            raise ValueError("concurrency, max_attempts, checksum_attempts and chunk_rows must be >= 1")
        if max_keys is not None and not 1 <= max_keys <= 1000:
            raise ValueError("max_keys must be within [1, 1000] (S3's page limit)")
        self._session = session
        self.base_url = base_url.rstrip("/")
        self.listing_url = (listing_url or default_listing_url(self.base_url)).rstrip("/")
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._checksum_attempts = checksum_attempts
        self._backoff = backoff
        self._sleep = sleep
        # No total timeout (a monthly file takes as long as it takes); a stalled read fails.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=read_timeout_s, sock_read=read_timeout_s
        )
        self._max_retry_after = max_retry_after_s
        self._chunk_rows = chunk_rows
        self._spool_bytes = spool_bytes
        self._max_keys = max_keys

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    # ---- HTTP with classified retries --------------------------------------------------------

    async def _get(
        self,
        url: str,
        params: Mapping[str, str] | None,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T | _NotFound:
        """GET ``url`` and ``read`` a 200's body (again from the start on each attempt); a 404
        is :data:`_NOT_FOUND`; 429/5xx/timeouts/resets are retried as the module says."""
        delays: Iterator[float] | None = None
        for attempt in range(1, self._max_attempts + 1):
            retry_after: str | None = None
            status: int | None = None
            try:
                async with self._session.get(url, params=params, timeout=self._timeout) as resp:
                    status = resp.status
                    if status == 200:
                        return await read(resp)
                    if status == 404:
                        return _NOT_FOUND
                    if status != 429 and status < 500:
                        raise ArchiveRejected(f"{url}: HTTP {status}", status=status)
                    retry_after = resp.headers.get("Retry-After")
                    failure = f"HTTP {status}"
            except (TimeoutError, aiohttp.ClientError) as exc:  # incl. a body cut short mid-way
                failure = f"{type(exc).__name__}: {exc}"
            if attempt == self._max_attempts:
                raise ArchiveUnavailable(
                    f"{url}: {failure} ({attempt} attempts)", status=status, attempts=attempt
                )
            delays = delays or self._backoff()
            delay = next(delays)
            if retry_after is not None:
                delay = min(self._max_retry_after, parse_retry_after(retry_after, delay))
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    # ---- listing --------------------------------------------------------------------------------

    async def list_objects(self, prefix: str, delimiter: str = "/") -> ListResult:
        """Every key and common prefix under ``prefix``, all pages (``marker`` paging)."""
        objects: list[ListedObject] = []
        prefixes: list[str] = []
        marker: str | None = None
        for pages in range(1, _MAX_PAGES + 1):
            params = {"prefix": prefix, "delimiter": delimiter}
            if marker is not None:
                params["marker"] = marker
            if self._max_keys is not None:
                params["max-keys"] = str(self._max_keys)
            try:
                async with self._slots:
                    body = await self._get(
                        self.listing_url + "/", params, lambda r: _read_capped(r, _LISTING_MAX_BYTES)
                    )
            except _TooLarge as exc:
                raise ListingMalformed(f"listing {prefix!r}: {exc}") from None
            if isinstance(body, _NotFound):
                raise ArchiveRejected(f"{self.listing_url}: HTTP 404 for the listing itself", status=404)
            try:
                page = parse_list_page(body)
                following = continuation_marker(page)
            except ProtocolError as exc:
                raise ListingMalformed(f"listing {prefix!r}: {exc}") from None
            objects += page.objects
            prefixes += page.common_prefixes
            if following is None:
                return ListResult(objects, prefixes, pages)
            if marker is not None and following <= marker:
                raise ListingMalformed(f"listing {prefix!r}: marker did not advance past {marker!r}")
            marker = following
        raise ListingMalformed(f"listing {prefix!r}: more than {_MAX_PAGES} pages")

    async def list_files(self, symbol: str, period: Period) -> list[ListedFile]:
        """The published files of ``symbol`` for ``period``, oldest first."""
        return archive_files_in((await self.list_objects(archive_prefix(symbol, period))).objects)

    async def list_symbols(self, period: Period = "monthly") -> list[str]:
        """Every symbol with a folder of ``period`` files (renamed and delisted ones included)."""
        parent = f"data/spot/{period}/klines/"
        return symbols_in((await self.list_objects(parent)).common_prefixes, parent)

    # ---- files ----------------------------------------------------------------------------------

    async def fetch(self, file: ArchiveFile) -> FileResult:
        """:meth:`stream` with the rows collected into the result's ``columns``. A monthly
        file's columns are tens of MB: a bootstrap streams instead."""
        chunks: list[KlineColumns] = []

        async def collect(chunk: KlineColumns) -> None:
            chunks.append(chunk)

        result = await self.stream(file, collect)
        if isinstance(result, ArchiveOk):
            return ArchiveOk(
                file, result.sha256, result.size, result.coverage, concat_columns(file.symbol, chunks)
            )
        if isinstance(result, ArchiveShort):
            return ArchiveShort(
                file, result.sha256, result.size, result.coverage, concat_columns(file.symbol, chunks)
            )
        return result

    async def stream(self, file: ArchiveFile, sink: Sink) -> FileResult:
        """Download ``file`` and its CHECKSUM, verify, then parse it, awaiting ``sink`` with each
        chunk of rows (oldest first). On a mismatch both are fetched again, up to
        ``checksum_attempts`` times in all (a re-upload between the two downloads heals so)."""
        async with self._slots:
            mismatch: ArchiveChecksumMismatch | None = None
            for attempt in range(1, self._checksum_attempts + 1):
                answer = await self._get(
                    self.url(file.checksum_key), None, lambda r: _read_capped(r, _CHECKSUM_MAX_BYTES)
                )
                if isinstance(answer, _NotFound):
                    return ArchiveMissing(file, file.checksum_key)
                try:
                    expected = parse_checksum(answer, file.name)
                except ProtocolError as exc:
                    return ArchiveMalformed(file, str(exc), 0)
                with tempfile.SpooledTemporaryFile(max_size=self._spool_bytes) as spool:
                    try:
                        digest = await self._get(
                            self.url(file.key), None, lambda r: self._download(r, spool, file)
                        )
                    except _TooLarge as exc:
                        return ArchiveMalformed(file, f"zip: {exc}", 0)
                    if isinstance(digest, _NotFound):
                        return ArchiveMissing(file, file.key)
                    actual, size = digest
                    if actual != expected:
                        mismatch = ArchiveChecksumMismatch(file, expected, actual, attempt)
                        continue
                    return await self._parse(file, spool, actual, size, sink)
            assert mismatch is not None
            return mismatch

    async def _download(
        self, resp: aiohttp.ClientResponse, spool: IO[bytes], file: ArchiveFile
    ) -> tuple[str, int]:
        """The body into ``spool`` (emptied first: this may be a retry), hashed as it arrives."""
        spool.seek(0)
        spool.truncate()
        sha = hashlib.sha256()
        size = 0
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > file.max_bytes:
                raise _TooLarge(f"larger than {file.max_bytes} bytes, too large for {file.label}")
            sha.update(chunk)
            spool.write(chunk)
        return sha.hexdigest(), size

    async def _parse(
        self, file: ArchiveFile, spool: IO[bytes], sha256: str, size: int, sink: Sink
    ) -> FileResult:
        spool.seek(0)
        delivered = 0
        try:
            with ArchiveReader(spool, file, self._chunk_rows) as reader:
                while (chunk := reader.next_chunk()) is not None:
                    delivered += len(chunk)
                    await sink(chunk)  # also lets the loop run between chunks
                coverage = reader.coverage()
        except ProtocolError as exc:
            return ArchiveMalformed(file, str(exc), delivered)
        if coverage.complete:
            return ArchiveOk(file, sha256, size, coverage, None)
        return ArchiveShort(file, sha256, size, coverage, None)


__all__ = [
    "DEFAULT_CONCURRENCY",
    "ArchiveClient",
    "ArchiveError",
    "ArchiveRejected",
    "ArchiveUnavailable",
    "ListResult",
    "ListingMalformed",
    "Sink",
]
