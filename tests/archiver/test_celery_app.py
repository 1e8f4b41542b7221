"""The distributed archiver against real peers: a Celery worker process, redis-server as
broker, result backend and live state, and moto's S3 API server as storage."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from botocore.config import Config

from archiver.celery_app import make_celery
from archiver.context import ArchiveContext
from archiver.instant_vod import make_vod
from archiver.service import (
    RETRYABLE,
    TASK_EXPIRE_VODS,
    TASK_EXPORT_MP4,
    TASK_MAKE_THUMBNAILS,
    TASK_MAKE_VOD,
    TASK_VERIFY_VOD,
)
from castway.catalog import SqlCatalog, open_catalog
from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEnded
from castway.layout import master_key
from castway.live.redis import RedisLiveState
from castway.model import VodState
from castway.settings import Settings
from castway.storage.s3 import S3Storage
from castway.storage.uploader import Uploader
from tests.archiver.helpers import (
    HlsRun,
    allow_public_read,
    count_frames,
    publish,
    record_durably,
)
from tests.fixtures.s3_server import DUMMY_CREDENTIALS, S3Server, create_bucket

pytestmark = [pytest.mark.peer, pytest.mark.slow]

FAST_FAIL = Config(connect_timeout=0.5, read_timeout=2.0, retries={"max_attempts": 1})
PREFIX = "archive"
OUTAGE_S = 30.0


def test_the_app_acks_late_retries_with_backoff_and_schedules_expiry(tmp_path: Path) -> None:
    app = make_celery(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"),
                      listen=False)
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    for name in (TASK_MAKE_VOD, TASK_VERIFY_VOD, TASK_EXPORT_MP4, TASK_MAKE_THUMBNAILS,
                 TASK_EXPIRE_VODS):
        task = app.tasks[name]
        assert task.retry_backoff and task.retry_jitter
        # the same errors as the in-process archiver's retrying()
        assert task.autoretry_for == RETRYABLE
    schedule = app.conf.beat_schedule
    assert any(entry["task"] == TASK_EXPIRE_VODS for entry in schedule.values())


def test_two_apps_in_one_process_each_keep_their_own_tasks(tmp_path: Path) -> None:
    from celery.app.task import Task

    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = make_celery(settings, listen=False)
        first.finalize()
        second = make_celery(settings, listen=False)
        second.finalize()
    for name in (TASK_MAKE_VOD, TASK_VERIFY_VOD, TASK_EXPIRE_VODS):
        mine: Task[Any, Any] = second.tasks[name]
        assert mine is not first.tasks[name]
        assert mine.app is second


def test_without_a_broker_there_is_no_celery_app(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in-process"):
        make_celery(Settings(data_dir=tmp_path))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.01) -> float:
    """Poll a condition on a real peer until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what} after {timeout_s}s")
        time.sleep(interval_s)
    return time.monotonic() - started


