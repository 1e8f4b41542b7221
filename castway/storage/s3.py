"""Archive storage on any S3 API (AWS S3, MinIO, moto) through boto3.

Every ``put_object`` carries the object's Content-Type and Cache-Control, which S3
returns on GET and CloudFront honours. A PUT is atomic on S3 itself: readers see the
old object or the new one. The client is tuned to notice an outage fast rather than
hang a transcoder or archiver: short connect/read timeouts and two attempts in
botocore's standard retry mode; anything that still fails (connection refused, timeout,
5xx, throttling, access denied) is raised as :class:`StorageError` for the caller's own
retry policy.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from castway.storage.base import IMMUTABLE, ObjectInfo, StorageError, content_type_for
from castway.storage.keys import check_key, check_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 2  # botocore "standard" mode: the first try plus one retry
DELETE_BATCH = 1000  # the most keys DeleteObjects takes in one request
MULTIPART_THRESHOLD = 64 * 1024 * 1024  # put_file: bigger files go up in parts
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (all but the last)

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range {start}-{'' if end is None else end}")


def make_s3_client(*, endpoint_url: str | None = None, region: str = "us-east-1",
                   config: Config | None = None, **session_kwargs: Any) -> S3Client:
    """A boto3 S3 client with castway's timeouts and retries (``config`` overrides them).

    ``session_kwargs`` go to ``boto3.session.Session`` (e.g. explicit credentials);
    by default credentials come from boto3's usual chain (environment, profile, role).
    A custom endpoint (MinIO, moto) gets path-style addressing.
    """
    defaults = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
        max_pool_connections=32,
    )
    if config is not None:
        defaults = defaults.merge(config)
    session = boto3.session.Session(**session_kwargs)
    return session.client("s3", endpoint_url=endpoint_url, region_name=region,
                          config=defaults)


class S3Storage:
    """:class:`castway.storage.base.Storage` in ``bucket`` under the key ``prefix``."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str = "us-east-1", client: S3Client | None = None, *,
                 multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        prefix = prefix.strip("/")
        if prefix:
            check_prefix(prefix)
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self._client = client or make_s3_client(endpoint_url=endpoint_url, region=region)
        self._endpoint_url = endpoint_url or (client.meta.endpoint_url if client else None)
        part = max(multipart_threshold, MIN_PART_SIZE)
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=part, max_concurrency=4)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> S3Client:
        return self._client

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        try:
            yield
        except ClientError as e:
            logger.warning("S3 request failed", extra={"op": op, "bucket": self.bucket,
                                                       "key": key, "code": _code(e)})
            raise StorageError(f"S3 {op} {key!r} failed: {e}") from e
        except (BotoCoreError, OSError) as e:
            logger.warning("S3 unreachable", extra={"op": op, "bucket": self.bucket,
                                                    "key": key, "error": str(e)})
            raise StorageError(f"S3 {op} {key!r} failed: {e}") from e

    # -- writing --

    def put(self, key: str, data: bytes, *, content_type: str | None = None,
            cache_control: str | None = IMMUTABLE) -> None:
        full = self._full(key)
        extra: dict[str, str] = {}
        if cache_control is not None:
            extra["CacheControl"] = cache_control
        with self._errors("put", key):
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                    ContentType=content_type or content_type_for(key),
                                    **extra)  # type: ignore[arg-type]

    def put_file(self, key: str, path: Path, *, content_type: str | None = None,
                 cache_control: str | None = IMMUTABLE) -> None:
        """Streams the file up, in parts above ``multipart_threshold`` (the object appears
        only when the upload completes)."""
        full = self._full(key)
        extra: dict[str, str] = {"ContentType": content_type or content_type_for(key)}
        if cache_control is not None:
            extra["CacheControl"] = cache_control
        with self._errors("put_file", key):
            try:
                self._client.upload_file(str(path), self.bucket, full, ExtraArgs=extra,
                                         Config=self._transfer)
            except S3UploadFailedError as e:
                raise StorageError(f"S3 put_file {key!r} failed: {e}") from e

    # -- reading --

    def get(self, key: str) -> bytes | None:
        full = self._full(key)
        with self._errors("get", key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=full)
            except ClientError as e:
                if _code(e) in _MISSING_CODES:
                    return None
                raise
            return _read_body(response)

    def get_range(self, key: str, start: int, end: int | None) -> bytes | None:
        """Bytes ``start``..``end`` inclusive, clipped to the object; b"" when ``start``
        is at or past its end."""
        _check_range(start, end)
        full = self._full(key)
        header = f"bytes={start}-{'' if end is None else end}"
        with self._errors("get_range", key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=full,
                                                   Range=header)
            except ClientError as e:
                if _code(e) in _MISSING_CODES:
                    return None
                if _code(e) == "InvalidRange":  # 416: the object exists but is shorter
                    return b""
                raise
            return _read_body(response)

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        with self._errors("head", key):
            try:
                r = self._client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as e:
                if _code(e) in _MISSING_CODES:
                    return None
                raise
        return ObjectInfo(key=key, size=int(r["ContentLength"]),
                          content_type=r.get("ContentType"),
                          cache_control=r.get("CacheControl"))

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        cut = len(self.prefix)
        with self._errors("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(key=obj["Key"][cut:], size=int(obj["Size"]))

    # -- deleting --

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=full)

    def _delete_batch(self, keys: builtins.list[str], prefix: str) -> int:
        with self._errors("delete_prefix", prefix):
            r = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = r.get("Errors", [])
        if errors:
            first = errors[0]
            raise StorageError(f"S3 delete_prefix {prefix!r}: {len(errors)} of {len(keys)} "
                               f"objects not deleted, e.g. {first.get('Key')!r}: "
                               f"{first.get('Code')} {first.get('Message')}")
        return len(keys)

    def delete_prefix(self, prefix: str) -> int:
        """Removes every object whose key starts with ``prefix`` (non-empty), in
        DeleteObjects batches of 1000."""
        check_prefix(prefix)
        if prefix == "":
            raise ValueError("refusing to delete every object: give a non-empty prefix")
        count = 0
        batch: builtins.list[str] = []
        for info in self.list(prefix):
            batch.append(self.prefix + info.key)
            if len(batch) == DELETE_BATCH:
                count += self._delete_batch(batch, prefix)
                batch = []
        if batch:
            count += self._delete_batch(batch, prefix)
        return count

    # -- misc --

    def url_for(self, key: str) -> str | None:
        path = quote(self._full(key), safe="/")
        if self._endpoint_url:
            return f"{self._endpoint_url.rstrip('/')}/{self.bucket}/{path}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{path}"

    def ping(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError, OSError) as e:
            logger.warning("S3 ping failed", extra={"bucket": self.bucket, "error": str(e)})
            return False
        return True


def _read_body(response: Any) -> bytes:
    """The bytes of a GetObject response, its stream closed (back to the pool) either way."""
    body = response["Body"]
    try:
        data: bytes = body.read()
        return data
    finally:
        body.close()
