"""A live broadcast moves between two real ingest nodes (IngestNode: RTMP server, real
transcoder children, uploader, node agent) that share a Redis live state, a catalog and
storage, as a fleet does. Node A is drained with node B as the load-balanced URL; the
E-RTMP v2 reconnect-capable publisher moves to B within the grace window and the SAME
broadcast continues there, then ends there. Checked on what viewers and the archive get:
the playlists, the segment log, the stored bytes, and ffmpeg's HLS demuxer reading the
finished playlist end to end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from castway.events.broadcasts import (
    BROADCASTS_TOPIC,
    BroadcastEnd,
    BroadcastEnded,
    BroadcastEvent,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.hls.playlist import render_media_playlist
from castway.keys import hash_stream_key
from castway.live.base import Subscription
from castway.model import BroadcastState, Channel, StreamKey
from castway.settings import Settings
from launch.ingest_node import IngestNode
from launch.services import Services
from tests.hls_validator import validate_playlist
from tests.ingest.reconnect_client import ReconnectingPublisher, flv_body
from tests.support import free_ports, make_test_media, require_tool
from tests.vod_decode import decoded_video_frames
from transcoder.demux import read_packets

LADDER = '{"rungs": [{"name": "90p", "height": 90, "video_bitrate_kbps": 100}]}'
KEY = "cw_alpha-key"
RENDITIONS = ("source", "90p")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 320x180p30 H.264 (keyframe every 1 s) + AAC."""
    return make_test_media(tmp_path_factory.mktemp("handover") / "clip.mp4", seconds=3.0,
                           width=320, height=180, gop=30)


def node_settings(tmp_path: Path, redis_url: str, name: str, port: int,
                  public_port: int, grace_s: float) -> Settings:
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    return Settings(
        data_dir=tmp_path / name, database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        storage_url=str(tmp_path / "storage"), redis_url=redis_url, host="127.0.0.1",
        rtmp_port=port, node_id=name, reconnect_grace_s=grace_s, ladder=str(ladder),
        x264_preset="ultrafast", live_window_segments=4, heartbeat_ttl_s=3.0,
        # The load balancer of this test sends reconnecting publishers to node B.
        public_rtmp_url=f"rtmp://127.0.0.1:{public_port}/live")


@contextlib.asynccontextmanager
async def ingest_node(settings: Settings) -> AsyncIterator[IngestNode]:
    services = Services.open(settings)
    node = IngestNode(services)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
        await services.close()


async def events_until_ended(sub: Subscription[BroadcastEvent],
                             into: list[BroadcastEvent]) -> None:
    while True:
        event = await sub.get()
        into.append(event)
        if isinstance(event, BroadcastEnd):
            return


@pytest.mark.peer
@pytest.mark.parametrize("make_before_break", [False, True],
                         ids=["break-before-make", "make-before-break"])
async def test_a_drained_node_hands_its_broadcast_to_the_node_the_publisher_moves_to(
        tmp_path: Path, redis_url: str, clip: Path, make_before_break: bool) -> None:
    ffmpeg = require_tool("ffmpeg")
    packets = list(read_packets(clip))
    video_config = next(p for p in packets if p.is_config and p.kind.value == "video")
    audio_config = next(p for p in packets if p.is_config and p.kind.value == "audio")
    media = [p for p in packets if not p.is_config]
    clip_ms = max(p.dts_ms for p in media) + 40
    port_a, port_b = free_ports(2)
    settings_a = node_settings(tmp_path, redis_url, "node-a", port_a, port_b, grace_s=30.0)
    # B ends the broadcast soon after its publisher leaves (the real end).
    settings_b = node_settings(tmp_path, redis_url, "node-b", port_b, port_b, grace_s=0.5)
    events: list[BroadcastEvent] = []
    async with ingest_node(settings_b) as node_b, ingest_node(settings_a) as node_a:
        catalog = node_a.services.catalog
        catalog.create_channel(Channel("alpha"))
        catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
        live = node_a.services.live
        pub = ReconnectingPublisher(KEY, video_config=flv_body(video_config),
                                    audio_config=flv_body(audio_config),
                                    make_before_break=make_before_break)
        async with await live.subscribe(BROADCASTS_TOPIC) as sub:
            watcher = asyncio.create_task(events_until_ended(sub, events))
            try:
                await pub.start(f"rtmp://127.0.0.1:{port_a}/live")
                for packet in media:
                    await pub.send_packet(packet)
                broadcast_id = node_a.manager.broadcast_id("alpha")
                assert broadcast_id is not None

                await node_a.drain()  # scale-in / new image: A asks the publisher to move
                assert await pub.wait_for_reconnect_request() == \
                    f"rtmp://127.0.0.1:{port_b}/live"
                # Publishing on B was accepted (the client asserts NetStream.Publish.Start).
                assert node_b.manager.broadcast_id("alpha") == broadcast_id
                assert node_a.manager.broadcast_id("alpha") is None
                for packet in media:  # the stream goes on, its clock too
                    await pub.send_packet(packet, shift_ms=clip_ms)
                assert pub.link is not None
                await pub.link.finish()  # the broadcaster stops streaming
                await asyncio.wait_for(watcher, 60)
            finally:
                watcher.cancel()
                await pub.close()
        assert events == [BroadcastStarted(broadcast_id, "alpha"),
                          BroadcastResumed(broadcast_id, "alpha", "node-b"),
                          BroadcastEnded(broadcast_id, "alpha")]
        stored = catalog.get_broadcast(broadcast_id)
        assert stored is not None and stored.state is BroadcastState.ENDED
        assert stored.node_id == "node-b"
        assert {r.name for r in stored.renditions} == set(RENDITIONS)
        logs = {}
        for rendition in RENDITIONS:
            window = await live.get_window(broadcast_id, rendition)
            assert window is not None and window.ended  # EXT-X-ENDLIST: the real end
            text = render_media_playlist(window, uri_for_key=lambda k: k)
            assert validate_playlist(text) == []
            assert text.count("#EXT-X-ENDLIST") == 1
            logs[rendition] = await live.segment_log(broadcast_id, rendition)
    # Both nodes stopped: their uploaders have put everything in storage.
    storage_root = tmp_path / "storage"
    for rendition, log in logs.items():
        msns = [s.msn for s in log]
        assert msns == list(range(len(log)))  # strictly increasing, none reused
        breaks = [s.msn for s in log if s.discontinuity]
        assert len(breaks) == 1  # the handover, nothing else
        on_a, on_b = log[:breaks[0]], log[breaks[0]:]
        assert on_a and on_b  # segments from both nodes, in order
        assert sum(s.duration_s for s in on_a) == pytest.approx(clip_ms / 1000, abs=0.1)
        init_a = {s.init_key for s in on_a}
        init_b = {s.init_key for s in on_b}
        assert init_a == {f"broadcasts/{broadcast_id}/{rendition}/init.mp4"}
        assert init_b == {f"broadcasts/{broadcast_id}/{rendition}/init.1.mp4"}
        assert [s.discontinuity_seq for s in log] == [0] * len(on_a) + [1] * len(on_b)
        dates = [s.program_date_time for s in log]
        assert dates == sorted(dates)
        for segment in log:
            assert (storage_root / segment.key).stat().st_size == segment.size
        # The archive's VOD playlist over the log, read end to end by ffmpeg's HLS demuxer.
        frames = decoded_video_frames(ffmpeg, storage_root, broadcast_id, rendition, log)
        # Every frame of both halves decodes (30 fps, 2 x 3 s; give or take an edge frame).
        assert frames == pytest.approx(2 * 30 * clip_ms / 1000, abs=3)
