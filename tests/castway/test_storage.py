"""The storage contract, run against a local directory and a real S3 API (moto's server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.config import Config

from castway.settings import Settings
from castway.storage import open_storage, storage_from_url
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
from tests.fixtures.s3_server import S3Server, create_bucket

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    client: S3Client = request.getfixturevalue("s3_client")
    bucket: str = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket, prefix="castway/archive", client=client)


def keys(infos: Iterator[ObjectInfo]) -> list[str]:
    return [i.key for i in infos]


# --- put / get / head ---------------------------------------------------------------------

def test_put_then_get_returns_the_same_bytes(storage: Storage) -> None:
    data = bytes(range(256)) * 100
    storage.put("broadcasts/b1/720p/0.m4s", data)
    assert storage.get("broadcasts/b1/720p/0.m4s") == data
    assert storage.get("broadcasts/b1/720p/1.m4s") is None


def test_empty_objects_are_objects(storage: Storage) -> None:
    storage.put("broadcasts/b1/empty.json", b"")
    assert storage.get("broadcasts/b1/empty.json") == b""
    assert storage.exists("broadcasts/b1/empty.json")
    info = storage.head("broadcasts/b1/empty.json")
    assert info is not None and info.size == 0


@pytest.mark.parametrize("key", [
    "broadcasts/b1/720p/init.mp4", "broadcasts/b1/720p/3.m4s", "broadcasts/b1/source/3.ts",
    "broadcasts/b1/master.m3u8", "broadcasts/b1/poster.jpg", "broadcasts/b1/thumbs.vtt",
    "broadcasts/b1/export.mp4", "broadcasts/b1/no-extension",
])
def test_head_reports_size_default_content_type_and_immutable_caching(
        storage: Storage, key: str) -> None:
    storage.put(key, b"x" * 1234)
    assert storage.head(key) == ObjectInfo(key=key, size=1234,
                                           content_type=content_type_for(key),
                                           cache_control=IMMUTABLE)


def test_head_reports_the_content_type_and_cache_control_given(storage: Storage) -> None:
    key = "broadcasts/b1/720p/vod.m3u8"
    storage.put(key, b"#EXTM3U\n", content_type="audio/mpegurl", cache_control=VOD_PLAYLIST)
    assert storage.head(key) == ObjectInfo(key, 8, "audio/mpegurl", VOD_PLAYLIST)

    storage.put(key, b"#EXTM3U\n#", cache_control=None)
    assert storage.head(key) == ObjectInfo(key, 9, content_type_for(key), None)

    storage.put(key, b"#EXTM3U\n")  # back to the defaults
    assert storage.head(key) == ObjectInfo(key, 8, content_type_for(key), IMMUTABLE)


def test_head_and_exists_of_missing_objects(storage: Storage) -> None:
    assert storage.head("broadcasts/nope/master.m3u8") is None
    assert not storage.exists("broadcasts/nope/master.m3u8")
    storage.put("broadcasts/b1/master.m3u8", b"#EXTM3U\n")
    assert storage.exists("broadcasts/b1/master.m3u8")
    assert not storage.exists("broadcasts/b1")  # a prefix is not an object


def test_keys_may_hold_spaces_and_non_ascii(storage: Storage) -> None:
    key = "broadcasts/b1/thumbs été+1 %20.jpg"
    storage.put(key, b"jpeg")
    assert storage.get(key) == b"jpeg"
    assert keys(storage.list("broadcasts/b1/")) == [key]


def test_put_file_streams_a_file_in(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "export.mp4"
    source.write_bytes(os.urandom(3 * MiB + 5))
    storage.put_file("broadcasts/b1/export.mp4", source)
    assert storage.get("broadcasts/b1/export.mp4") == source.read_bytes()
    assert storage.head("broadcasts/b1/export.mp4") == ObjectInfo(
        "broadcasts/b1/export.mp4", 3 * MiB + 5, "video/mp4", IMMUTABLE)

    storage.put_file("broadcasts/b1/export.mp4", source, content_type="video/quicktime",
                     cache_control=VOD_PLAYLIST)
    info = storage.head("broadcasts/b1/export.mp4")
    assert info is not None
    assert (info.content_type, info.cache_control) == ("video/quicktime", VOD_PLAYLIST)
    assert source.exists()  # the source stays


def test_put_file_of_a_missing_file_is_a_storage_error(storage: Storage,
                                                       tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        storage.put_file("broadcasts/b1/export.mp4", tmp_path / "missing.mp4")
    assert storage.get("broadcasts/b1/export.mp4") is None
    with pytest.raises(ValueError):
        storage.put_file("../escape.mp4", tmp_path / "missing.mp4")


# --- ranges -------------------------------------------------------------------------------

def test_get_range_follows_http_semantics(storage: Storage) -> None:
    storage.put("broadcasts/b1/export.mp4", b"0123456789")
    assert storage.get_range("broadcasts/b1/export.mp4", 0, 3) == b"0123"
    assert storage.get_range("broadcasts/b1/export.mp4", 4, 4) == b"4"
    assert storage.get_range("broadcasts/b1/export.mp4", 7, None) == b"789"
    assert storage.get_range("broadcasts/b1/export.mp4", 8, 100) == b"89"
    assert storage.get_range("broadcasts/b1/export.mp4", 10, None) == b""
    assert storage.get_range("broadcasts/b1/export.mp4", 50, 60) == b""
    assert storage.get_range("broadcasts/b1/missing.mp4", 0, 3) is None
    with pytest.raises(ValueError):
        storage.get_range("broadcasts/b1/export.mp4", 5, 4)
    with pytest.raises(ValueError):
        storage.get_range("broadcasts/b1/export.mp4", -1, 4)


# --- delete -------------------------------------------------------------------------------

def test_delete_removes_and_tolerates_absence(storage: Storage) -> None:
    storage.put("broadcasts/b1/poster.jpg", b"jpeg")
    storage.delete("broadcasts/b1/poster.jpg")
    assert storage.get("broadcasts/b1/poster.jpg") is None
    assert storage.head("broadcasts/b1/poster.jpg") is None
    storage.delete("broadcasts/b1/poster.jpg")
    storage.delete("broadcasts/never/was.jpg")


def test_delete_prefix_removes_exactly_the_objects_under_it(storage: Storage) -> None:
    for k in ["broadcasts/b1/master.m3u8", "broadcasts/b1/720p/0.m4s",
              "broadcasts/b1/720p/1.m4s", "broadcasts/b10/master.m3u8",
              "broadcasts/b2/master.m3u8"]:
        storage.put(k, b"x")
    storage.put("broadcasts/b1/720p/vod.m3u8", b"x", cache_control=VOD_PLAYLIST)

    assert storage.delete_prefix("broadcasts/b1/") == 4
    assert keys(storage.list("")) == ["broadcasts/b10/master.m3u8",
                                      "broadcasts/b2/master.m3u8"]
    assert storage.delete_prefix("broadcasts/b1/") == 0
    assert storage.delete_prefix("broadcasts/b") == 2
    assert keys(storage.list("")) == []


def test_delete_prefix_refuses_to_wipe_everything(storage: Storage) -> None:
    storage.put("broadcasts/b1/master.m3u8", b"x")
    with pytest.raises(ValueError):
        storage.delete_prefix("")
    assert storage.exists("broadcasts/b1/master.m3u8")


# --- list ---------------------------------------------------------------------------------

def test_list_is_in_key_order_and_filtered_by_prefix(storage: Storage) -> None:
    # '-' (0x2d) sorts before '/' (0x2f): key order is not directory-walk order.
    written = ["broadcasts/b1/720p/10.m4s", "broadcasts/b1/720p/2.m4s",
               "broadcasts/b1/720p/1.m4s", "broadcasts/b1/720p-x/0.m4s",
               "broadcasts/b1/720p/init.mp4", "broadcasts/b1/master.m3u8",
               "broadcasts/b2/master.m3u8", "zzz.json", "a.json"]
    for i, k in enumerate(written):
        storage.put(k, b"x" * i)

    assert keys(storage.list("")) == sorted(written)
    assert keys(storage.list("broadcasts/b1/720p/")) == [
        "broadcasts/b1/720p/1.m4s", "broadcasts/b1/720p/10.m4s", "broadcasts/b1/720p/2.m4s",
        "broadcasts/b1/720p/init.mp4"]
    assert keys(storage.list("broadcasts/b1/720p/1")) == [
        "broadcasts/b1/720p/1.m4s", "broadcasts/b1/720p/10.m4s"]
    assert keys(storage.list("broadcasts/b1/720p")) == [
        "broadcasts/b1/720p-x/0.m4s", "broadcasts/b1/720p/1.m4s", "broadcasts/b1/720p/10.m4s",
        "broadcasts/b1/720p/2.m4s", "broadcasts/b1/720p/init.mp4"]
    assert keys(storage.list("broadcasts/b3/")) == []
    assert keys(storage.list("nothing")) == []
    sizes = {i.key: i.size for i in storage.list("")}
    assert sizes == {k: i for i, k in enumerate(written)}


def test_list_pages_through_many_objects(storage: Storage) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: storage.put(f"broadcasts/b1/src/{n:05d}.ts", b"t"),
                      range(1005)))
    listed = keys(storage.list("broadcasts/b1/src/"))
    assert listed == [f"broadcasts/b1/src/{n:05d}.ts" for n in range(1005)]
    # More than one DeleteObjects batch of 1000 on S3.
    assert storage.delete_prefix("broadcasts/b1/") == 1005
    assert keys(storage.list("broadcasts/")) == []


# --- url_for / ping -----------------------------------------------------------------------

def test_url_for_points_at_the_object(storage: Storage) -> None:
    storage.put("broadcasts/b1/poster.jpg", b"jpeg bytes")
    url = storage.url_for("broadcasts/b1/poster.jpg")
    assert url is not None
    if isinstance(storage, S3Storage):  # buckets are private; let an anonymous GET in
        storage.client.put_object_acl(Bucket=storage.bucket, ACL="public-read",
                                      Key=storage.prefix + "broadcasts/b1/poster.jpg")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"jpeg bytes"


def test_ping(storage: Storage) -> None:
    assert storage.ping() is True


# --- key validation -----------------------------------------------------------------------

BAD_KEYS = ["", "../escape", "broadcasts/../../escape", "broadcasts/b1/..", "/etc/passwd",
            "broadcasts\\b1\\x", "broadcasts/b1/x\x00.m4s", "broadcasts//b1", "broadcasts/b1/",
            "./broadcasts", "broadcasts/.hidden", "broadcasts/b1/\n.m4s"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_that_could_escape_or_alias_are_rejected(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError):
        storage.put(key, b"x")
    with pytest.raises(ValueError):
        storage.get(key)
    with pytest.raises(ValueError):
        storage.get_range(key, 0, 1)
    with pytest.raises(ValueError):
        storage.head(key)
    with pytest.raises(ValueError):
        storage.exists(key)
    with pytest.raises(ValueError):
        storage.delete(key)
    with pytest.raises(ValueError):
        storage.url_for(key)
    assert keys(storage.list("")) == []


@pytest.mark.parametrize("prefix", ["../", "/abs", "a/../b", "a//", "a\\b", "a/.x", "..",
                                    "a\x00"])
def test_prefixes_that_could_escape_are_rejected(storage: Storage, prefix: str) -> None:
    with pytest.raises(ValueError):
        storage.list(prefix)
    with pytest.raises(ValueError):
        storage.delete_prefix(prefix)


def test_traversal_never_touches_files_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "root")
    for key in ["../secret.txt", "x/../../secret.txt", str(outside)]:
        with pytest.raises(ValueError):
            storage.get(key)
        with pytest.raises(ValueError):
            storage.delete(key)
        with pytest.raises(ValueError):
            storage.put(key, b"overwritten")
    assert outside.read_bytes() == b"secret"


# --- atomicity ----------------------------------------------------------------------------

def test_readers_never_see_a_partial_overwrite(storage: Storage) -> None:
    """A writer rewrites a big object again and again while a reader keeps reading it:
    every read is one whole version, never a mix or a truncation."""
    key = "broadcasts/b1/export.mp4"
    versions = [b"A" * (2 * MiB), b"B" * (2 * MiB + 4321), b"C" * (MiB + 17)]
    storage.put(key, versions[0])
    done = threading.Event()
    seen: set[bytes] = set()
    bad: list[str] = []

    def read() -> None:
        while not done.is_set():
            data = storage.get(key)
            if data not in versions:
                bad.append(f"{None if data is None else (len(data), data[:1], data[-1:])}")
                return
            seen.add(data[:1])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            storage.put(key, versions[i % len(versions)])
    finally:
        done.set()
        reader.join(timeout=60)
    assert bad == []
    assert seen, "the reader never got a read in"
    assert storage.get(key) == versions[29 % len(versions)]


def test_puts_racing_a_delete_prefix_never_fail(storage: Storage) -> None:
    """The local backend prunes empty directories on delete; a put into a directory
    that is being pruned must still land."""
    done = threading.Event()
    errors: list[BaseException] = []

    def put_many() -> None:
        try:
            for n in range(150):
                storage.put(f"broadcasts/b1/720p/{n}.m4s", b"x")
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            done.set()

    writer = threading.Thread(target=put_many)
    writer.start()
    deletes = 0
    while not done.is_set():
        storage.delete_prefix("broadcasts/b1/")
        deletes += 1
    writer.join(timeout=60)
    assert errors == []
    assert deletes > 0
    storage.put("broadcasts/b1/720p/last.m4s", b"x")
    assert storage.get("broadcasts/b1/720p/last.m4s") == b"x"


# --- local directory specifics ------------------------------------------------------------

def test_local_objects_are_plain_files_under_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.put("broadcasts/b1/720p/0.m4s", b"segment")
    storage.put("broadcasts/b1/720p/vod.m3u8", b"#EXTM3U\n", cache_control=VOD_PLAYLIST)
    path = tmp_path / "storage" / "broadcasts" / "b1" / "720p" / "0.m4s"
    assert path.read_bytes() == b"segment"
    assert path.stat().st_mode & 0o777 == 0o644
    assert storage.url_for("broadcasts/b1/720p/0.m4s") == path.as_uri()
    # Only the playlist needs a sidecar, and no temporary file is left behind.
    assert sorted(os.listdir(path.parent)) == [".vod.m3u8.meta.json", "0.m4s", "vod.m3u8"]


def test_local_delete_prunes_empty_directories(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.put("broadcasts/b1/720p/0.m4s", b"x")
    storage.put("broadcasts/b2/master.m3u8", b"x")
    storage.delete_prefix("broadcasts/b1/")
    assert sorted(os.listdir(tmp_path / "storage" / "broadcasts")) == ["b2"]
    assert storage.ping()


def test_local_object_below_an_object_is_a_storage_error(tmp_path: Path) -> None:
    """A directory cannot also be a file: S3 allows 'a' and 'a/b', a directory cannot."""
    storage = LocalStorage(tmp_path / "storage")
    storage.put("broadcasts/b1", b"x")
    with pytest.raises(StorageError):
        storage.put("broadcasts/b1/master.m3u8", b"x")
    assert storage.get("broadcasts/b1/master.m3u8") is None
    assert storage.head("broadcasts/b1/master.m3u8") is None


def _mount_tiny_tmpfs(path: Path) -> None:
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                       check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {e}; "
                    "test_local_file_size_limit_is_a_storage_error covers the path")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs) that fills up."""
    mountpoint = tmp_path / "tiny"
    _mount_tiny_tmpfs(mountpoint)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=10)