@contextmanager
def celery_worker(env: dict[str, str], log: Path, redis_url: str) -> Iterator[None]:
    """``python -m archiver.celery_app`` as a subprocess; ready when its event listener
    is subscribed to the broadcasts topic."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "archiver.celery_app", "--pool", "solo", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    r = redis.Redis.from_url(redis_url)
    channel = f"castway:{BROADCASTS_TOPIC.name}"

    def subscribed() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
        counts: list[tuple[Any, int]] = r.pubsub_numsub(channel)
        return any(int(n) > 0 for _, n in counts)

    try:
        wait_until(subscribed, 60, "the worker's event listener did not subscribe", 0.05)
        yield
    except BaseException:
        print(f"--- worker log ---\n{log.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        r.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqlCatalog]:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'cat.db'}")
    catalog = open_catalog(settings)
    try:
        yield catalog
    finally:
        catalog.close()


@pytest.fixture
async def live(redis_url: str) -> AsyncIterator[RedisLiveState]:
    state = RedisLiveState(redis_url)
    try:
        yield state
    finally:
        await state.close()


def worker_env(tmp_path: Path, redis_url: str, endpoint: str, bucket: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASTWAY_", "AWS_"))}
    env.update({
        "CASTWAY_DATA_DIR": str(tmp_path / "worker"),
        "CASTWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'cat.db'}",
        "CASTWAY_REDIS_URL": redis_url,
        "CASTWAY_STORAGE_URL": f"s3://{bucket}/{PREFIX}",
        "CASTWAY_S3_ENDPOINT_URL": endpoint,
        "CASTWAY_TARGET_SEGMENT_S": "1",
        "CASTWAY_LOG_LEVEL": "INFO",
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    return env


def vod_state(catalog: SqlCatalog, vod_id: str) -> VodState | None:
    vod = catalog.get_vod(vod_id)
    return None if vod is None else vod.state


async def test_a_real_worker_writes_the_vod_within_a_second_of_the_end_event(
        tmp_path: Path, redis_url: str, s3_server_restartable: S3Server,
        catalog: SqlCatalog, live: RedisLiveState, two_runs: tuple[HlsRun, HlsRun]) -> None:
    client = s3_server_restartable.client(FAST_FAIL)
    bucket = create_bucket(client)
    allow_public_read(client, bucket)
    storage = S3Storage(bucket, PREFIX, client=client)
    env = worker_env(tmp_path, redis_url, s3_server_restartable.endpoint_url, bucket)
    run = two_runs[0]
    await publish("b1", [run], live=live, catalog=catalog, storage=storage)

    with celery_worker(env, tmp_path / "worker.log", redis_url):
        await live.publish(BROADCASTS_TOPIC, BroadcastEnded("b1", "ch1"))
        took = await asyncio.to_thread(wait_until, lambda: storage.exists(master_key("b1")),
                                       10, "no VOD playlist")
        assert took < 1.0, f"VOD playable {took:.3f}s after the end event"
        await asyncio.to_thread(wait_until, lambda: vod_state(catalog, "b1")
                                is VodState.COMPLETE, 60, "VOD not complete", 0.1)
        await asyncio.to_thread(wait_until, lambda: storage.exists("broadcasts/b1/thumbs.vtt"),
                                60, "no thumbnails", 0.1)
    url = f"{s3_server_restartable.endpoint_url}/{bucket}/{PREFIX}/{master_key('b1')}"
    assert await asyncio.to_thread(count_frames, url) == run.frames


async def test_a_worker_down_when_the_broadcast_ends_makes_its_vod_when_it_comes_back(
        tmp_path: Path, redis_url: str, s3_server_restartable: S3Server,
        catalog: SqlCatalog, live: RedisLiveState, two_runs: tuple[HlsRun, HlsRun]) -> None:
    """The one-shot "ended" event is published while no worker listens, and Redis loses
    the segment log meanwhile: the worker's first sweep finds the broadcast in the
    catalog and makes its VOD from the durable record."""
    client = s3_server_restartable.client(FAST_FAIL)
    bucket = create_bucket(client)
    allow_public_read(client, bucket)
    storage = S3Storage(bucket, PREFIX, client=client)
    env = worker_env(tmp_path, redis_url, s3_server_restartable.endpoint_url, bucket)
    run = two_runs[0]
    published = await publish("b1", [run], live=live, catalog=catalog, storage=storage)
    record_durably(catalog, published)
    await live.publish(BROADCASTS_TOPIC, BroadcastEnded("b1", "ch1"))  # nobody hears it
    await live.drop_segment_log("b1")

    with celery_worker(env, tmp_path / "worker.log", redis_url):
        await asyncio.to_thread(wait_until, lambda: vod_state(catalog, "b1")
                                is VodState.COMPLETE, 60, "VOD not complete", 0.1)
        # Its VOD verified, the ended broadcast leaves Redis (its hash has no TTL).
        deadline = asyncio.get_running_loop().time() + 30
        while await live.get_broadcast("b1") is not None:
            assert asyncio.get_running_loop().time() < deadline, "still in the live state"
            await asyncio.sleep(0.1)
    url = f"{s3_server_restartable.endpoint_url}/{bucket}/{PREFIX}/{master_key('b1')}"
    assert await asyncio.to_thread(count_frames, url) == run.frames


async def test_a_vod_left_pending_by_a_killed_worker_is_completed_by_the_next_sweep(
        tmp_path: Path, redis_url: str, s3_server_restartable: S3Server,
        catalog: SqlCatalog, live: RedisLiveState, two_runs: tuple[HlsRun, HlsRun]) -> None:
    """A worker died after writing the playlists, before verifying them: the VOD must not
    wait for the broker's one-hour redelivery."""
    client = s3_server_restartable.client(FAST_FAIL)
    bucket = create_bucket(client)
    storage = S3Storage(bucket, PREFIX, client=client)
    env = worker_env(tmp_path, redis_url, s3_server_restartable.endpoint_url, bucket)
    published = await publish("b1", two_runs[:1], live=live, catalog=catalog, storage=storage)
    record_durably(catalog, published)
    ctx = ArchiveContext(Settings(data_dir=tmp_path, target_segment_s=1.0), catalog, live,
                         storage)
    vod = await make_vod(ctx, "b1")  # the dead worker's half of the job
    assert vod is not None and vod.state is VodState.PENDING
    catalog.save_vod(replace(vod, created_at=vod.created_at - timedelta(minutes=5)))

    with celery_worker(env, tmp_path / "worker.log", redis_url):
        await asyncio.to_thread(wait_until, lambda: vod_state(catalog, "b1")
                                is VodState.COMPLETE, 60, "VOD not complete", 0.1)


