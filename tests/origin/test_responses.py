"""origin.responses: byte ranges and validators (RFC 9110), pure."""

from __future__ import annotations

import pytest

from origin.responses import (
    ByteRange,
    RangeNotSatisfiable,
    etag_for,
    not_modified,
    parse_range,
)


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 100, None),
    ("bytes=0-9", 100, ByteRange(0, 9)),
    ("bytes=10-", 100, ByteRange(10, 99)),
    ("bytes=-10", 100, ByteRange(90, 99)),
    ("bytes=-500", 100, ByteRange(0, 99)),
    ("bytes=90-500", 100, ByteRange(90, 99)),
    ("bytes=99-99", 100, ByteRange(99, 99)),
    ("bytes=5-1", 100, None),           # invalid range-spec: ignored
    ("bytes=0-1,5-6", 100, None),       # several ranges: the whole representation
    ("items=0-1", 100, None),           # unknown unit: ignored
    ("bytes=-", 100, None),
    ("bytes=a-b", 100, None),
])
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=200-300", 100),
                                              ("bytes=-0", 100), ("bytes=-5", 0),
                                              ("bytes=0-", 0)])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_etags_are_quoted_and_content_based() -> None:
    assert etag_for(b"a") == etag_for("a")
    assert etag_for(b"a") != etag_for(b"b")
    assert etag_for(b"a").startswith('"') and etag_for(b"a").endswith('"')


@pytest.mark.parametrize(("header", "etag", "matches"), [
    ('"a"', '"a"', True), ('W/"a"', '"a"', True), ('"a"', 'W/"a"', True),
    ('"b", "a"', '"a"', True), ("*", '"a"', True), ('"b"', '"a"', False), (None, '"a"', False),
])
def test_if_none_match_uses_weak_comparison(header: str | None, etag: str,
                                            matches: bool) -> None:
    from starlette.requests import Request

    headers = [] if header is None else [(b"if-none-match", header.encode())]
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                       "query_string": b""})
    assert not_modified(request, etag) is matches
