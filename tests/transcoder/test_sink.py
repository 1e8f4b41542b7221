"""The sink against the real in-process live state: media before playlists, parts into
segments after a crash, MPEG-TS without parts, renditions on the live Broadcast."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from castway.events.media import MediaUpdate, media_topic
from castway.live.base import LiveState, LiveStateError
from castway.live.memory import MemoryLiveState
from castway.live.redis import RedisLiveState
from castway.model import Broadcast
from castway.settings import SegmentFormat, Settings
from tests.fixtures.redis_server import RedisServer
from transcoder.packager import InitOut, Output, PartOut, SegmentOut
from transcoder.pipeline import RenditionInfo
from transcoder.sink import BroadcastSink

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def live() -> AsyncIterator[MemoryLiveState]:
    state = MemoryLiveState()
    await state.put_broadcast(Broadcast(id="b", channel="c", node_id="n"))
    yield state
    await state.close()


class Stored:
    """Storage writes, in order (the sink's storage callable)."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def put(self, key: str, data: bytes, *,
                  on_durable: Callable[[], None] | None = None) -> None:
        self.keys.append(key)
        if on_durable is not None:
            on_durable()


def _sink(live: LiveState, tmp_path: Path, stored: Stored,
          fmt: SegmentFormat = SegmentFormat.FMP4) -> BroadcastSink:
    settings = Settings(data_dir=tmp_path, segment_format=fmt, live_window_segments=3)
    return BroadcastSink("b", settings, live, stored.put, now=lambda: T0)


async def _assert_window_backed(live: MemoryLiveState, rendition: str) -> None:
    window = await live.get_window("b", rendition)
    assert window is not None
    for key in [s.key for s in window.segments] + [p.key for p in window.parts] + \
            [window.init_key or ""]:
        assert await live.get_media(key) is not None, key


async def test_media_is_in_place_before_the_window_names_it(live: MemoryLiveState,
                                                            tmp_path: Path) -> None:
    stored = Stored()
    sink = _sink(live, tmp_path, stored)
    await sink.on_ladder((RenditionInfo("source", "avc1.64001f,mp4a.40.2", 640, 360, 30,
                                          None),))
    async with await live.subscribe(media_topic("b")) as events:
        await sink.on_output(InitOut("source", b"init"))
        for i in range(4):
            await sink.on_output(PartOut("source", i, 0.5, i == 0, b"p%d" % i))
            event = await events.get()
            assert event == MediaUpdate("source", 0, i)
            await _assert_window_backed(live, "source")
        await sink.on_output(SegmentOut("source", 2.0, 0.0, b"p0p1p2p3"))
        assert await events.get() == MediaUpdate("source", 0, None)
        # The end, like any window, is announced once written: a reload blocked on
        # what will never come is answered now, with EXT-X-ENDLIST.
        await sink.finish()
        assert await events.get() == MediaUpdate("source", 0, None)
        window = await live.get_window("b", "source")
        assert window is not None and window.ended
    await _assert_window_backed(live, "source")
    assert stored.keys == ["broadcasts/b/source/init.mp4", "broadcasts/b/source/0.m4s"]
    log = await live.segment_log("b", "source")
    assert [(s.msn, len(s.parts), s.size) for s in log] == [(0, 4, 8)]
    broadcast = await live.get_broadcast("b")
    assert broadcast is not None
    assert broadcast.renditions[0].codecs == "avc1.64001f,mp4a.40.2"
    assert broadcast.renditions[0].bandwidth_bps == 32


async def test_child_lost_closes_the_segment_from_its_parts(live: MemoryLiveState,
                                                            tmp_path: Path) -> None:
    stored = Stored()
    sink = _sink(live, tmp_path, stored)
    await sink.on_output(InitOut("source", b"init"))
    await sink.on_output(PartOut("source", 0, 0.5, True, b"aa"))
    await sink.on_output(PartOut("source", 1, 0.5, False, b"bb"))
    await sink.child_lost()
    await sink.on_output(InitOut("source", b"init"))
    await sink.on_output(PartOut("source", 0, 0.5, True, b"cc"))
    await sink.on_output(SegmentOut("source", 0.5, 7.0, b"cc"))
    await sink.finish()
    log = await live.segment_log("b", "source")
    assert [(s.msn, s.duration_s, s.discontinuity) for s in log] == \
        [(0, 1.0, False), (1, 0.5, True)]
    assert await live.get_media(log[0].key) == b"aabb"
    window = await live.get_window("b", "source")
    assert window is not None and window.ended


