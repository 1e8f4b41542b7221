"""BroadcastManager against the real catalog (SQLite) and the real in-memory live state."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry

from castway.catalog import CatalogUnavailable, open_catalog
from castway.catalog.sql import SqlCatalog
from castway.events.broadcasts import (
    BROADCASTS_TOPIC,
    BroadcastEnded,
    BroadcastFailed,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.keys import hash_stream_key
from castway.live.base import Subscription
from castway.live.memory import MemoryLiveState
from castway.media import Codec, MediaKind, MediaPacket
from castway.model import Broadcast, BroadcastState, Channel, Rendition, StreamKey
from castway.settings import Settings
from ingest.broadcasts import (
    BroadcastManager,
    parse_audio_specific_config,
    source_from_metadata,
)
from ingest.publish import PublishRequest, PublishSession, Rejection
from tests.fixtures.tiny_disk import fill

T = TypeVar("T")

KEY = "cw_test-key"
OTHER_KEY = "cw_other-key"


class RecordingMedia:
    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast
        self.packets: list[MediaPacket] = []
        self.discontinuities = 0
        self.finished = False
        self.handed_over = False
        self.dropped = 3

    async def feed(self, packet: MediaPacket) -> None:
        self.packets.append(packet)

    async def discontinuity(self) -> None:
        self.discontinuities += 1

    async def finish(self, *, failed: bool = False) -> None:
        self.finished = True

    async def hand_over(self) -> None:
        self.handed_over = True


class RecordingPipeline:
    def __init__(self) -> None:
        self.started: list[RecordingMedia] = []
        self.handovers: list[RecordingMedia] = []  # started for a handed-over broadcast

    async def start(self, broadcast: Broadcast, *, handover: bool = False) -> RecordingMedia:
        media = RecordingMedia(broadcast)
        self.started.append(media)
        if handover:
            self.handovers.append(media)
        return media


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqlCatalog]:
    cat = open_catalog(Settings(data_dir=tmp_path))
    for name, key in (("alpha", KEY), ("beta", OTHER_KEY)):
        cat.create_channel(Channel(name))
        cat.add_stream_key(StreamKey(name, hash_stream_key(key)))
    yield cat
    cat.close()


@pytest.fixture
async def live() -> AsyncIterator[MemoryLiveState]:
    state = MemoryLiveState()
    yield state
    await state.close()


@pytest.fixture
def pipeline() -> RecordingPipeline:
    return RecordingPipeline()


def make_manager(catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline | None,
                 grace_s: float = 30.0, registry: CollectorRegistry | None = None,
                 ) -> BroadcastManager:
    settings = Settings(node_id="node-a", reconnect_grace_s=grace_s)
    return BroadcastManager(settings, catalog=catalog, live=live, pipeline=pipeline,
                            registry=registry or CollectorRegistry())


def request(key: str = KEY, connection_id: str = "c1") -> PublishRequest:
    return PublishRequest(app="live", stream_key=key, peer="127.0.0.1:5000",
                          connection_id=connection_id)


async def accepted(manager: BroadcastManager, req: PublishRequest) -> PublishSession:
    outcome = await manager.on_publish(req)
    assert not isinstance(outcome, Rejection), outcome
    return outcome


async def next_event(sub: Subscription[T]) -> T:
    return await asyncio.wait_for(sub.get(), 10)


VIDEO_CONFIG = MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0, b"\x01avcC")
AUDIO_CONFIG = MediaPacket(MediaKind.AUDIO, Codec.AAC, True, True, 0, 0, b"\x11\x90")


def frame(ts: int) -> MediaPacket:
    return MediaPacket(MediaKind.VIDEO, Codec.H264, ts == 0, False, ts, ts, bytes(1000))


async def test_unknown_key_is_bad_name(catalog: SqlCatalog, live: MemoryLiveState) -> None:
    manager = make_manager(catalog, live, None)
    outcome = await manager.on_publish(request("cw_nope"))
    assert outcome == Rejection.bad_name()


async def test_publish_goes_live_everywhere_and_feeds_the_pipeline(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline)
    async with await live.subscribe(BROADCASTS_TOPIC) as sub:
        session = await accepted(manager, request())
        event = await next_event(sub)
    broadcast = await live.live_broadcast("alpha")
    assert broadcast is not None and event == BroadcastStarted(broadcast.id, "alpha")
    assert broadcast.node_id == "node-a" and broadcast.state is BroadcastState.LIVE
    stored = catalog.get_broadcast(broadcast.id)
    assert stored is not None and stored.state is BroadcastState.LIVE
    [media] = pipeline.started
    assert media.broadcast.id == broadcast.id
    for packet in (VIDEO_CONFIG, AUDIO_CONFIG, frame(0), frame(33)):
        await session.on_packet(packet)
    assert media.packets == [VIDEO_CONFIG, AUDIO_CONFIG, frame(0), frame(33)]


async def test_publishes_and_packets_go_on_while_the_default_executor_is_full(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    """Every thread of asyncio's default executor held, as blocking storage calls
    elsewhere in the process hold them while S3 is frozen (the embedded archiver's):
    a publish still goes live, its packets (metadata and codec changes included, which
    write the catalog) still reach the pipeline, and it still ends."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    held = [loop.run_in_executor(None, release.wait)
            for _ in range(min(32, (os.cpu_count() or 1) + 4))]  # the default's size
    try:
        manager = make_manager(catalog, live, pipeline, grace_s=0.0)
        session = await asyncio.wait_for(manager.on_publish(request()), 5)
        assert not isinstance(session, Rejection), session
        await asyncio.wait_for(session.on_metadata({"width": 1280.0, "height": 720.0}), 5)
        for packet in (VIDEO_CONFIG, AUDIO_CONFIG, frame(0), frame(33)):
            await asyncio.wait_for(session.on_packet(packet), 5)
        [media] = pipeline.started
        assert media.packets == [VIDEO_CONFIG, AUDIO_CONFIG, frame(0), frame(33)]
        await asyncio.wait_for(session.on_close("publisher left"), 5)
        stored = catalog.get_broadcast(media.broadcast.id)
        assert stored is not None and stored.state is BroadcastState.ENDED
    finally:
        release.set()
        await asyncio.gather(*held)


