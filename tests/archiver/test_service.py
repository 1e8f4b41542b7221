"""The archiver service: broadcast events in, VODs out (embedded), or Celery tasks out
(distributed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from botocore.config import Config

from archiver.celery_app import make_celery
from archiver.context import ArchiveContext
from archiver.service import TASK_MAKE_VOD, ArchiverService
from castway.events.broadcasts import (
    BROADCASTS_TOPIC,
    BroadcastEnded,
    BroadcastFailed,
    BroadcastStarted,
)
from castway.layout import master_key
from castway.model import BroadcastState, VodState
from castway.settings import Settings
from castway.storage.s3 import S3Storage
from castway.storage.uploader import Uploader
from tests.archiver.helpers import HlsRun, allow_public_read, count_frames, publish
from tests.fixtures.s3_server import S3Server, create_bucket

pytestmark = pytest.mark.peer


@pytest.fixture
async def service(ctx: ArchiveContext) -> AsyncIterator[ArchiverService]:
    svc = ArchiverService(ctx.settings, ctx.catalog, ctx.live, ctx.storage)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def end(ctx: ArchiveContext, broadcast_id: str, *, failed: bool = False) -> None:
    await ctx.live.publish(BROADCASTS_TOPIC, BroadcastFailed(broadcast_id, "ch1", "lost")
                           if failed else BroadcastEnded(broadcast_id, "ch1"))


async def test_the_vod_is_playable_within_a_second_of_the_end_event(
        ctx: ArchiveContext, service: ArchiverService,
        two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    ended = time.monotonic()
    await end(ctx, "b1")
    assert await service.wait_vod("b1", 1.0)
    assert time.monotonic() - ended < 1.0
    assert ctx.storage.exists(master_key("b1"))
    assert await service.idle(30)
    vod = ctx.catalog.get_vod("b1")
    assert vod is not None and vod.state is VodState.COMPLETE
    assert ctx.storage.exists("broadcasts/b1/thumbs.vtt")
    assert ctx.storage.exists("broadcasts/b1/poster.jpg")


async def test_a_failed_broadcast_is_archived_too_and_a_start_is_not_an_end(
        ctx: ArchiveContext, service: ArchiverService,
        two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    await ctx.live.publish(BROADCASTS_TOPIC, BroadcastStarted("b2", "ch1"))
    await end(ctx, "b1", failed=True)
    await end(ctx, "b1", failed=True)  # a duplicate
    assert await service.wait_vod("b1", 5.0)
    assert await service.idle(30)
    vod = ctx.catalog.get_vod("b1")
    assert vod is not None and vod.state is VodState.COMPLETE


async def test_logs_followed_while_live_leave_only_the_tail_for_the_end(
        ctx: ArchiveContext, service: ArchiverService,
        two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    await ctx.live.put_broadcast(replace(published.broadcast, state=BroadcastState.LIVE))
    assert await service.follow_now() == 7
    extra = replace(published.segments["source"][-1], msn=7, key="broadcasts/b1/source/6.m4s")
    await ctx.live.append_segment_log("b1", "source", extra)  # after the last follow
    await ctx.live.put_broadcast(published.broadcast)  # ended
    await end(ctx, "b1")
    assert await service.wait_vod("b1", 5.0)
    media = ctx.storage.get("broadcasts/b1/source/vod.m3u8")
    assert media is not None
    assert media.decode().count(".m4s") == 8  # the followed seven and the tail


async def test_an_export_request_runs_in_process(
        ctx: ArchiveContext, service: ArchiverService,
        two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    await end(ctx, "b1")
    assert await service.wait_vod("b1", 5.0)
    await service.request_export("b1")
    assert await service.idle(60)
    vod = ctx.catalog.get_vod("b1")
    assert vod is not None and vod.mp4_key == "broadcasts/b1/export.mp4"
    assert vod.mp4_progress == 1.0


async def test_an_export_request_heard_by_two_archivers_runs_once(
        ctx: ArchiveContext, service: ArchiverService,
        two_runs: tuple[HlsRun, HlsRun], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every archiver hears each request (castway.events.archive): the export is claimed
    by VOD id, so one of them runs it; a repeat while it is claimed is the same export."""
    from castway.events.archive import ARCHIVE_REQUESTS_TOPIC, ExportRequested

    await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    await end(ctx, "b1")
    assert await service.wait_vod("b1", 5.0)
    other = ArchiverService(ctx.settings, ctx.catalog, ctx.live, ctx.storage)
    await other.start()
    started: list[str] = []
    try:
        for svc in (service, other):
            original = svc.request_export

            async def counted(vod_id: str, original: object = original) -> None:
                started.append(vod_id)
                await original(vod_id)  # type: ignore[operator]

            monkeypatch.setattr(svc, "request_export", counted)
        assert await ctx.live.publish(ARCHIVE_REQUESTS_TOPIC, ExportRequested("b1")) == 2
        assert await ctx.live.publish(ARCHIVE_REQUESTS_TOPIC, ExportRequested("b1")) == 2
        deadline = time.monotonic() + 60
        while (vod := ctx.catalog.get_vod("b1")) is None or vod.mp4_key is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await service.idle(60) and await other.idle(60)
    finally:
        await other.stop()
    assert started == ["b1"]


