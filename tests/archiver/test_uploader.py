"""The uploader: every object reaches storage across outages, full disks and restarts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from botocore.config import Config
from prometheus_client import CollectorRegistry

from castway.storage.base import IMMUTABLE, VOD_PLAYLIST
from castway.storage.local import LocalStorage
from castway.storage.s3 import S3Storage
from castway.storage.uploader import SPOOL_SUFFIX, Uploader, _Entry
from tests.fixtures.s3_server import S3Server, create_bucket
from tests.fixtures.tiny_disk import fill

# Notice an outage in well under a second, not botocore's default of a minute.
FAST_FAIL = Config(connect_timeout=0.5, read_timeout=2.0,
                   retries={"max_attempts": 1, "mode": "standard"})


def segment_bytes(i: int, size: int = 2000) -> bytes:
    return (f"segment {i:05d} ".encode() * (size // 14 + 1))[:size]


def metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    return 0.0 if value is None else value


def _entry_for(i: int) -> _Entry:
    data = segment_bytes(i)
    return _Entry(seq=i + 1, key=f"broadcasts/b1/source/{i}.m4s", content_type=None,
                  cache_control=IMMUTABLE, size=len(data), data=data)


def spool_files(spool: Path) -> list[Path]:
    return sorted(p for p in spool.iterdir() if p.name.endswith(SPOOL_SUFFIX))


def s3_storage(server: S3Server) -> S3Storage:
    client = server.client(FAST_FAIL)
    bucket = create_bucket(client)
    return S3Storage(bucket, "archive", client=client)


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


async def test_objects_are_stored_with_their_content_type_and_cache_control(
        local: LocalStorage, tmp_path: Path) -> None:
    uploader = Uploader(local, tmp_path / "spool")
    for i in range(20):
        await uploader.put(f"broadcasts/b1/source/{i}.m4s", segment_bytes(i))
    await uploader.put("broadcasts/b1/master.m3u8", b"#EXTM3U\n", cache_control=VOD_PLAYLIST)
    assert await uploader.flush(10)
    assert uploader.pending == 0
    for i in range(20):
        assert local.get(f"broadcasts/b1/source/{i}.m4s") == segment_bytes(i)
    info = local.head("broadcasts/b1/master.m3u8")
    assert info is not None
    assert info.content_type == "application/vnd.apple.mpegurl"
    assert info.cache_control == VOD_PLAYLIST
    seg = local.head("broadcasts/b1/source/0.m4s")
    assert seg is not None and seg.cache_control == IMMUTABLE
    assert await uploader.close()


async def test_the_last_version_of_a_key_wins(local: LocalStorage, tmp_path: Path) -> None:
    uploader = Uploader(local, tmp_path / "spool", workers=4)
    for version in range(30):
        await uploader.put("broadcasts/b1/source/live.m3u8", f"v{version}".encode())
    assert await uploader.flush(10)
    assert local.get("broadcasts/b1/source/live.m3u8") == b"v29"
    await uploader.close()


async def test_invalid_keys_are_refused_up_front(local: LocalStorage, tmp_path: Path) -> None:
    uploader = Uploader(local, tmp_path / "spool")
    with pytest.raises(ValueError):
        await uploader.put("../escape", b"x")
    assert uploader.pending == 0
    await uploader.close()
    with pytest.raises(RuntimeError):
        await uploader.put("broadcasts/b1/source/0.m4s", b"x")


async def test_past_the_memory_limit_objects_go_to_the_spool_and_still_arrive(
        local: LocalStorage, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    uploader = Uploader(local, tmp_path / "spool", registry, max_memory_bytes=5000)
    for i in range(40):
        await uploader.put(f"broadcasts/b1/source/{i}.m4s", segment_bytes(i))
        assert metric(registry, "castway_uploader_memory_bytes") <= 5000
    assert await uploader.flush(10)
    assert all(local.get(f"broadcasts/b1/source/{i}.m4s") == segment_bytes(i)
               for i in range(40))
    assert spool_files(tmp_path / "spool") == []
    await uploader.close()


@pytest.mark.peer
async def test_an_s3_outage_is_spooled_and_drained_when_s3_returns(
        s3_server_restartable: S3Server, tmp_path: Path) -> None:
    storage = s3_storage(s3_server_restartable)
    registry = CollectorRegistry()
    spool = tmp_path / "spool"
    uploader = Uploader(storage, spool, registry, base_backoff_s=0.05, max_backoff_s=0.3)
    await uploader.put("broadcasts/b1/source/init.mp4", b"init")
    assert await uploader.flush(10)

    await asyncio.to_thread(s3_server_restartable.stop)
    for i in range(30):
        await uploader.put(f"broadcasts/b1/source/{i}.m4s", segment_bytes(i))
    assert not await uploader.flush(1.0)  # nowhere to go
    assert uploader.pending > 0
    assert not uploader.healthy
    assert metric(registry, "castway_uploader_retries_total") >= 1
    assert metric(registry, "castway_uploader_spool_objects") >= 1
    assert metric(registry, "castway_uploader_spool_bytes") >= 2000
    assert spool_files(spool)

    await asyncio.to_thread(s3_server_restartable.start)
    assert await uploader.flush(30)
    assert uploader.healthy
    assert metric(registry, "castway_uploader_spool_objects") == 0
    assert spool_files(spool) == []
    for i in range(30):
        assert await asyncio.to_thread(storage.get, f"broadcasts/b1/source/{i}.m4s") \
            == segment_bytes(i)
    info = await asyncio.to_thread(storage.head, "broadcasts/b1/source/3.m4s")
    assert info is not None and info.cache_control == IMMUTABLE
    assert info.content_type == "video/iso.segment"
    await uploader.close()


@pytest.mark.peer
async def test_a_frozen_s3_that_never_answers_is_survived(
        s3_server_restartable: S3Server, tmp_path: Path) -> None:
    storage = s3_storage(s3_server_restartable)
    uploader = Uploader(storage, tmp_path / "spool", base_backoff_s=0.05, max_backoff_s=0.3)
    s3_server_restartable.freeze()
    try:
        for i in range(5):
            await uploader.put(f"broadcasts/b1/source/{i}.m4s", segment_bytes(i))
        assert not await uploader.flush(3.0)
    finally:
        s3_server_restartable.thaw()
    assert await uploader.flush(30)
    for i in range(5):
        assert await asyncio.to_thread(storage.get, f"broadcasts/b1/source/{i}.m4s") \
            == segment_bytes(i)
    await uploader.close()


@pytest.mark.peer
async def test_the_spool_survives_a_restart_and_is_drained_at_start(
        s3_server_restartable: S3Server, tmp_path: Path) -> None:
    storage = s3_storage(s3_server_restartable)
    spool = tmp_path / "spool"
    await asyncio.to_thread(s3_server_restartable.stop)
    first = Uploader(storage, spool, base_backoff_s=0.05, max_backoff_s=0.3)
    for i in range(10):
        await first.put(f"broadcasts/b1/source/{i}.m4s", segment_bytes(i))
    assert not await first.close(timeout_s=0.5)  # shutdown flushes what it can, spools the rest
    assert len(spool_files(spool)) == 10

    await asyncio.to_thread(s3_server_restartable.start)
    registry = CollectorRegistry()
    second = Uploader(storage, spool, registry, base_backoff_s=0.05, max_backoff_s=0.3)
    await second.start()
    assert second.pending == 10
    assert await second.flush(30)
    assert spool_files(spool) == []
    for i in range(10):
        assert await asyncio.to_thread(storage.get, f"broadcasts/b1/source/{i}.m4s") \
            == segment_bytes(i)
    # New objects continue the sequence after the recovered ones.
    await second.put("broadcasts/b1/source/10.m4s", segment_bytes(10))
    assert await second.close()
    assert storage.get("broadcasts/b1/source/10.m4s") == segment_bytes(10)


async def test_concurrent_first_puts_never_reuse_a_recovered_spool_name(
        local: LocalStorage, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    down = Uploader(LocalStorage(tmp_path / "unused"), spool)
    # Spool files as a crashed run leaves them (the bytes never reached storage).
    await down.start()
    for i in range(5):
        await down._spool(_entry_for(i))  # the on-disk format is the contract
    await down.close()
    uploader = Uploader(local, spool)
    await asyncio.gather(*(uploader.put(f"broadcasts/b1/source/new{i}.m4s", b"n")
                           for i in range(5)))
    assert await uploader.flush(10)
    for i in range(5):
        assert local.get(f"broadcasts/b1/source/{i}.m4s") == segment_bytes(i)
        assert local.get(f"broadcasts/b1/source/new{i}.m4s") == b"n"
    await uploader.close()


async def test_unreadable_spool_files_are_set_aside_not_fatal(
        local: LocalStorage, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"{1:020d}{SPOOL_SUFFIX}").write_bytes(b"\x00\x00\x00\x05{bad")
    (spool / ".interrupted.tmp").write_bytes(b"half")
    uploader = Uploader(local, spool)
    await uploader.start()
    assert uploader.pending == 0
    assert (spool / f"{1:020d}{SPOOL_SUFFIX}.corrupt").exists()
    assert not (spool / ".interrupted.tmp").exists()
    await uploader.close()


async def test_a_full_local_disk_is_spooled_until_space_returns(
        tiny_disk: Path, tmp_path: Path) -> None:
    storage = LocalStorage(tiny_disk / "storage")
    filler = fill(tiny_disk)
    registry = CollectorRegistry()
    uploader = Uploader(storage, tmp_path / "spool", registry, base_backoff_s=0.05,
                        max_backoff_s=0.2)
    for i in range(10):
        await uploader.put(f"broadcasts/b1/source/{i}.m4s", segment_bytes(i, 8000))
    assert not await uploader.flush(0.5)
    assert metric(registry, "castway_uploader_retries_total") >= 1
    assert metric(registry, "castway_uploader_spool_objects") >= 1

    filler.unlink()
    assert await uploader.flush(10)
    for i in range(10):
        assert storage.get(f"broadcasts/b1/source/{i}.m4s") == segment_bytes(i, 8000)
    await uploader.close()


@pytest.mark.peer
async def test_uploads_stuck_on_a_frozen_s3_leave_the_default_executor_alone(
        s3_server_restartable: S3Server, tmp_path: Path) -> None:
    """More uploads stuck on a frozen S3 than asyncio's default executor has threads:
    work there (in ingest: packets to transcoders, catalog queries) still runs at once."""
    client = s3_server_restartable.client()  # castway's timeouts: a put holds on ~20 s
    storage = S3Storage(await asyncio.to_thread(create_bucket, client), "archive",
                        client=client)
    stuck = min(32, (os.cpu_count() or 1) + 4) + 2  # ThreadPoolExecutor's default, + 2
    uploader = Uploader(storage, tmp_path / "spool", workers=stuck, base_backoff_s=0.05,
                        max_backoff_s=0.3)
    await uploader.start()
    s3_server_restartable.freeze()
    try:
        for i in range(stuck):
            await uploader.put(f"broadcasts/b1/source/{i}.m4s", segment_bytes(i))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(uploader._inflight) < stuck:  # every worker waits on S3
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: True), 2.0)
    finally:
        s3_server_restartable.thaw()
    assert await uploader.flush(60)
    for i in range(stuck):
        assert await asyncio.to_thread(storage.get, f"broadcasts/b1/source/{i}.m4s") \
            == segment_bytes(i)
    await uploader.close()