async def test_second_publisher_is_refused_and_the_first_continues(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline)
    first = await accepted(manager, request(connection_id="c1"))
    assert await manager.on_publish(request(connection_id="c2")) == Rejection.already_live()
    await first.on_packet(frame(0))
    assert pipeline.started[0].packets == [frame(0)]
    assert len(pipeline.started) == 1


async def test_a_claim_held_elsewhere_in_the_fleet_refuses_the_publish(
        catalog: SqlCatalog, live: MemoryLiveState) -> None:
    assert await live.claim_channel("alpha", "other-node-conn", 30) is None
    manager = make_manager(catalog, live, None)
    assert await manager.on_publish(request()) == Rejection.already_live()


async def test_admission_refuses_new_broadcasts(catalog: SqlCatalog,
                                                live: MemoryLiveState) -> None:
    manager = make_manager(catalog, live, None)
    manager.admission = lambda: "ingest node is draining"
    outcome = await manager.on_publish(request())
    assert isinstance(outcome, Rejection) and "draining" in outcome.description
    assert outcome.code == "NetStream.Publish.Denied"
    assert await live.live_broadcast("alpha") is None


async def test_reconnect_within_grace_continues_the_same_broadcast(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline, grace_s=30)
    first = await accepted(manager, request(connection_id="c1"))
    broadcast_id = manager.broadcast_id("alpha")
    await first.on_close("disconnected")
    async with await live.subscribe(BROADCASTS_TOPIC) as sub:
        second = await accepted(manager, request(connection_id="c2"))
        event = await next_event(sub)
    assert broadcast_id is not None
    assert event == BroadcastResumed(broadcast_id, "alpha", "node-a")
    assert manager.broadcast_id("alpha") == broadcast_id
    [media] = pipeline.started
    assert media.discontinuities == 1 and not media.finished
    await second.on_packet(frame(0))
    assert media.packets == [frame(0)]
    # The claim moved to the new connection.
    assert await live.claim_channel("alpha", "c1", 30) == "c2"
    await manager.stop()


