"""Archive storage: durable objects under string keys (local directory or S3).

Two implementations honour this contract (``tests/castway/test_storage.py`` runs one
suite against both): :class:`castway.storage.local.LocalStorage` and
:class:`castway.storage.s3.S3Storage`. Writes are atomic: a reader sees the whole
object or none of it. The interface is synchronous (boto3 is); async callers run it on
a :class:`castway.storage.pool.StoragePool` of their own, never the default executor.

The keys castway stores under are built and parsed by :mod:`castway.layout` (the key
layout); this contract takes any key :mod:`castway.storage.keys` accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class StorageError(Exception):
    """Storage is unavailable or refused the operation (retry later)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None = None
    cache_control: str | None = None


# Cache-Control that CloudFront honours for each kind of object.
IMMUTABLE = "public, max-age=31536000, immutable"
VOD_PLAYLIST = "public, max-age=60"


def content_type_for(key: str) -> str:
    """The Content-Type of an object from its name (RFC 8216bis 4; ISO BMFF; MPEG-TS)."""
    ext = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    return {
        "m3u8": "application/vnd.apple.mpegurl",
        "m4s": "video/iso.segment",
        "mp4": "video/mp4",
        "ts": "video/mp2t",
        "aac": "audio/aac",
        "jpg": "image/jpeg",
        "png": "image/png",
        "vtt": "text/vtt",
        "json": "application/json",
    }.get(ext, "application/octet-stream")


class Storage(Protocol):
    def put(self, key: str, data: bytes, *, content_type: str | None = None,
            cache_control: str | None = IMMUTABLE) -> None:
        """Store atomically; content type defaults to ``content_type_for(key)``."""

    def put_file(self, key: str, path: Path, *, content_type: str | None = None,
                 cache_control: str | None = IMMUTABLE) -> None:
        """``put`` of the file at ``path``, streamed (objects too big for memory, e.g. an
        MP4 export; multipart on S3)."""

    def get(self, key: str) -> bytes | None:
        """The whole object, or None if absent."""

    def get_range(self, key: str, start: int, end: int | None) -> bytes | None:
        """Bytes ``start``..``end`` inclusive (HTTP semantics); None if absent."""

    def head(self, key: str) -> ObjectInfo | None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None:
        """Remove if present (no error if absent)."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under ``prefix``, in key order."""

    def url_for(self, key: str) -> str | None:
        """A direct URL (file:// or s3 endpoint) where one exists, else None."""

    def ping(self) -> bool:
        """True when the backing store answers (readiness)."""
