"""CDN-correct HTTP responses: Cache-Control per kind, ETag/304, byte ranges (RFC 9110).

Everything a viewer fetches is plain cacheable HTTP so that a CDN (CloudFront) absorbs
the audience: media under URLs that contain the broadcast id never change (immutable);
live playlists are fresh for a second at most; errors are cached only briefly so that a
playlist which appears a moment later is not hidden by a cached 404.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from castway.storage.base import IMMUTABLE, VOD_PLAYLIST, content_type_for


class CacheKind(StrEnum):
    MEDIA = IMMUTABLE  # segments, parts, init segments, posters: never change
    LIVE_PLAYLIST = "public, max-age=1"
    # A blocking reload answers a query naming a future part; the answer stays correct
    # (a later playlist is also a valid answer), so the CDN may serve it to everyone asking.
    # Only briefly: viewers ask for a given part within about one part duration of each
    # other, and a client that asks the same URL again (video.js VHS does, when it takes
    # a playlist with one more part for an unchanged one) must not get the old answer for
    # long: at max-age=6 VHS froze its playlist for ~6 s and played 6.4 s behind live
    # (benchmarks/players.py; BENCHMARKS.md, real players).
    BLOCKING_PLAYLIST = "public, max-age=1"
    VOD_PLAYLIST = VOD_PLAYLIST
    ERROR = "public, max-age=1"
    NO_STORE = "no-store"
    PAGE = "public, max-age=5"

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def etag_for(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return '"' + hashlib.blake2b(raw, digest_size=12).hexdigest() + '"'


def not_modified(request: Request, etag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2): weak comparison, '*' matches anything."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag.removeprefix("W/") in tags


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One ``bytes=`` range of RFC 9110 14.1.2, resolved against ``size``.

    None means "serve the whole representation" (no header, several ranges, or a unit or
    syntax we ignore, as 14.2 allows); RangeNotSatisfiable means 416.
    """
    if header is None:
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # invalid range-spec: ignored
    if start >= size:
        raise RangeNotSatisfiable
    return ByteRange(start, end)


def bytes_response(request: Request, data: bytes, *, key: str, cache: CacheKind | str,
                   etag: str | None = None, content_type: str | None = None) -> Response:
    """A media or playlist body with ETag/304, Range/206/416 and HEAD support. ``cache``
    is the Cache-Control of the representation (200, 206, 304); a 416 is an error."""
    etag = etag or etag_for(data)
    headers = {"cache-control": str(cache), "etag": etag, "accept-ranges": "bytes"}
    media_type = content_type or content_type_for(key)
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    size = len(data)
    status = 200
    body = data
    if request.method in ("GET", "HEAD"):
        try:
            byte_range = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable:
            headers["content-range"] = f"bytes */{size}"
            # An error, briefly cacheable; but never shared when the object is private
            # (it tells the object's size).
            headers["cache-control"] = CacheKind.NO_STORE.value \
                if str(cache).startswith("private") else CacheKind.ERROR.value
            return Response(status_code=416, headers=headers)
        if byte_range is not None and _if_range_ok(request, etag):
            body = data[byte_range.start:byte_range.end + 1]
            headers["content-range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
            status = 206
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        return Response(status_code=status, headers=headers, media_type=media_type)
    return Response(content=body, status_code=status, headers=headers, media_type=media_type)


def _if_range_ok(request: Request, etag: str) -> bool:
    """If-Range (RFC 9110 13.1.5): a range applies only if the (strong) validator still
    matches."""
    if_range = request.headers.get("if-range")
    return if_range is None or (not etag.startswith("W/") and if_range.strip() == etag)


def error_response(status: int, detail: str, *, cache: CacheKind = CacheKind.ERROR,
                   headers: dict[str, str] | None = None) -> Response:
    all_headers = {"cache-control": cache.value, **(headers or {})}
    return JSONResponse({"detail": detail}, status_code=status, headers=all_headers)