async def test_segments_spooled_through_an_s3_outage_complete_the_vod(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun],
        s3_server_restartable: S3Server, tmp_path: Path) -> None:
    client = s3_server_restartable.client(Config(connect_timeout=0.5, read_timeout=2.0,
                                                 retries={"max_attempts": 1}))
    storage = S3Storage(create_bucket(client), "archive", client=client)
    s3ctx = ArchiveContext(ctx.settings, ctx.catalog, ctx.live, storage)
    uploader = Uploader(storage, tmp_path / "spool", base_backoff_s=0.05, max_backoff_s=0.5)
    svc = ArchiverService(ctx.settings, ctx.catalog, ctx.live, storage)
    await svc.start()
    try:
        published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                                  storage=None, store=False)
        objects = list(published.payloads.items())
        half = len(objects) // 2
        for key, data in objects[:half]:
            await uploader.put(key, data)
        assert await uploader.flush(10)
        await asyncio.to_thread(s3_server_restartable.stop)
        for key, data in objects[half:]:  # the broadcast goes on while S3 is down
            await uploader.put(key, data)
        assert uploader.pending > 0
        await asyncio.to_thread(s3_server_restartable.start)
        await end(ctx, "b1")  # the end event may come before the spool drained
        assert await svc.wait_vod("b1", 10.0)
        assert await svc.idle(60)
        vod = ctx.catalog.get_vod("b1")
        assert vod is not None and vod.state is VodState.COMPLETE
        assert uploader.pending == 0
        for key, data in objects:
            assert await asyncio.to_thread(storage.get, key) == data
        allow_public_read(client, storage.bucket)  # (the restart forgot bucket policies)
        url = f"{s3_server_restartable.endpoint_url}/{storage.bucket}/archive/" \
              f"{master_key('b1')}"
        # Straight from the S3 API, as CloudFront would fetch it; the first session has
        # every frame (ffmpeg 5.1's HLS demuxer drops the GOP after an EXT-X-MAP change).
        assert count_frames(url) >= two_runs[0].frames
        assert s3ctx.storage is storage
    finally:
        await svc.stop()
        await uploader.close()


async def test_distributed_mode_enqueues_a_celery_task_per_end_event(
        ctx: ArchiveContext, redis_url: str) -> None:
    settings = Settings(data_dir=ctx.settings.data_dir, redis_url=redis_url)
    app = make_celery(settings, listen=False)
    svc = ArchiverService(settings, ctx.catalog, ctx.live, ctx.storage, celery=app)
    await svc.start()
    try:
        await svc.broadcast_ended("b9")
    finally:
        await svc.stop()
    r = redis.Redis.from_url(redis_url)
    try:
        queued = r.lrange("celery", 0, -1)
    finally:
        r.close()
    assert len(queued) == 1
    assert TASK_MAKE_VOD.encode() in queued[0] and b"b9" in queued[0]