async def test_mpegts_has_no_parts_and_no_init(live: MemoryLiveState, tmp_path: Path) -> None:
    stored = Stored()
    sink = _sink(live, tmp_path, stored, SegmentFormat.MPEGTS)
    for n in range(5):
        await sink.on_output(SegmentOut("720p", 2.0, 2.0 * n, b"ts"))
    window = await live.get_window("b", "720p")
    assert window is not None
    assert [s.msn for s in window.segments] == [2, 3, 4]
    assert window.parts == () and window.preload_hint is None and window.init_key is None
    assert stored.keys == [f"broadcasts/b/720p/{n}.ts" for n in range(5)]


async def test_program_date_time_is_the_ingest_arrival_of_the_first_keyframe_and_glass_to_glass_is_observed(  # noqa: E501
        live: MemoryLiveState, tmp_path: Path) -> None:
    clock = [T0]
    latencies: list[float] = []
    settings = Settings(data_dir=tmp_path, live_window_segments=3)
    sink = BroadcastSink("b", settings, live, Stored().put, now=lambda: clock[0],
                         on_segment_latency=latencies.append)
    await sink.on_ladder((RenditionInfo("source", "avc1.64001f,mp4a.40.2", 640, 360, 30,
                                          None),))
    sink.note_keyframe_arrival()  # the first keyframe reaches ingest at T0
    clock[0] = T0 + timedelta(seconds=1)
    sink.note_keyframe_arrival()  # later keyframes don't move the anchor
    await sink.on_output(InitOut("source", b"init"))
    clock[0] = T0 + timedelta(seconds=2.4)  # the 2 s segment is out 0.4 s after its end
    await sink.on_output(SegmentOut("source", 2.0, 10.0, b"seg0"))
    window = await live.get_window("b", "source")
    assert window is not None
    assert window.segments[0].program_date_time == T0
    assert latencies == [pytest.approx(0.4)]


async def test_a_broadcast_handed_over_goes_on_in_the_next_nodes_sink(
        live: MemoryLiveState, tmp_path: Path) -> None:
    """Node A hands over (playlists stay open, the open segment closes from its parts);
    node B's sink continues numbering, discontinuity sequence and init generations."""
    stored = Stored()
    a = _sink(live, tmp_path, stored)
    await a.on_ladder((RenditionInfo("source", "avc1.64001f,mp4a.40.2", 640, 360, 30, None),))
    await a.on_output(InitOut("source", b"init"))
    for n in range(2):
        await a.on_output(PartOut("source", 0, 1.0, True, b"x"))
        await a.on_output(SegmentOut("source", 1.0, float(n), b"x"))
    await a.on_output(PartOut("source", 0, 0.5, True, b"yy"))  # then the publisher went
    await a.hand_over()
    window = await live.get_window("b", "source")
    assert window is not None and not window.ended
    assert [s.msn for s in window.segments] == [0, 1, 2] and window.next_msn == 3
    assert await live.get_media(window.segments[-1].key) == b"yy"

    b = _sink(live, tmp_path, stored)
    broadcast = await live.get_broadcast("b")
    assert broadcast is not None
    await b.continue_from_live(broadcast.renditions)
    # Until B's transcoder says otherwise, the master playlist keeps A's renditions.
    assert [r.name for r in b.renditions()] == ["source"]
    await b.on_output(InitOut("source", b"init"))  # same bytes, a new key all the same
    await b.on_output(PartOut("source", 0, 1.0, True, b"z"))
    await b.on_output(SegmentOut("source", 1.0, 0.0, b"z"))
    await b.finish()
    log = await live.segment_log("b", "source")
    assert [(s.msn, s.discontinuity, s.discontinuity_seq) for s in log] == [
        (0, False, 0), (1, False, 0), (2, False, 0), (3, True, 1)]
    assert [s.init_key for s in log] == ["broadcasts/b/source/init.mp4"] * 3 + [
        "broadcasts/b/source/init.1.mp4"]
    assert stored.keys.count("broadcasts/b/source/init.mp4") == 1
    window = await live.get_window("b", "source")
    assert window is not None and window.ended and window.segments[-1].msn == 3