def test_local_full_disk_is_a_storage_error_and_leaves_no_debris(tiny_disk: Path) -> None:
    storage = LocalStorage(tiny_disk / "storage")
    storage.put("broadcasts/b1/720p/0.m4s", b"old" * 1000)

    with pytest.raises(StorageError, match="No space left"):
        storage.put("broadcasts/b1/720p/1.m4s", b"x" * (2 * MiB))
    with pytest.raises(StorageError):
        storage.put("broadcasts/b1/720p/0.m4s", b"y" * (2 * MiB))

    directory = tiny_disk / "storage" / "broadcasts" / "b1" / "720p"
    assert os.listdir(directory) == ["0.m4s"]  # no temporary files left
    assert storage.get("broadcasts/b1/720p/0.m4s") == b"old" * 1000
    storage.put("broadcasts/b1/720p/1.m4s", b"small")  # space came back
    assert keys(storage.list("")) == ["broadcasts/b1/720p/0.m4s", "broadcasts/b1/720p/1.m4s"]


_FSIZE_SCRIPT = """
import json, os, resource, signal, sys
from castway.storage.local import LocalStorage
from castway.storage.base import StorageError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead
storage = LocalStorage(sys.argv[1])
storage.put("broadcasts/b1/0.m4s", b"old")
resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
try:
    storage.put("broadcasts/b1/0.m4s", b"x" * (2 * 1024 * 1024))
    print(json.dumps({"raised": None}))
except StorageError as e:
    print(json.dumps({"raised": "StorageError", "message": str(e)}))
"""


