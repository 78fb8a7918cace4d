"""S3 ListObjects (v1) answers of the archive's bucket, sans-I/O.

``GET <bucket>/?prefix=data/spot/monthly/klines/BTCUSDT/1m/&delimiter=/[&marker=...]`` answers a
``ListBucketResult``: ``Contents`` (a ``Key``, and usually ``Size``, ``LastModified``, ``ETag``),
``CommonPrefixes`` (the "folders" one level down when a delimiter is given), and ``IsTruncated``.
A truncated page is continued from ``NextMarker`` (sent when a delimiter was given) or else from
the last key or prefix of the page, S3's documented rule for version 1.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from quaint.binance.archive import ArchiveFile, parse_key
from quaint.binance.errors import ProtocolError

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    size: int | None
    last_modified: str | None
    etag: str | None


@dataclass(frozen=True, slots=True)
class ListPage:
    objects: list[ListedObject]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str | None


@dataclass(frozen=True, slots=True)
class ListedFile:
    """An archive file the listing shows, with what the listing says about it."""

    file: ArchiveFile
    size: int | None  # of the zip, when the listing gives it
    last_modified: str | None
    has_checksum: bool  # its .CHECKSUM is listed too


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def parse_list_page(body: bytes) -> ListPage:
    """One ListObjects answer. An S3 ``<Error>`` document, anything but a ``ListBucketResult``
    and any document type declaration (S3 never sends one; it is how entity-expansion attacks
    come) are refused with a :class:`ProtocolError`."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ProtocolError("listing", "document type declarations are refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ProtocolError("listing", f"not XML ({exc})") from None
    tag = _local(root.tag)
    if tag == "Error":
        code, message = _text(root, "Code"), _text(root, "Message")
        raise ProtocolError("listing", f"S3 error {code}: {message}")
    if tag != "ListBucketResult":
        raise ProtocolError("listing", f"expected ListBucketResult, got {tag[:40]!r}")
    truncated = (_text(root, "IsTruncated") or "false").strip()
    if truncated not in ("true", "false"):
        raise ProtocolError("IsTruncated", f"expected true or false, got {truncated[:20]!r}")
    objects: list[ListedObject] = []
    prefixes: list[str] = []
    for child in root:
        name = _local(child.tag)
        if name == "Contents":
            key = _text(child, "Key")
            if not key:
                raise ProtocolError(f"Contents[{len(objects)}].Key", "missing")
            size_text = _text(child, "Size")
            if size_text is not None and not size_text.strip().isdigit():
                raise ProtocolError(f"Contents[{len(objects)}].Size", f"not a size: {size_text[:20]!r}")
            etag = _text(child, "ETag")
            objects.append(
                ListedObject(
                    key,
                    None if size_text is None else int(size_text),
                    _text(child, "LastModified"),
                    None if etag is None else etag.strip('"'),
                )
            )
        elif name == "CommonPrefixes":
            prefix = _text(child, "Prefix")
            if not prefix:
                raise ProtocolError(f"CommonPrefixes[{len(prefixes)}].Prefix", "missing")
            prefixes.append(prefix)
    return ListPage(objects, prefixes, truncated == "true", _text(root, "NextMarker") or None)


def continuation_marker(page: ListPage) -> str | None:
    """The ``marker`` of the next page, or ``None`` when this page was the last."""
    if not page.is_truncated:
        return None
    if page.next_marker:
        return page.next_marker
    last = max([o.key for o in page.objects[-1:]] + page.common_prefixes[-1:], default=None)
    if last is None:
        raise ProtocolError("listing", "truncated, but the page lists nothing to continue from")
    return last


def archive_files_in(objects: Iterable[ListedObject]) -> list[ListedFile]:
    """The archive files among listed keys (other keys are ignored), oldest first; a CHECKSUM
    listed without its zip is not a file."""
    zips: dict[ArchiveFile, ListedObject] = {}
    checksums: set[ArchiveFile] = set()
    for obj in objects:
        parsed = parse_key(obj.key)
        if parsed is None:
            continue
        file, is_checksum = parsed
        if is_checksum:
            checksums.add(file)
        else:
            zips[file] = obj
    return [
        ListedFile(f, o.size, o.last_modified, f in checksums)
        for f, o in sorted(zips.items(), key=lambda item: item[0].start_ms)
    ]


def symbols_in(prefixes: Iterable[str], parent: str) -> list[str]:
    """``data/spot/monthly/klines/BTCUSDT/`` under ``parent`` -> ``BTCUSDT``, sorted."""
    out = set()
    for prefix in prefixes:
        if prefix.startswith(parent):
            name = prefix[len(parent) :].rstrip("/")
            if name and "/" not in name:
                out.add(name)
    return sorted(out)
