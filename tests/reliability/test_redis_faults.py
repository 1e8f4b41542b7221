"""Redis, the live state of distributed mode, restarted empty and then frozen during a
real publish: a real ingest node (IngestNode: RTMP server, transcoder child, uploader,
node agent) fed by the ffmpeg CLI, and an origin with a Redis connection of its own (as
its separate process has), watched over HTTP as viewers see it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from castway.keys import hash_stream_key
from castway.live import open_live_state
from castway.live.redis import OPERATION_TIMEOUT_S
from castway.model import Channel, StreamKey
from castway.settings import Settings
from launch.ingest_node import IngestNode
from launch.services import Services
from origin.app import create_app
from tests.fixtures.redis_server import RedisServer
from tests.support import free_port, make_test_media, require_tool, serve_app

pytestmark = [pytest.mark.peer, pytest.mark.slow]

CLIP_S = 60.0  # outlives the test: the publisher streams throughout
KEY = "cw_alpha-key"
PLAYLIST = "/hls/alpha/source/index.m3u8"
MASTER = "/hls/alpha/master.m3u8"
BACK_WITHIN_S = 15.0  # "within seconds": the node checks its broadcasts every 2 s
_MSN = re.compile(r"#EXT-X-MEDIA-SEQUENCE:(\d+)")
_SEGMENT = re.compile(r"^[^#\s].*$", re.MULTILINE)


def _last_msn(playlist: str) -> int:
    match = _MSN.search(playlist)
    assert match is not None, playlist
    return int(match.group(1)) + len(_SEGMENT.findall(playlist)) - 1


async def _live_past(client: httpx.AsyncClient, msn: int, timeout_s: float) -> int:
    """Poll as a viewer until the master answers and the media playlist's newest
    segment is past ``msn``; that segment's number."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "nothing yet"
    while loop.time() < deadline:
        master, media = await client.get(MASTER), await client.get(PLAYLIST)
        last = f"{master.status_code} {media.status_code} {media.text[:200]!r}"
        if master.status_code == 200 and media.status_code == 200:
            newest = _last_msn(media.text)
            if newest > msn:
                return newest
        await asyncio.sleep(0.2)
    raise AssertionError(f"not live past segment {msn} within {timeout_s}s: {last}")


async def test_live_comes_back_after_redis_restarts_empty_and_a_frozen_redis_is_a_503(
        tmp_path: Path, restartable_redis: RedisServer) -> None:
    ffmpeg = require_tool("ffmpeg")
    clip = await asyncio.to_thread(make_test_media, tmp_path / "clip.flv", seconds=CLIP_S,
                                   width=320, height=180, gop=30)
    settings = Settings(
        data_dir=tmp_path / "node", database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        storage_url=str(tmp_path / "storage"), redis_url=restartable_redis.url,
        host="127.0.0.1", rtmp_port=free_port(), node_id="node-a", reconnect_grace_s=5,
        ladder="source", target_segment_s=1.0, heartbeat_ttl_s=3.0)
    services = Services.open(settings)
    services.catalog.create_channel(Channel("alpha"))
    services.catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    node = IngestNode(services)
    await node.start()
    origin_live = open_live_state(settings)
    app = create_app(settings, catalog=services.catalog, live=origin_live,
                     storage=services.storage)
    loop = asyncio.get_running_loop()
    try:
        async with serve_app(app) as base, \
                httpx.AsyncClient(base_url=base, timeout=60) as client:
            publisher = await asyncio.create_subprocess_exec(
                ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip),
                "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{settings.rtmp_port}/live/{KEY}",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            try:
                before = await _live_past(client, 1, timeout_s=30)

                # Redis restarts with nothing in it; the publisher streams on.
                await asyncio.to_thread(restartable_redis.restart)
                restarted = loop.time()
                after = await _live_past(client, before, timeout_s=BACK_WITHIN_S)
                print(f"live again {loop.time() - restarted:.1f}s after the restart")
                await _live_past(client, after, timeout_s=10)  # and it keeps going

                # Redis hangs: the origin says so in time instead of hanging with it.
                restartable_redis.freeze()
                try:
                    for path in (MASTER, PLAYLIST):
                        started = loop.time()
                        response = await client.get(path)
                        took = loop.time() - started
                        assert response.status_code == 503, (path, response.text)
                        assert took < OPERATION_TIMEOUT_S + 3, (path, took)
                finally:
                    restartable_redis.thaw()
                await _live_past(client, after, timeout_s=BACK_WITHIN_S)
            finally:
                if publisher.returncode is None:
                    publisher.kill()
                await publisher.wait()
    finally:
        await node.stop()
        await origin_live.close()
        await services.close()