async def test_an_s3_outage_of_30s_mid_broadcast_loses_no_segment(
        tmp_path: Path, redis_url: str, s3_server_restartable: S3Server,
        catalog: SqlCatalog, live: RedisLiveState, two_runs: tuple[HlsRun, HlsRun]) -> None:
    client = s3_server_restartable.client(FAST_FAIL)
    bucket = create_bucket(client)
    storage = S3Storage(bucket, PREFIX, client=client)
    env = worker_env(tmp_path, redis_url, s3_server_restartable.endpoint_url, bucket)
    uploader = Uploader(storage, tmp_path / "spool", base_backoff_s=0.1, max_backoff_s=2.0)
    published = await publish("b1", two_runs, live=live, catalog=catalog, storage=None,
                              store=False)
    objects = list(published.payloads.items())
    with celery_worker(env, tmp_path / "worker.log", redis_url):
        try:
            for key, data in objects[:3]:
                await uploader.put(key, data)
            assert await uploader.flush(10)
            await asyncio.to_thread(s3_server_restartable.stop)
            down_at = time.monotonic()
            # The broadcast goes on through the outage: a segment every few seconds.
            rest = objects[3:]
            pace = OUTAGE_S / (len(rest) + 1)
            for key, data in rest:
                await asyncio.sleep(pace)
                await uploader.put(key, data)
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            assert uploader.pending > 0 and not uploader.healthy
            await asyncio.to_thread(s3_server_restartable.start)
            await live.publish(BROADCASTS_TOPIC, BroadcastEnded("b1", "ch1"))
            await asyncio.to_thread(wait_until, lambda: vod_state(catalog, "b1")
                                    is VodState.COMPLETE, 120, "VOD not complete", 0.1)
            assert await uploader.flush(30)
        finally:
            await uploader.close()
    for key, data in objects:
        assert storage.get(key) == data, key
    allow_public_read(client, bucket)
    url = f"{s3_server_restartable.endpoint_url}/{bucket}/{PREFIX}/{master_key('b1')}"
    # Every frame of the first session; after the reconnect ffmpeg 5.1's HLS demuxer
    # drops the GOP following the EXT-X-MAP change (the MP4 export test counts them all).
    assert await asyncio.to_thread(count_frames, url) >= two_runs[0].frames
