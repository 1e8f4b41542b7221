"""Redis restarted empty in the middle of a broadcast: the VOD still holds every frame.

A real ingest node and an archiver share a real redis-server (live state and events), a
SQLite catalog and local storage. A real ffmpeg publisher streams a clip; halfway
through, redis-server is restarted with nothing in it: the live segment log, the
broadcast's live record and the channel claim are gone. The VOD must still contain every
published frame (it is made from the catalog's durable segment log)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from castway.model import BroadcastState
from tests.archiver.helpers import count_frames
from tests.fixtures.redis_server import RedisServer
from tests.reliability.node import FPS, publishing

pytestmark = pytest.mark.peer


async def test_a_redis_restarted_empty_mid_broadcast_loses_nothing_from_the_vod(
        tmp_path: Path, restartable_redis: RedisServer) -> None:
    async with publishing(tmp_path, seconds=8.0, redis_url=restartable_redis.url) as stage:
        broadcast_id = await stage.broadcast_with_segments(3)
        await asyncio.to_thread(restartable_redis.stop)
        await asyncio.to_thread(restartable_redis.start)  # empty: no persistence
        assert await stage.services.live.segment_log(broadcast_id, "source") == []
        assert await asyncio.to_thread(stage.publisher.wait, 60) == 0  # published it all
        await stage.vod_complete(broadcast_id)
        broadcast = stage.services.catalog.get_broadcast(broadcast_id)
    assert broadcast is not None and broadcast.state is BroadcastState.ENDED
    master = stage.master(broadcast_id)
    assert count_frames(str(master)) == 8 * FPS  # every published frame, source first
    for rendition in ("source", "90p"):
        text = (master.parent / rendition / "vod.m3u8").read_text()
        msns = [int(line[:-4]) for line in text.splitlines() if line.endswith(".m4s")]
        assert msns == list(range(len(msns))) and len(msns) >= 7, (rendition, msns)
