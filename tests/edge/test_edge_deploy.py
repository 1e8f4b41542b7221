"""Issue 15's acceptance scenario on real processes: one edge, two transcoding nodes,
publishers that cannot reconnect (two ffmpeg CLIs and a GStreamer rtmpsink pipeline: librtmp)
publishing through the edge. A deploy of the transcoding tier (the scheduler, ticking,
with a new desired version) moves every broadcast to the new version's nodes while the
publishers stay connected to the edge: each broadcast keeps its id, its playlists never
go back, its media has no gap longer than a segment, the old nodes stop within a minute
of the deploy -- not when the broadcasts end -- and each VOD plays end to end."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from castway.live.base import LiveState
from castway.model import NodeTier
from castway.settings import Settings
from scheduler.backends.local import LocalBackend
from scheduler.coordination import RedisCoordinator
from scheduler.tick import Scheduler
from tests.edge.conftest import node_env, nodes_of
from tests.edge.test_edge_fleet import WindowWatch, watching
from tests.scheduler.test_local_fleet import publish, until
from tests.support import make_test_media, require_tool
from tests.vod_decode import decoded_video_frames

pytestmark = [pytest.mark.peer, pytest.mark.slow]

LADDER = '{"rungs": [{"name": "90p", "height": 90, "video_bitrate_kbps": 100}]}'
SECONDS = 45.0  # each broadcast's length: far beyond the deploy
FPS = 30


@pytest.fixture
def deploy_settings(settings: Settings, tmp_path: Path) -> Settings:
    # 3 broadcasts and 2 free slots of headroom on nodes of 4: two nodes a version
    return settings.model_copy(update={
        "edge_tier": True, "edge_capacity": 20, "edge_headroom_min_slots": 1,
        "edge_headroom_fraction": 0.0, "edge_desired_version": "v1",
        "headroom_min_slots": 2, "headroom_fraction": 0.0, "node_capacity": 4})


@pytest.fixture
def fleet(deploy_settings: Settings, channels: dict[str, str], tmp_path: Path
          ) -> Iterator[LocalBackend]:
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    env = node_env(deploy_settings, transcode=True)
    env.update(CASTWAY_LADDER=str(ladder), CASTWAY_STOP_TIMEOUT_S="120")
    b = LocalBackend(deploy_settings, command=[sys.executable, "-m", "launch.cli", "ingest"],
                     edge_command=[sys.executable, "-m", "launch.cli", "edge"], env=env)
    yield b
    b.stop_all()


def gstreamer_publish(url: str, seconds: float) -> subprocess.Popen[bytes]:
    gst = require_tool("gst-launch-1.0")
    frames = int(seconds * FPS)
    audio_buffers = int(seconds * 44100 / 1024)
    pipeline = (
        f"videotestsrc is-live=true num-buffers={frames} pattern=ball ! "
        f"video/x-raw,width=320,height=180,framerate={FPS}/1 ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} bitrate=300 ! "
        f"h264parse ! flvmux name=m streamable=true ! rtmpsink location={url} "
        f"audiotestsrc is-live=true num-buffers={audio_buffers} samplesperbuffer=1024 ! "
        "audio/x-raw,rate=44100,channels=2 ! audioconvert ! voaacenc ! aacparse ! m.")
    return subprocess.Popen([gst, "-q", "-e", *pipeline.split()], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)


async def test_a_deploy_of_the_transcoding_tier_moves_every_broadcast_through_the_edge(
        deploy_settings: Settings, fleet: LocalBackend, live: LiveState,
        channels: dict[str, str], tmp_path: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    clip = make_test_media(tmp_path / "clip.flv", seconds=4.0, width=320, height=180,
                           gop=FPS)
    fleet.start(1, "v1", tier=NodeTier.EDGE)
    fleet.start(2, "v1")

    async def fleet_up() -> bool:
        return (len(await nodes_of(live, NodeTier.TRANSCODE)) == 2
                and len(await nodes_of(live, NodeTier.EDGE)) == 1)
    await until("two transcoding nodes and the edge active", fleet_up)
    [edge] = await nodes_of(live, NodeTier.EDGE)
    old_nodes = {n.id for n in await nodes_of(live, NodeTier.TRANSCODE)}
    publishers = [
        publish(ffmpeg, clip, edge.address, channels["alpha"], SECONDS),
        publish(ffmpeg, clip, edge.address, channels["beta"], SECONDS),
        gstreamer_publish(f"rtmp://{edge.address}/live/{channels['gamma']}", SECONDS)]
    names = ("alpha", "beta", "gamma")
    try:
        async def all_on_air() -> bool:
            found = [await live.live_broadcast(c) for c in names]
            return all(b is not None and b.renditions for b in found)
        await until("three broadcasts live", all_on_air)
        first = {c: await live.live_broadcast(c) for c in names}
        ids = {c: b.id for c, b in first.items() if b is not None}
        assert {b.node_id for b in first.values() if b is not None} <= old_nodes
        watches = [WindowWatch(live, bid) for bid in ids.values()]
        scheduler = Scheduler(deploy_settings.model_copy(update={"desired_version": "v2"}),
                              live, fleet,
                              coordinator=RedisCoordinator(deploy_settings.redis_url or ""))

        async with contextlib.AsyncExitStack() as stack:
            for w in watches:
                await stack.enter_async_context(watching(w))
            await asyncio.sleep(4)  # segments on the old nodes first
            deployed_at = time.monotonic()
            # stopped as `castway scheduler run` stops it, between ticks: a tick
            # cancelled in the middle of its Redis commands once left this test hanging
            # on the cancelled task (one fresh-clone CI run in four)
            stop = asyncio.Event()
            ticker = asyncio.create_task(scheduler.run(1.0, stop))
            try:
                async def old_nodes_gone() -> bool:
                    running = {i.node_id for i in fleet.list_instances()}
                    return not (old_nodes & running)
                await until("the old version's nodes stopped", old_nodes_gone, timeout_s=60)
                stopped_after_s = time.monotonic() - deployed_at
                for channel in names:
                    now = await live.live_broadcast(channel)
                    assert now is not None and now.id == ids[channel], channel
                    assert now.node_id not in old_nodes
                    new = {n.id: n for n in await live.list_nodes()}[now.node_id]
                    assert new.image_version == "v2" and new.tier is NodeTier.TRANSCODE
                assert all(p.poll() is None for p in publishers), \
                    "every publisher stays connected to the edge"
                await asyncio.sleep(4)  # segments on the new nodes
            finally:
                stop.set()
                await asyncio.wait_for(ticker, 60)
        for w in watches:
            assert w.went_back == []
            assert w.largest_gap_s(clock=2) <= deploy_settings.target_segment_s + 0.1
        print(f"old nodes stopped {stopped_after_s:.1f} s after the deploy; largest media "
              f"gap {max(w.largest_gap_s(clock=2) for w in watches):.2f} s")
        for p in publishers:
            p.wait(SECONDS + 30)
            assert p.returncode == 0

        async def all_ended() -> bool:
            return [await live.live_broadcast(c) for c in names] == [None] * len(names)
        await until("the broadcasts ended", all_ended)
    finally:
        for p in publishers:
            if p.poll() is None:
                p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
    # Each VOD, over the segment log, plays end to end in ffmpeg's HLS demuxer.
    storage_root = tmp_path / "storage"  # the nodes' CASTWAY_STORAGE_URL (conftest)
    for channel, broadcast_id in ids.items():
        for rendition in ("source", "90p"):
            log = await live.segment_log(broadcast_id, rendition)
            assert [s.msn for s in log] == list(range(len(log))), (channel, rendition)
            assert sum(1 for s in log if s.discontinuity) == 1  # the move
            frames = decoded_video_frames(ffmpeg, storage_root, broadcast_id, rendition, log)
            assert frames == pytest.approx(SECONDS * FPS, rel=0.03), (channel, rendition)
