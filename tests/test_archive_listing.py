"""S3 ListObjects v1 answers of the archive's bucket (no I/O)."""

from __future__ import annotations

import pytest

from quaint.binance.archive import ArchiveFile
from quaint.binance.archive_listing import (
    ListedObject,
    ListPage,
    archive_files_in,
    continuation_marker,
    parse_list_page,
    symbols_in,
)
from quaint.binance.errors import ProtocolError

# Shaped as S3 answers a path-style ListObjects v1 request (namespace, element order, quoted ETag).
PAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>data.binance.vision</Name>
<Prefix>data/spot/monthly/klines/BTCUSDT/1m/</Prefix><Marker></Marker><MaxKeys>1000</MaxKeys>
<Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
<NextMarker>data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2017-09.zip.CHECKSUM</NextMarker>
<Contents><Key>data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2017-08.zip</Key>
<LastModified>2022-08-08T07:27:51.000Z</LastModified><ETag>&quot;5d7b0c4ad1a0ff2b0e0e0f7d2e7c9a44&quot;</ETag>
<Size>1012345</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2017-08.zip.CHECKSUM</Key>
<LastModified>2022-08-08T07:27:51.000Z</LastModified><Size>88</Size></Contents>
<Contents><Key>data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2017-09.zip</Key><Size>2000</Size></Contents>
<Contents><Key>data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2017-09.zip.CHECKSUM</Key></Contents>
<Contents><Key>data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2017-10.zip.CHECKSUM</Key></Contents>
<Contents><Key>data/spot/monthly/klines/BTCUSDT/1m/index.html</Key></Contents>
</ListBucketResult>"""


def test_a_page_of_files() -> None:
    page = parse_list_page(PAGE)
    assert page.is_truncated and len(page.objects) == 6 and page.common_prefixes == []
    first = page.objects[0]
    assert (first.size, first.etag) == (1012345, "5d7b0c4ad1a0ff2b0e0e0f7d2e7c9a44")
    assert first.last_modified == "2022-08-08T07:27:51.000Z"
    assert continuation_marker(page) == page.next_marker
    files = archive_files_in(page.objects)
    # index.html ignored; a CHECKSUM without its zip (2017-10) is not a file.
    assert [(f.file.label, f.size, f.has_checksum) for f in files] == [
        ("2017-08", 1012345, True),
        ("2017-09", 2000, True),
    ]
    assert files[0].file == ArchiveFile("BTCUSDT", 2017, 8)


def test_folders_and_paging_without_next_marker() -> None:
    body = b"""<ListBucketResult><IsTruncated>true</IsTruncated>
    <CommonPrefixes><Prefix>data/spot/monthly/klines/1INCHBTC/</Prefix></CommonPrefixes>
    <CommonPrefixes><Prefix>data/spot/monthly/klines/BTCUSDT/</Prefix></CommonPrefixes>
    </ListBucketResult>"""  # no namespace: some mirrors answer so
    page = parse_list_page(body)
    assert symbols_in(page.common_prefixes, "data/spot/monthly/klines/") == ["1INCHBTC", "BTCUSDT"]
    # Without NextMarker, S3's rule: continue after the last key or prefix of the page.
    assert continuation_marker(page) == "data/spot/monthly/klines/BTCUSDT/"
    mixed = ListPage([ListedObject("a/b", None, None, None)], ["a/c/"], True, None)
    assert continuation_marker(mixed) == "a/c/"
    assert continuation_marker(ListPage([], [], False, None)) is None
    with pytest.raises(ProtocolError, match="nothing to continue from"):
        continuation_marker(ListPage([], [], True, None))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>", "AccessDenied"),
        (b"<html><body>502 Bad Gateway</body></html>", "expected ListBucketResult"),
        (b"<ListBucketResult><IsTruncated>maybe</IsTruncated>", "not XML"),
        (b"<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>", "IsTruncated"),
        (b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>", "Key: missing"),
        (b"<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>", "Size"),
        (b"<ListBucketResult><CommonPrefixes></CommonPrefixes></ListBucketResult>", "Prefix: missing"),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><ListBucketResult>&a;</ListBucketResult>',
            "document type",
        ),
    ],
)
def test_what_is_not_a_listing_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_list_page(body)