async def test_a_stop_ends_the_broadcast_at_once_and_cuts_its_publisher(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    """``stop_broadcast``: an operator's stop. The grace window (30 s here) is not waited
    out; the end is the usual one (ended event, media finished, catalog). Its effect on
    a real publisher and node: tests/test_stop_broadcast.py."""
    manager = make_manager(catalog, live, pipeline, grace_s=30)
    cut: list[str] = []

    def disconnect(connection_id: str) -> bool:  # the RTMP server's, recorded
        cut.append(connection_id)
        return True

    manager.disconnect_publisher = disconnect
    session = await accepted(manager, request(connection_id="c1"))
    broadcast_id = manager.broadcast_id("alpha")
    assert broadcast_id is not None
    assert await manager.stop_broadcast("no-such-broadcast") is False
    async with await live.subscribe(BROADCASTS_TOPIC) as sub:
        assert await manager.stop_broadcast(broadcast_id) is True
        assert await next_event(sub) == BroadcastEnded(broadcast_id, "alpha")
    assert cut == ["c1"]
    assert pipeline.started[0].finished and manager.broadcast_id("alpha") is None
    stored = catalog.get_broadcast(broadcast_id)
    assert stored is not None and stored.state is BroadcastState.ENDED
    await session.on_close("broadcast stopped")  # the cut connection's close changes nothing
    assert await manager.stop_broadcast(broadcast_id) is False  # not live here any more
    await manager.stop()


async def test_a_stop_ends_a_broadcast_waiting_for_its_publisher_to_come_back(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline, grace_s=30)
    session = await accepted(manager, request())
    broadcast_id = manager.broadcast_id("alpha")
    assert broadcast_id is not None
    await session.on_close("disconnected")  # in its grace window now
    assert await manager.stop_broadcast(broadcast_id) is True
    stored = catalog.get_broadcast(broadcast_id)
    assert stored is not None and stored.state is BroadcastState.ENDED
    assert await live.claim_channel("alpha", "next-publisher", 30) is None  # freed
    await manager.stop()


class RacingLiveState(MemoryLiveState):
    """Another node's publisher of the same key claims the channel the moment it is free."""

    async def release_claim(self, channel: str, owner: str) -> None:
        await super().release_claim(channel, owner)
        await self.claim_channel(channel, "intruder-on-node-b", 30)


async def test_a_reconnect_keeps_the_claim_from_any_other_node_throughout(
        catalog: SqlCatalog, pipeline: RecordingPipeline) -> None:
    live = RacingLiveState()
    manager = make_manager(catalog, live, pipeline, grace_s=30)
    first = await accepted(manager, request(connection_id="c1"))
    broadcast_id = manager.broadcast_id("alpha")
    await first.on_close("disconnected")
    # the claim passes from c1 to c2 in one step: no gap for the intruder
    await accepted(manager, request(connection_id="c2"))
    assert manager.broadcast_id("alpha") == broadcast_id
    assert await live.claim_channel("alpha", "intruder-on-node-b", 30) == "c2"
    await manager.stop()
    await live.close()


async def test_after_the_grace_window_the_broadcast_ends(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline, grace_s=0.05)
    session = await accepted(manager, request())
    broadcast_id = manager.broadcast_id("alpha")
    assert broadcast_id is not None
    # The transcoder side writes renditions meanwhile: the end must keep them.
    current = await live.get_broadcast(broadcast_id)
    assert current is not None
    rendition = Rendition("source", 320, 180, 30.0, None, "avc1.64001f")
    await live.put_broadcast(dataclasses.replace(current, renditions=(rendition,)))
    async with await live.subscribe(BROADCASTS_TOPIC) as sub:
        await session.on_close("disconnected")
        event = await next_event(sub)
    assert event == BroadcastEnded(broadcast_id, "alpha")
    assert pipeline.started[0].finished
    ended = catalog.get_broadcast(broadcast_id)
    assert ended is not None and ended.state is BroadcastState.ENDED
    assert ended.ended_at is not None and ended.renditions == (rendition,)
    assert await live.live_broadcast("alpha") is None
    # The claim is released: the channel can go live again, as a new broadcast.
    await accepted(manager, request(connection_id="c9"))
    assert manager.broadcast_id("alpha") not in (None, broadcast_id)
    await manager.stop()


async def test_metadata_and_config_records_fill_the_source_info_and_stats(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    registry = CollectorRegistry()
    manager = make_manager(catalog, live, pipeline, registry=registry)
    session = await accepted(manager, request())
    broadcast_id = manager.broadcast_id("alpha")
    assert broadcast_id is not None
    await session.on_metadata({"width": 1280.0, "height": 720.0, "framerate": 30.0,
                               "videocodecid": 7.0, "encoder": "obs-output module"})
    for packet in (VIDEO_CONFIG, AUDIO_CONFIG, *(frame(i * 33) for i in range(30))):
        await session.on_packet(packet)
    await manager.publish_stats()
    source = (await live.get_broadcast(broadcast_id)).source  # type: ignore[union-attr]
    assert source is not None
    assert (source.width, source.height, source.fps, source.encoder) == (
        1280, 720, 30.0, "obs-output module")
    assert (source.video_codec, source.audio_codec) == ("h264", "aac")
    assert (source.audio_sample_rate, source.audio_channels) == (48000, 2)
    for _ in range(100):  # the catalog's copy is written off the media path
        stored = catalog.get_broadcast(broadcast_id)
        if stored is not None and stored.source == source:
            break
        await asyncio.sleep(0.02)
    assert stored is not None and stored.source == source
    stats = await live.get_stats(broadcast_id)
    assert stats["video_codec"] == "h264" and stats["audio_codec"] == "aac"
    assert stats["encoder"] == "obs-output module" and stats["dropped"] == 3.0
    assert isinstance(stats["bitrate_kbps"], float) and stats["bitrate_kbps"] > 0
    assert isinstance(stats["fps"], float) and stats["fps"] > 0
    assert registry.get_sample_value("castway_ingest_packets_total", {"kind": "video"}) == 31
    assert registry.get_sample_value("castway_ingest_publishes_total",
                                     {"result": "accepted"}) == 1
    assert registry.get_sample_value("castway_ingest_live_broadcasts") == 1
    await manager.stop()
    assert registry.get_sample_value("castway_ingest_live_broadcasts") == 0


async def test_an_end_the_full_disk_refused_is_saved_once_space_returns(
        tiny_disk: Path, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    """The catalog's disk is full when the broadcast ends: the end is still announced and
    the channel freed at once, and the catalog records it as soon as it can (the archiver
    trusts the catalog: a broadcast left "live" there would never get its VOD)."""
    catalog = open_catalog(Settings(data_dir=tiny_disk / "data"))
    catalog.create_channel(Channel("alpha"))
    catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    manager = make_manager(catalog, live, pipeline, grace_s=0.05)
    manager._ends.base_backoff_s = 0.05  # noqa: SLF001 -- a quick retry for the test
    session = await accepted(manager, request())
    broadcast_id = pipeline.started[0].broadcast.id
    filler = fill(tiny_disk)
    try:
        async with await live.subscribe(BROADCASTS_TOPIC) as sub:
            await session.on_close("publisher left")
            event = await next_event(sub)
        assert event == BroadcastEnded(broadcast_id, "alpha")
        assert await live.claim_channel("alpha", "next-publisher", 30) is None  # freed
        row = catalog.get_broadcast(broadcast_id)
        assert row is not None and row.state is BroadcastState.LIVE  # not written yet
    finally:
        filler.unlink()
    for _ in range(200):
        row = catalog.get_broadcast(broadcast_id)
        if row is not None and row.state is BroadcastState.ENDED:
            break
        await asyncio.sleep(0.05)
    assert row is not None and row.state is BroadcastState.ENDED and row.ended_at is not None
    await manager.stop()
    catalog.close()


async def test_a_catalog_refusing_a_source_update_neither_stops_nor_stalls_the_publisher(
        tiny_disk: Path, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    """Metadata and codec changes arrive while the catalog cannot write (its disk full;
    the same holds for a frozen PostgreSQL past its timeout): the live record takes
    them, the catalog gets the broadcast at its end, and the publisher never waits
    for the catalog nor loses its connection over it."""
    catalog = open_catalog(Settings(data_dir=tiny_disk / "data"))
    catalog.create_channel(Channel("alpha"))
    catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    manager = make_manager(catalog, live, pipeline, grace_s=0.0)
    session = await accepted(manager, request())
    [media] = pipeline.started
    filler = fill(tiny_disk)
    try:
        await asyncio.wait_for(session.on_metadata({"width": 1280.0, "height": 720.0}), 1)
        for packet in (VIDEO_CONFIG, AUDIO_CONFIG, frame(0), frame(33)):
            await asyncio.wait_for(session.on_packet(packet), 1)
        assert media.packets == [VIDEO_CONFIG, AUDIO_CONFIG, frame(0), frame(33)]
        current = await live.get_broadcast(media.broadcast.id)
        assert current is not None and current.source is not None
        assert current.source.width == 1280 and current.source.video_codec == "h264"
    finally:
        filler.unlink()
    await asyncio.wait_for(session.on_close("publisher left"), 5)
    for _ in range(200):
        stored = catalog.get_broadcast(media.broadcast.id)
        if stored is not None and stored.state is BroadcastState.ENDED:
            break
        await asyncio.sleep(0.05)
    assert stored is not None and stored.state is BroadcastState.ENDED
    assert stored.source is not None and stored.source.width == 1280
    await manager.stop()
    catalog.close()


async def test_stop_ends_every_broadcast_and_refuses_new_ones(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline)
    await manager.start()
    a = await accepted(manager, request(KEY, "c1"))
    await accepted(manager, request(OTHER_KEY, "c2"))
    await a.on_close("disconnected")  # alpha is in its grace window
    await manager.stop()
    assert all(m.finished for m in pipeline.started)
    assert await live.list_broadcasts() and all(
        b.state is BroadcastState.ENDED for b in await live.list_broadcasts())
    outcome = await manager.on_publish(request(KEY, "c3"))
    assert isinstance(outcome, Rejection)


def test_source_from_metadata_understands_e_rtmp_fourccs() -> None:
    hvc1 = float(int.from_bytes(b"hvc1", "big"))
    opus = float(int.from_bytes(b"Opus", "big"))
    info = source_from_metadata({"videocodecid": hvc1, "audiocodecid": opus, "stereo": True,
                                 "audiosamplerate": 48000.0})
    assert (info.video_codec, info.audio_codec, info.audio_channels) == ("hevc", "opus", 2)
    assert source_from_metadata({"width": "wide", "encoder": 5.0}).width is None


@pytest.mark.parametrize("asc,expected", [
    (b"\x11\x90", (48000, 2)), (b"\x12\x10", (44100, 2)), (b"\x11\x88", (48000, 1)),
    (b"\x10", (None, None)),
])
def test_audio_specific_config(asc: bytes, expected: tuple[int | None, int | None]) -> None:
    assert parse_audio_specific_config(asc) == expected


@pytest.mark.peer
async def test_end_to_end_with_the_server_and_ffmpeg(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline,
        tmp_path: Path) -> None:
    from ingest.server import IngestServer
    from tests.support import make_test_media, require_tool

    ffmpeg = require_tool("ffmpeg")
    clip = make_test_media(tmp_path / "clip.flv", seconds=1, width=320, height=180)
    manager = make_manager(catalog, live, pipeline, grace_s=0.05)
    server = IngestServer(Settings(host="127.0.0.1", rtmp_port=0), manager)
    await server.start()
    try:
        async with await live.subscribe(BROADCASTS_TOPIC) as sub:
            for key, ok in ((KEY, True), ("cw_unknown", False)):
                proc = await asyncio.create_subprocess_exec(
                    ffmpeg, "-nostdin", "-loglevel", "quiet", "-i", str(clip), "-c", "copy",
                    "-f", "flv", f"rtmp://127.0.0.1:{server.port}/live/{key}")
                assert (await asyncio.wait_for(proc.wait(), 60) == 0) is ok
            started = await next_event(sub)
            ended = await next_event(sub)
        assert isinstance(started, BroadcastStarted)
        assert ended == BroadcastEnded(started.broadcast_id, "alpha")
        [media] = pipeline.started
        assert media.finished and sum(not p.is_config for p in media.packets) > 40
        stored = catalog.get_broadcast(started.broadcast_id)
        assert stored is not None and stored.state is BroadcastState.ENDED
        assert stored.source is not None and stored.source.width == 320
    finally:
        await server.stop()
        await manager.stop()


async def test_stopping_a_broadcast_disconnects_its_publisher_and_ends_it_at_once(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline, grace_s=30)
    disconnected: list[str] = []
    manager.disconnect_publisher = disconnected.append
    session = await accepted(manager, request(connection_id="c1"))
    broadcast_id = manager.broadcast_id("alpha")
    assert broadcast_id is not None
    async with await live.subscribe(BROADCASTS_TOPIC) as sub:
        assert await manager.stop_broadcast(broadcast_id) is True
        event = await next_event(sub)
    assert event == BroadcastEnded(broadcast_id, "alpha")
    assert disconnected == ["c1"]
    [media] = pipeline.started
    assert media.finished
    stored = catalog.get_broadcast(broadcast_id)
    assert stored is not None and stored.state is BroadcastState.ENDED
    # No grace window: the channel is free and the broadcast forgotten at once, and
    # what the old connection still sends, and its close, change nothing.
    assert manager.broadcast_id("alpha") is None and manager.live_broadcasts == 0
    assert await live.claim_channel("alpha", "next", 30) is None
    await session.on_packet(frame(0))
    await session.on_close("broadcast stopped")
    assert media.packets == []
    assert await manager.stop_broadcast(broadcast_id) is False  # not live any more
    await manager.stop()


async def test_stopping_a_broadcast_in_its_grace_window_ends_it_and_no_reconnect_revives_it(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    manager = make_manager(catalog, live, pipeline, grace_s=0.3)
    disconnected: list[str] = []
    manager.disconnect_publisher = disconnected.append
    first = await accepted(manager, request(connection_id="c1"))
    broadcast_id = manager.broadcast_id("alpha")
    assert broadcast_id is not None
    await first.on_close("disconnected")
    async with await live.subscribe(BROADCASTS_TOPIC) as sub:
        assert await manager.stop_broadcast(broadcast_id) is True
        assert isinstance(await next_event(sub), BroadcastEnded)
        assert disconnected == []  # nobody to disconnect
        # The grace timer was cancelled: its expiry ends nothing a second time.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.get(), 0.5)
    # The same key publishing again starts a new broadcast.
    await accepted(manager, request(connection_id="c2"))
    assert manager.broadcast_id("alpha") not in (None, broadcast_id)
    assert [m.finished for m in pipeline.started] == [True, False]
    await manager.stop()


async def test_stopping_a_broadcast_this_node_does_not_run_is_refused(
        catalog: SqlCatalog, live: MemoryLiveState) -> None:
    manager = make_manager(catalog, live, None)
    assert await manager.stop_broadcast("not-here") is False


async def test_a_start_the_catalog_refuses_fails_the_broadcast_instead_of_leaving_it_live(
        tiny_disk: Path, live: MemoryLiveState, pipeline: RecordingPipeline) -> None:
    """The live record is written, then the catalog cannot be: the publish is refused with
    the catalog's error, and the record does not stay "live" with no node running it
    (origins would list it, and another node would ask this one for it). Once the catalog
    can write again it has the broadcast, failed."""
    catalog = open_catalog(Settings(data_dir=tiny_disk / "data"))
    catalog.create_channel(Channel("alpha"))
    catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    manager = make_manager(catalog, live, pipeline)
    manager._ends.base_backoff_s = 0.05  # noqa: SLF001 -- a quick retry for the test
    filler = fill(tiny_disk)
    try:
        async with await live.subscribe(BROADCASTS_TOPIC) as sub:
            # The RTMP server turns this into "Node unavailable: the catalog cannot be
            # reached, retry shortly".
            with pytest.raises(CatalogUnavailable):
                await manager.on_publish(request())
            event = await next_event(sub)
    finally:
        filler.unlink()
    assert isinstance(event, BroadcastFailed) and event.channel == "alpha"
    broadcast_id = event.broadcast_id
    record = await live.get_broadcast(broadcast_id)
    assert record is not None and record.state is BroadcastState.FAILED
    assert await live.live_broadcast("alpha") is None
    assert pipeline.started == [] and manager.live_broadcasts == 0
    assert await live.claim_channel("alpha", "next", 30) is None  # released
    for _ in range(200):
        row = catalog.get_broadcast(broadcast_id)
        if row is not None:
            break
        await asyncio.sleep(0.05)
    assert row is not None and row.state is BroadcastState.FAILED and row.ended_at
    await manager.stop()
    catalog.close()


@pytest.mark.peer
async def test_stop_disconnects_a_real_publisher_within_two_seconds(
        catalog: SqlCatalog, live: MemoryLiveState, pipeline: RecordingPipeline,
        tmp_path: Path) -> None:
    from ingest.server import IngestServer
    from tests.support import make_test_media, require_tool

    ffmpeg = require_tool("ffmpeg")
    clip = make_test_media(tmp_path / "clip.flv", seconds=20, width=160, height=90)
    manager = make_manager(catalog, live, pipeline, grace_s=30)
    server = IngestServer(Settings(host="127.0.0.1", rtmp_port=0), manager)
    manager.disconnect_publisher = server.disconnect
    await server.start()
    proc = None
    try:
        async with await live.subscribe(BROADCASTS_TOPIC) as sub:
            proc = await asyncio.create_subprocess_exec(
                ffmpeg, "-nostdin", "-loglevel", "quiet", "-re", "-i", str(clip),
                "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{server.port}/live/{KEY}")
            started = await next_event(sub)
            assert isinstance(started, BroadcastStarted)
            [media] = pipeline.started
            while len(media.packets) < 10:  # streaming
                await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            asked = loop.time()
            assert await manager.stop_broadcast(started.broadcast_id) is True
            await asyncio.wait_for(proc.wait(), 10)
            took = loop.time() - asked
            assert isinstance(await next_event(sub), BroadcastEnded)
        assert took < 2.0, took
        assert proc.returncode != 0  # cut, not finished: the clip had 20 s left
        assert server.active_publishers == 0
        assert media.finished
        stored = catalog.get_broadcast(started.broadcast_id)
        assert stored is not None and stored.state is BroadcastState.ENDED
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.stop()
        await manager.stop()