async def _node_that_dies_mid_segment(live: MemoryLiveState, tmp_path: Path,
                                      stored: Stored) -> None:
    """Node A: two segments, then two parts of the third, then nothing (SIGKILL): no
    hand-over, its window left with the parts of the segment in progress."""
    a = _sink(live, tmp_path, stored)
    await a.on_ladder((RenditionInfo("source", "avc1.64001f,mp4a.40.2", 640, 360, 30, None),))
    await a.on_output(InitOut("source", b"init"))
    for n in range(2):
        await a.on_output(PartOut("source", 0, 1.0, True, b"x"))
        await a.on_output(SegmentOut("source", 1.0, float(n), b"x"))
    await a.on_output(PartOut("source", 0, 0.5, True, b"p0"))
    await a.on_output(PartOut("source", 1, 0.5, False, b"p1"))
    window = await live.get_window("b", "source")
    assert window is not None and [p.index for p in window.parts] == [0, 1]


async def test_the_segment_a_dead_node_had_in_progress_is_closed_by_the_next_node(
        live: MemoryLiveState, tmp_path: Path) -> None:
    stored = Stored()
    await _node_that_dies_mid_segment(live, tmp_path, stored)
    b = _sink(live, tmp_path, stored)
    broadcast = await live.get_broadcast("b")
    assert broadcast is not None
    await b.continue_from_live(broadcast.renditions)
    window = await live.get_window("b", "source")
    assert window is not None and window.parts == () and window.next_msn == 3
    recovered = window.segments[-1]
    # what players were shown of it stays, under its number, with A's init
    assert (recovered.msn, recovered.duration_s, recovered.discontinuity) == (2, 1.0, False)
    assert recovered.init_key == "broadcasts/b/source/init.mp4"
    assert await live.get_media(recovered.key) == b"p0p1"
    assert "broadcasts/b/source/2.m4s" in stored.keys  # and the archive has it
    await b.on_output(InitOut("source", b"init"))
    await b.on_output(PartOut("source", 0, 1.0, True, b"z"))
    await b.on_output(SegmentOut("source", 1.0, 5.0, b"z"))
    await b.finish()
    log = await live.segment_log("b", "source")
    assert [(s.msn, s.discontinuity) for s in log] == [
        (0, False), (1, False), (2, False), (3, True)]


async def test_a_dead_nodes_parts_whose_bytes_are_gone_are_dropped(
        live: MemoryLiveState, tmp_path: Path) -> None:
    stored = Stored()
    await _node_that_dies_mid_segment(live, tmp_path, stored)
    window = await live.get_window("b", "source")
    assert window is not None
    live._media.pop(window.parts[1].key)  # noqa: SLF001 -- expired from the live state
    b = _sink(live, tmp_path, stored)
    broadcast = await live.get_broadcast("b")
    assert broadcast is not None
    await b.continue_from_live(broadcast.renditions)
    await b.on_output(InitOut("source", b"init"))
    await b.on_output(PartOut("source", 0, 1.0, True, b"z"))
    await b.on_output(SegmentOut("source", 1.0, 5.0, b"z"))
    await b.finish()
    log = await live.segment_log("b", "source")
    assert [(s.msn, s.discontinuity) for s in log] == [(0, False), (1, False), (2, True)]


async def test_media_reaches_storage_while_the_live_state_is_down(
        restartable_redis: RedisServer, tmp_path: Path) -> None:
    """Redis down (restarting, failing over): the live window cannot be written, but
    the archive copy of every init and segment still goes out (the VOD is made from
    storage); the live writes fail as errors the supervisor logs."""
    live = RedisLiveState(restartable_redis.url, operation_timeout_s=1.0)
    stored = Stored()
    sink = _sink(live, tmp_path, stored)
    try:
        await asyncio.to_thread(restartable_redis.stop)
        outputs: list[Output] = [InitOut("source", b"init"),
                   *(PartOut("source", i, 0.5, i == 0, b"p%d" % i) for i in range(4)),
                   SegmentOut("source", 2.0, 0.0, b"p0p1p2p3")]
        for out in outputs:
            with contextlib.suppress(LiveStateError):
                await sink.on_output(out)
        assert stored.keys == ["broadcasts/b/source/init.mp4", "broadcasts/b/source/0.m4s"]
    finally:
        await live.close()