def test_local_file_size_limit_is_a_storage_error(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (EFBIG) in a child process: the write fails midway, like a full disk."""
    root = tmp_path / "storage"
    result = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, str(root)],
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["raised"] == "StorageError"
    assert "File too large" in outcome["message"]
    assert os.listdir(root / "broadcasts" / "b1") == ["0.m4s"]
    assert (root / "broadcasts" / "b1" / "0.m4s").read_bytes() == b"old"


# --- S3 specifics -------------------------------------------------------------------------

def test_s3_objects_carry_content_type_and_cache_control(
        s3_client: S3Client, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket, client=s3_client)
    storage.put("broadcasts/b1/master.m3u8", b"#EXTM3U\n", cache_control=VOD_PLAYLIST)
    raw = s3_client.get_object(Bucket=s3_bucket, Key="broadcasts/b1/master.m3u8")
    assert raw["ContentType"] == "application/vnd.apple.mpegurl"
    assert raw["CacheControl"] == VOD_PLAYLIST


def test_s3_put_file_uploads_big_files_in_parts(
        s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(s3_bucket, client=s3_client, multipart_threshold=5 * MiB)
    source = tmp_path / "export.mp4"
    source.write_bytes(os.urandom(11 * MiB))
    storage.put_file("broadcasts/b1/export.mp4", source)
    raw = s3_client.head_object(Bucket=s3_bucket, Key="broadcasts/b1/export.mp4")
    assert raw["ETag"].strip('"').endswith("-3")  # a multipart upload of 3 parts
    assert raw["ContentType"] == "video/mp4" and raw["CacheControl"] == IMMUTABLE
    assert storage.get("broadcasts/b1/export.mp4") == source.read_bytes()


def test_s3_prefixes_isolate_storages_in_one_bucket(
        s3_client: S3Client, s3_bucket: str) -> None:
    a = S3Storage(s3_bucket, prefix="/site-a/", client=s3_client)
    b = S3Storage(s3_bucket, prefix="site-b", client=s3_client)
    a.put("broadcasts/b1/master.m3u8", b"a")
    b.put("broadcasts/b1/master.m3u8", b"b")
    assert keys(a.list("")) == ["broadcasts/b1/master.m3u8"]
    assert a.get("broadcasts/b1/master.m3u8") == b"a"
    assert a.delete_prefix("broadcasts/") == 1
    assert b.get("broadcasts/b1/master.m3u8") == b"b"
    raw = s3_client.list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in raw.get("Contents", [])] == ["site-b/broadcasts/b1/master.m3u8"]


def test_s3_missing_bucket_is_a_storage_error(s3_client: S3Client) -> None:
    storage = S3Storage("no-such-bucket-castway", client=s3_client)
    assert storage.ping() is False
    with pytest.raises(StorageError):
        storage.put("broadcasts/b1/master.m3u8", b"x")


def test_s3_outage_fails_fast_and_recovers(s3_server_restartable: S3Server,
                                           tmp_path: Path) -> None:
    server = s3_server_restartable
    client = server.client()
    bucket = create_bucket(client)
    storage = S3Storage(bucket, client=client)
    storage.put("broadcasts/b1/720p/0.m4s", b"before")

    server.stop()
    started = time.monotonic()
    with pytest.raises(StorageError):
        storage.put("broadcasts/b1/720p/1.m4s", b"during")
    assert time.monotonic() - started < 10, "an outage must be noticed promptly"
    with pytest.raises(StorageError):
        storage.get("broadcasts/b1/720p/0.m4s")
    with pytest.raises(StorageError):
        storage.head("broadcasts/b1/720p/0.m4s")
    with pytest.raises(StorageError):
        list(storage.list("broadcasts/"))
    with pytest.raises(StorageError):
        storage.delete_prefix("broadcasts/")
    (tmp_path / "export.mp4").write_bytes(b"mp4")
    with pytest.raises(StorageError):
        storage.put_file("broadcasts/b1/export.mp4", tmp_path / "export.mp4")
    assert storage.ping() is False
    assert time.monotonic() - started < 30

    server.start()
    assert storage.ping() is True
    assert storage.get("broadcasts/b1/720p/0.m4s") == b"before"
    storage.put("broadcasts/b1/720p/1.m4s", b"after")
    assert keys(storage.list("broadcasts/")) == ["broadcasts/b1/720p/0.m4s",
                                                 "broadcasts/b1/720p/1.m4s"]


def test_s3_server_that_stops_answering_times_out_as_a_storage_error(
        s3_server_restartable: S3Server) -> None:
    server = s3_server_restartable
    impatient = server.client(Config(read_timeout=1, retries={"max_attempts": 1}))
    storage = S3Storage(create_bucket(impatient), client=impatient)
    storage.put("broadcasts/b1/0.m4s", b"x")

    server.freeze()
    try:
        with pytest.raises(StorageError):
            storage.get("broadcasts/b1/0.m4s")
    finally:
        server.thaw()
    assert storage.get("broadcasts/b1/0.m4s") == b"x"


# --- open_storage -------------------------------------------------------------------------

def test_open_storage_defaults_to_the_data_dir(tmp_path: Path) -> None:
    storage = open_storage(Settings(data_dir=tmp_path / "data"))
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "data" / "storage").resolve()
    assert storage.root.is_dir()


def test_open_storage_takes_paths_and_file_urls(tmp_path: Path) -> None:
    a = open_storage(Settings(storage_url=str(tmp_path / "a")))
    b = open_storage(Settings(storage_url=(tmp_path / "b c").as_uri()))
    assert isinstance(a, LocalStorage) and a.root == tmp_path / "a"
    assert isinstance(b, LocalStorage) and b.root == tmp_path / "b c"


@pytest.mark.usefixtures("aws_credentials")
def test_open_storage_s3_url_uses_endpoint_and_prefix(
        s3_server: str, s3_client: S3Client, s3_bucket: str) -> None:
    storage = open_storage(Settings(storage_url=f"s3://{s3_bucket}/castway/prod",
                                    s3_endpoint_url=s3_server, s3_region="us-east-1"))
    assert isinstance(storage, S3Storage)
    storage.put("broadcasts/b1/master.m3u8", b"#EXTM3U\n")
    raw = s3_client.get_object(Bucket=s3_bucket, Key="castway/prod/broadcasts/b1/master.m3u8")
    assert raw["Body"].read() == b"#EXTM3U\n"
    assert storage.url_for("broadcasts/b1/master.m3u8") == \
        f"{s3_server}/{s3_bucket}/castway/prod/broadcasts/b1/master.m3u8"


@pytest.mark.parametrize("url", ["s3:///prefix-only", "gs://bucket/x", "file://host/x"])
def test_bad_storage_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(ValueError):
        storage_from_url(url)
