"""One real ingest node (RTMP server, transcoder children, uploader, segment recorder) and
an archiver on shared back ends, with a real ffmpeg publisher: the stage of the fault
tests that break a dependency in the middle of a broadcast."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.service import ArchiverService
from castway.keys import hash_stream_key
from castway.model import Channel, StreamKey, VodState
from castway.settings import Settings
from launch.ingest_node import IngestNode
from launch.services import Services
from tests.support import free_port, make_multitrack_media, make_test_media, require_tool

KEY = "cw_fault-test"
CHANNEL = "alpha"
LADDER = '{"rungs": [{"name": "90p", "height": 90, "video_bitrate_kbps": 100}]}'
FPS = 30
# An encoder-sent ladder: track 0 and one more (the 90p rung castway would make, it sends).
MULTITRACK_SIZES = ((320, 180), (160, 90))
REPO_ROOT = Path(__file__).resolve().parents[2]


async def poll(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Stage:
    services: Services
    node: IngestNode
    publisher: subprocess.Popen[bytes]
    storage_dir: Path

    async def broadcast_with_segments(self, segments: int, timeout_s: float = 30) -> str:
        """The channel's broadcast id once its source rendition has ``segments``."""
        async def enough() -> bool:
            broadcast_id = self.node.manager.broadcast_id(CHANNEL)
            return broadcast_id is not None and len(
                await self.services.live.segment_log(broadcast_id, "source")) >= segments

        await poll(f"{segments} segments", enough, timeout_s)
        broadcast_id = self.node.manager.broadcast_id(CHANNEL)
        assert broadcast_id is not None
        return str(broadcast_id)

    async def vod_complete(self, broadcast_id: str, timeout_s: float = 60) -> None:
        async def complete() -> bool:
            vod = await asyncio.to_thread(self.services.catalog.get_vod, broadcast_id)
            return vod is not None and vod.state is VodState.COMPLETE

        await poll("the VOD", complete, timeout_s)

    def metric(self, name: str) -> float:
        return self.services.registry.get_sample_value(name) or 0.0

    def master(self, broadcast_id: str) -> Path:
        return self.storage_dir / "broadcasts" / broadcast_id / "master.m3u8"


@asynccontextmanager
async def publishing(tmp_path: Path, *, seconds: float, multitrack: bool = False,
                     **settings: Any) -> AsyncIterator[Stage]:
    """A node and an archiver on ``settings`` (catalog, live state) with an ffmpeg
    publisher streaming ``seconds`` of 320x180p30 (1 s GOP) to the channel, in real time;
    everything is stopped at the end. ``multitrack``: an encoder-sent ladder instead
    (MULTITRACK_SIZES, two AAC tracks), published by FFmpeg 8's multitrack FLV muxer."""
    if multitrack:
        clip = make_multitrack_media(tmp_path / "clip.mkv", MULTITRACK_SIZES,
                                     seconds=seconds, fps=FPS,
                                     gops=(FPS,) * len(MULTITRACK_SIZES), audio_tracks=2)
    else:
        clip = make_test_media(tmp_path / "clip.flv", seconds=seconds, width=320,
                               height=180, gop=FPS)
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    rtmp_port = free_port()
    config = Settings(
        data_dir=tmp_path / "data", storage_url=str(tmp_path / "storage"),
        host="127.0.0.1", rtmp_port=rtmp_port, node_id="node-a", reconnect_grace_s=0.5,
        ladder=str(ladder), x264_preset="ultrafast", target_segment_s=1.0,
        archive_reconcile_interval_s=1.0, **settings)
    services = Services.open(config)
    services.catalog.create_channel(Channel(CHANNEL))
    services.catalog.add_stream_key(StreamKey(CHANNEL, hash_stream_key(KEY)))
    node = IngestNode(services)
    archiver = ArchiverService(config, services.catalog, services.live, services.storage)
    await archiver.start()
    await node.start()
    url = f"rtmp://127.0.0.1:{rtmp_port}/live/{KEY}"
    publisher = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.pyav_publish", str(clip), url, "--realtime"]
        if multitrack else
        [require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-i", str(clip),
         "-c", "copy", "-f", "flv", url],
        stderr=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        yield Stage(services, node, publisher, tmp_path / "storage")
    finally:
        if publisher.poll() is None:
            publisher.kill()
        publisher.wait()
        await node.stop()
        await archiver.stop()
        await services.close()
