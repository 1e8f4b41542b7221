"""Redis restarted empty in the middle of a broadcast: the VOD still holds every frame.

A real ingest node (RTMP server, transcoder child, uploader, segment recorder) and an
archiver share a real redis-server (live state and events), a SQLite catalog and local
storage. A real ffmpeg publisher streams a clip; halfway through, redis-server is
restarted with nothing in it: the live segment log, the broadcast's live record and the
channel claim are gone. The VOD must still contain every published frame."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from archiver.service import ArchiverService
from castway.keys import hash_stream_key
from castway.model import BroadcastState, Channel, StreamKey, VodState
from castway.serve import IngestNode, Services
from castway.settings import Settings
from tests.archiver.helpers import count_frames
from tests.fixtures.redis_server import RedisServer
from tests.support import free_port, make_test_media, require_tool

pytestmark = pytest.mark.peer

KEY = "cw_redis-restart"
LADDER = '{"rungs": [{"name": "90p", "height": 90, "video_bitrate_kbps": 100}]}'


async def wait_for(what: str, check: object, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_a_redis_restarted_empty_mid_broadcast_loses_nothing_from_the_vod(
        tmp_path: Path, restartable_redis: RedisServer) -> None:
    clip = make_test_media(tmp_path / "clip.flv", seconds=8.0, width=320, height=180,
                           gop=30)
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    rtmp_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data", storage_url=str(tmp_path / "storage"),
        redis_url=restartable_redis.url, host="127.0.0.1", rtmp_port=rtmp_port,
        node_id="node-a", reconnect_grace_s=0.5, ladder=str(ladder), x264_preset="ultrafast",
        target_segment_s=1.0, archive_reconcile_interval_s=1.0)
    services = Services.open(settings)
    services.catalog.create_channel(Channel("alpha"))
    services.catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    node = IngestNode(services)
    archiver = ArchiverService(settings, services.catalog, services.live, services.storage)
    await archiver.start()
    await node.start()
    publisher = subprocess.Popen(
        [require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-i", str(clip),
         "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/{KEY}"],
        stderr=subprocess.PIPE)
    try:
        async def three_segments() -> bool:
            broadcast_id = node.manager.broadcast_id("alpha")
            if broadcast_id is None:
                return False
            return len(await services.live.segment_log(broadcast_id, "source")) >= 3

        await wait_for("three segments", three_segments, 30)
        broadcast_id = node.manager.broadcast_id("alpha")
        assert broadcast_id is not None
        await asyncio.to_thread(restartable_redis.stop)
        await asyncio.to_thread(restartable_redis.start)  # empty: no persistence
        assert await services.live.segment_log(broadcast_id, "source") == []

        assert await asyncio.to_thread(publisher.wait, 60) == 0  # it published it all

        async def vod_complete() -> bool:
            vod = services.catalog.get_vod(broadcast_id)
            return vod is not None and vod.state is VodState.COMPLETE

        await wait_for("the VOD", vod_complete, 60)
    finally:
        if publisher.poll() is None:
            publisher.kill()
        publisher.wait()
        await node.stop()
        await archiver.stop()
        await services.close()
    broadcast = services.catalog.get_broadcast(broadcast_id)
    assert broadcast is not None and broadcast.state is BroadcastState.ENDED
    master = tmp_path / "storage" / "broadcasts" / broadcast_id / "master.m3u8"
    assert count_frames(str(master)) == 8 * 30  # every published frame, source first
    for rendition in ("source", "90p"):
        text = (master.parent / rendition / "vod.m3u8").read_text()
        msns = [int(line[:-4]) for line in text.splitlines() if line.endswith(".m4s")]
        assert msns == list(range(len(msns))) and len(msns) >= 7, (rendition, msns)
