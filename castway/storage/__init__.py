"""Archive storage: a local directory or any S3 API (see ``base.py`` for the contract)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from castway.settings import Settings
from castway.storage.base import (
    IMMUTABLE,
    VOD_PLAYLIST,
    ObjectInfo,
    Storage,
    StorageError,
    content_type_for,
)
from castway.storage.local import LocalStorage
from castway.storage.s3 import S3Storage


def storage_from_url(url: str, *, s3_endpoint_url: str | None = None,
                     s3_region: str = "us-east-1") -> Storage:
    """``/path``, ``relative/path`` or ``file:///path`` -> LocalStorage;
    ``s3://bucket/prefix`` -> S3Storage."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket (s3://bucket/prefix)")
        return S3Storage(parts.netloc, unquote(parts.path).strip("/"),
                         endpoint_url=s3_endpoint_url, region=s3_region)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"storage URL {url!r}: file:// URLs must be local")
        return LocalStorage(Path(unquote(parts.path)))
    if "://" in url:
        raise ValueError(f"unsupported storage URL {url!r}: use a path, file:// or s3://")
    return LocalStorage(Path(url))


def open_storage(settings: Settings) -> Storage:
    """The archive storage at ``settings.effective_storage_url``."""
    return storage_from_url(settings.effective_storage_url,
                            s3_endpoint_url=settings.s3_endpoint_url,
                            s3_region=settings.s3_region)


__all__ = ["IMMUTABLE", "VOD_PLAYLIST", "LocalStorage", "ObjectInfo", "S3Storage", "Storage",
           "StorageError", "content_type_for", "open_storage", "storage_from_url"]
