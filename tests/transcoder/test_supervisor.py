"""The per-broadcast transcoder process, its supervisor and sink, against the real
in-process live state and local storage: media then playlists, sequence numbers that
survive reconnects and crashes, EXT-X-DISCONTINUITY where timestamps break."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import signal
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import pytest
from prometheus_client import CollectorRegistry

from castway.cost import VideoSource, estimate
from castway.events.media import MediaEvent, MediaUpdate, media_topic
from castway.hls.playlist import render_media_playlist
from castway.live.base import Subscription
from castway.live.memory import MemoryLiveState
from castway.media import Codec, MediaKind, MediaPacket
from castway.model import Broadcast, Segment, SourceInfo
from castway.settings import Settings
from castway.storage.local import LocalStorage
from castway.storage.uploader import Uploader
from tests.hls_validator import validate_playlist
from tests.support import make_multitrack_media
from transcoder.capacity import ladder_cost, nominal_kbps
from transcoder.demux import read_packets
from transcoder.ladder import LadderSpec, RungSpec
from transcoder.supervisor import QUEUE_PACKETS, TranscoderSupervisor

LADDER = '{"rungs": [{"name": "160p", "height": 160, "video_bitrate_kbps": 200}]}'


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[TranscoderSupervisor, MemoryLiveState,
                                                     LocalStorage, CollectorRegistry]]:
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    settings = Settings(data_dir=tmp_path / "data", ladder=str(ladder), x264_preset="ultrafast",
                        live_window_segments=4)
    live = MemoryLiveState()
    storage = LocalStorage(tmp_path / "storage")
    registry = CollectorRegistry()
    uploader = Uploader(storage, tmp_path / "spool", CollectorRegistry())
    supervisor = TranscoderSupervisor(settings, live, storage, registry, uploader=uploader)
    yield supervisor, live, storage, registry
    await supervisor.close()
    await uploader.close()
    await live.close()


def _packets(path: Path) -> list[MediaPacket]:
    return list(read_packets(path))


async def _broadcast(live: MemoryLiveState, bid: str) -> Broadcast:
    broadcast = Broadcast(id=bid, channel="ch", node_id="n1")
    await live.put_broadcast(broadcast)
    return broadcast


def _first_frame(init: bytes, data: bytes) -> tuple[float, bool]:
    container: Any = av.open(io.BytesIO(init + data))
    try:
        frame = next(iter(container.decode(video=0)))
        return float(frame.pts * frame.time_base), bool(frame.key_frame)
    finally:
        container.close()


async def _check_log(live: MemoryLiveState, storage: LocalStorage, bid: str,
                     rendition: str, supervisor: TranscoderSupervisor) -> list[Segment]:
    uploader: Uploader = supervisor.uploader
    assert await uploader.flush(30)
    log = await live.segment_log(bid, rendition)
    assert log, rendition
    assert [s.msn for s in log] == list(range(log[0].msn, log[0].msn + len(log)))
    for seg in log:
        data = storage.get(seg.key)
        assert data is not None and len(data) == seg.size
        assert seg.init_key is not None
        init = storage.get(seg.init_key)
        assert init is not None
        assert _first_frame(init, data)[1], f"{seg.key} does not start with a keyframe"
    return log


async def next_update(events: Subscription[MediaEvent]) -> MediaUpdate:
    """The next media update (not the broadcast's end), within 60 s."""
    while True:
        event = await asyncio.wait_for(events.get(), 60)
        if isinstance(event, MediaUpdate):
            return event


async def test_a_broadcast_goes_to_live_state_and_storage(env: Any, src_360p: Path) -> None:
    supervisor, live, storage, registry = env
    broadcast = await _broadcast(live, "b1")
    async with await live.subscribe(media_topic("b1")) as events:
        media = await supervisor.start(broadcast)
        for packet in _packets(src_360p):
            await media.feed(packet)
        first = await next_update(events)
        assert first.rendition in ("source", "160p") and first.part == 0
        # Media first, playlist after: the part the event names is already there.
        window = await live.get_window("b1", first.rendition)
        assert window is not None and window.parts
        assert await live.get_media(window.parts[0].key) is not None
        await media.finish()
    dates = []
    for rendition in ("source", "160p"):
        log = await _check_log(live, storage, "b1", rendition, supervisor)
        assert [s.start_pts_s for s in log] == [0.0, 2.0]
        dates.append([s.program_date_time for s in log])
        window = await live.get_window("b1", rendition)
        assert window is not None and window.ended
        text = render_media_playlist(window, uri_for_key=lambda k: k)
        assert validate_playlist(text) == []
    # One wall-clock anchor: the same instant has the same date in every rendition.
    assert dates[0] == dates[1]
    updated = await live.get_broadcast("b1")
    assert updated is not None
    names = {r.name: r for r in updated.renditions}
    assert set(names) == {"source", "160p"}
    assert names["160p"].codecs.startswith("avc1.") and names["160p"].height == 160
    assert names["source"].bandwidth_bps and names["source"].average_bandwidth_bps
    assert registry.get_sample_value("castway_transcoder_segments_total") == 4


async def test_reconnect_continues_numbering_with_a_discontinuity(
        env: Any, src_360p: Path) -> None:
    supervisor, live, storage, _ = env
    media = await supervisor.start(await _broadcast(live, "b2"))
    packets = _packets(src_360p)
    for packet in packets:
        await media.feed(packet)
    await media.discontinuity()
    for packet in packets:  # the publisher again, timestamps from zero
        await media.feed(packet)
    await media.finish()
    for rendition in ("source", "160p"):
        log = await _check_log(live, storage, "b2", rendition, supervisor)
        assert [s.msn for s in log] == [0, 1, 2, 3]
        assert [s.discontinuity for s in log] == [False, False, True, False]
        assert [s.discontinuity_seq for s in log] == [0, 0, 1, 1]


async def test_a_crash_past_the_replay_bound_closes_the_open_segment_and_goes_on(
        tmp_path: Path, src_360p: Path) -> None:
    """When the work in progress cannot be redone (here the replay's memory bound is
    one byte), the segments in progress close from their published parts and the
    playlists go on after a discontinuity, numbering intact."""
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    settings = Settings(data_dir=tmp_path / "data", ladder=str(ladder), x264_preset="ultrafast",
                        live_window_segments=4)
    live = MemoryLiveState()
    storage = LocalStorage(tmp_path / "storage")
    registry = CollectorRegistry()
    uploader = Uploader(storage, tmp_path / "spool", CollectorRegistry())
    supervisor = TranscoderSupervisor(settings, live, storage, registry, uploader=uploader,
                                      replay_max_bytes=1)
    try:
        await _crash_without_replay(supervisor, live, storage, registry, src_360p)
    finally:
        await supervisor.close()
        await uploader.close()
        await live.close()


async def _crash_without_replay(supervisor: TranscoderSupervisor, live: MemoryLiveState,
                                storage: LocalStorage, registry: CollectorRegistry,
                                src_360p: Path) -> None:
    media = await supervisor.start(await _broadcast(live, "b3"))
    packets = _packets(src_360p)
    configs = [p for p in packets if p.is_config]
    half = next(i for i, p in enumerate(packets)
                if p.kind == MediaKind.VIDEO and p.dts_ms >= 1500)
    async with await live.subscribe(media_topic("b3")) as events:
        for packet in packets[:half]:
            await media.feed(packet)
        # Wait until parts of the second segment... of the first segment are out.
        while True:
            event = await next_update(events)
            if event.rendition == "source" and event.part == 1:
                break
    pid = media.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # The stream goes on (ingest never noticed): more of it, shifted past the first half.
    shift = packets[half].dts_ms
    for packet in configs + [p for p in packets[2:]]:
        if not packet.is_config:
            packet = MediaPacket(packet.kind, packet.codec, packet.is_keyframe, False,
                                 packet.dts_ms + shift + 1000, packet.pts_ms + shift + 1000,
                                 packet.payload)
        await media.feed(packet)
    await media.finish()
    assert media.restarts == 1
    assert registry.get_sample_value("castway_transcoder_restarts_total") == 1
    assert registry.get_sample_value("castway_transcoder_replays_total") == 0
    stats = await live.get_stats("b3")
    assert stats["transcoder_restarts"] == 1
    log = await _check_log(live, storage, "b3", "source", supervisor)
    # Segment 0 was closed from its published parts; then a break; numbering goes on.
    assert log[0].msn == 0 and not log[0].discontinuity
    assert log[0].parts and log[0].duration_s == pytest.approx(
        sum(p.duration_s for p in log[0].parts))
    assert log[1].discontinuity and log[1].msn == 1
    assert len(log) >= 3


def _frames_and_audio(init: bytes, segments: list[bytes]) -> tuple[int, int]:
    """Video frames and audio frames a decoder gets from a rendition's segments."""
    container: Any = av.open(io.BytesIO(init + b"".join(segments)))
    try:
        video = audio = 0
        for packet in container.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video":
                video += 1
            elif packet.stream.type == "audio":
                audio += 1
        return video, audio
    finally:
        container.close()


KILLS = {
    "no-crash": [],  # the control: what the renditions hold without a crash
    "mid-segment": [("source", 1, 1)],
    "rung-behind": [("160p", 0, 2)],  # the source is further on: two segments redone
    "segment-start": [("source", 2, 0)],
    "twice": [("source", 1, 1), ("source", 3, 2)],
}


# MPEG-TS publishes no parts: one crash point covers it.
CASES = [(kills, "fmp4") for kills in KILLS] + [("no-crash", "mpegts"),
                                               ("mid-segment", "mpegts")]


@pytest.mark.parametrize(("kills", "segment_format"), CASES)
async def test_a_crashed_transcoder_is_replaced_without_losing_a_frame(
        tmp_path: Path, src_10s_bframes: Path, kills: str, segment_format: str) -> None:
    """The child is SIGKILLed with segments in progress (the source's, and the
    transcoded rung's, which lags behind it): its successor redoes them from the replay,
    and every rendition ends with every frame the publisher sent, with no discontinuity
    and no part published twice."""
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    settings = Settings(data_dir=tmp_path / "data", ladder=str(ladder), x264_preset="ultrafast",
                        live_window_segments=8, segment_format=segment_format)
    live = MemoryLiveState()
    storage = LocalStorage(tmp_path / "storage")
    registry = CollectorRegistry()
    uploader = Uploader(storage, tmp_path / "spool", CollectorRegistry())
    supervisor = TranscoderSupervisor(settings, live, storage, registry, uploader=uploader)
    try:
        media = await supervisor.start(await _broadcast(live, "b6"))
        packets = _packets(src_10s_bframes)
        frames = {kind: sum(1 for p in packets if p.kind == kind and not p.is_config)
                  for kind in MediaKind}
        points = list(KILLS[kills])
        assert len(packets) < QUEUE_PACKETS  # all queued at once: ingest never waits
        async with await live.subscribe(media_topic("b6")) as events:
            for packet in packets:
                await media.feed(packet)
            for rendition, msn, part in points:
                # MPEG-TS publishes segments only
                wanted = (rendition, msn, part if segment_format == "fmp4" else None)
                while True:
                    event = await next_update(events)
                    if (event.rendition, event.msn, event.part) == wanted:
                        break
                assert media.pid is not None
                os.kill(media.pid, signal.SIGKILL)
            await media.finish()
        assert media.restarts == len(KILLS[kills])
        assert registry.get_sample_value("castway_transcoder_replays_total") == media.restarts
        assert await uploader.flush(30)
        for rendition in ("source", "160p"):
            log = await live.segment_log("b6", rendition)
            assert [s.msn for s in log] == list(range(len(log)))
            assert not any(s.discontinuity for s in log), rendition
            assert len(log) == 5, rendition
            assert {s.init_key for s in log} == {log[0].init_key}
            init_key = log[0].init_key
            init = storage.get(init_key) or b"" if init_key is not None else b""
            video, audio = _frames_and_audio(init, [storage.get(s.key) or b"" for s in log])
            assert video == frames[MediaKind.VIDEO], rendition
            assert audio == frames[MediaKind.AUDIO], rendition
            for s in log:  # every part once, numbered from 0
                assert [p.index for p in s.parts] == list(range(len(s.parts))), s
    finally:
        await supervisor.close()
        await uploader.close()
        await live.close()


async def test_an_unsupported_codec_is_given_up_not_restarted(env: Any) -> None:
    supervisor, live, _, registry = env
    media = await supervisor.start(await _broadcast(live, "b4"))
    await media.feed(MediaPacket(MediaKind.VIDEO, Codec.VP9, False, True, 0, 0, b"\x01"))
    await asyncio.wait_for(media.gave_up.wait(), 60)
    assert media.restarts == 0
    assert registry.get_sample_value("castway_transcoder_restarts_total") == 0
    # the broadcast's health says nothing more is served
    assert (await live.get_stats("b4"))["warnings"] == "transcoding_failed"
    await media.feed(MediaPacket(MediaKind.VIDEO, Codec.VP9, True, False, 0, 0, b"\x02"))
    await media.finish()


async def test_a_handover_continues_the_playlists_in_a_new_transcoder(
        env: Any, src_360p: Path) -> None:
    """Node A's transcoder hands the broadcast over (flushed, playlists open); node B's,
    started in handover mode, goes on with the numbering after a discontinuity and new
    init segments; EXT-X-ENDLIST only at the real end."""
    supervisor, live, storage, _ = env
    broadcast = await _broadcast(live, "b5")
    packets = _packets(src_360p)
    on_a = await supervisor.start(broadcast)
    for packet in packets:
        await on_a.feed(packet)
    await on_a.hand_over()
    before = {}
    for rendition in ("source", "160p"):
        window = await live.get_window("b5", rendition)
        assert window is not None and not window.ended
        # The segment in progress was closed by a clean flush: the whole clip is there.
        assert sum(s.duration_s for s in window.segments) == pytest.approx(3.0, abs=0.1)
        before[rendition] = window
    continued = await live.get_broadcast("b5")
    assert continued is not None and {r.name for r in continued.renditions} == {
        "source", "160p"}
    on_b = await supervisor.start(continued, handover=True)
    for packet in packets:  # the publisher again, on another node: timestamps from zero
        await on_b.feed(packet)
    await on_b.finish()
    for rendition in ("source", "160p"):
        log = await _check_log(live, storage, "b5", rendition, supervisor)
        assert [s.msn for s in log] == list(range(len(log)))
        first_b = before[rendition].next_msn
        assert first_b == 2  # 0-2 s, and the 2-3 s tail the flush closed
        assert [s.discontinuity for s in log] == [i == first_b for i in range(len(log))]
        assert {s.init_key for s in log[:first_b]} == {f"broadcasts/b5/{rendition}/init.mp4"}
        assert {s.init_key for s in log[first_b:]} == {
            f"broadcasts/b5/{rendition}/init.1.mp4"}
        window = await live.get_window("b5", rendition)
        assert window is not None and window.ended
        assert validate_playlist(render_media_playlist(window, uri_for_key=lambda k: k)) == []


def _gone(pid: int) -> bool:
    """No process (not even a zombie) with this pid: it exited and was reaped."""
    return not Path(f"/proc/{pid}").exists()


async def test_a_hung_transcoder_is_killed_reaped_and_replaced(
        tmp_path: Path, src_360p: Path) -> None:
    """A child that stops answering (SIGSTOP: alive, holding its memory, reading
    nothing) is detected by its missing heartbeat, killed and reaped before a new one
    takes over and redoes what it had in progress; the playlists go on unbroken."""
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    settings = Settings(data_dir=tmp_path / "data", ladder=str(ladder), x264_preset="ultrafast")
    live = MemoryLiveState()
    storage = LocalStorage(tmp_path / "storage")
    uploader = Uploader(storage, tmp_path / "spool", CollectorRegistry())
    supervisor = TranscoderSupervisor(settings, live, storage, CollectorRegistry(),
                                      uploader=uploader, hang_timeout_s=3.0)
    packets = _packets(src_360p)
    configs = [p for p in packets if p.is_config]
    try:
        media = await supervisor.start(await _broadcast(live, "b6"))
        async with await live.subscribe(media_topic("b6")) as events:
            for packet in packets:
                await media.feed(packet)
            while (await next_update(events)).part is not None:
                pass  # until a complete segment is out
        old = media.pid
        assert old is not None
        os.kill(old, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not (media.restarts >= 1 and _gone(old)):
                assert loop.time() < deadline, "the hung child is still there"
                await asyncio.sleep(0.1)
        finally:
            if not _gone(old):
                os.kill(old, signal.SIGKILL)
        new = media.pid
        assert new is not None and new != old and not _gone(new)
        shift = packets[-1].dts_ms + 1000
        for packet in configs + packets[2:]:
            if not packet.is_config:
                packet = MediaPacket(packet.kind, packet.codec, packet.is_keyframe, False,
                                     packet.dts_ms + shift, packet.pts_ms + shift,
                                     packet.payload)
            await media.feed(packet)
        await media.finish()
        assert _gone(new)
        log = await _check_log(live, storage, "b6", "source", supervisor)
        assert not any(s.discontinuity for s in log)
        assert sum(s.duration_s for s in log) > 4.0  # both halves are there
    finally:
        await supervisor.close()
        await uploader.close()
        await live.close()


async def test_a_broadcast_is_counted_at_its_cost_until_it_ends(env: Any,
                                                                src_360p: Path) -> None:
    """Its ladder is chosen with its cost when its video starts; its stats say so; when it
    ends its cost, lag, drops and frame rate leave the node's gauges (a lag alert on an
    ended broadcast would fire forever)."""
    supervisor, live, _storage, registry = env
    broadcast = await _broadcast(live, "b1")
    media = await supervisor.start(broadcast)
    reserved = registry.get_sample_value("castway_node_cost_used_cores")
    assert reserved == supervisor.calibration.broadcast_s  # a passthrough's, until known
    # what ingest learns from onMetaData: the frame rate (the size comes from the SPS)
    await live.update_broadcast("b1", source=SourceInfo(video_codec="h264", fps=30.0))
    for packet in _packets(src_360p):
        await media.feed(packet)
    assert media.ladder_decided and not media.ladder_reduced
    assert media.ladder_name == "source,160p30"  # sized from the SPS: 640x360
    assert media.cost_estimate is not None and media.cost_estimate > reserved
    assert supervisor.ledger.used == media.cost_estimate
    assert media.dropped == 0
    await media.finish()
    stats = await live.get_stats("b1")
    assert stats["ladder"] == "source,160p30" and stats["cost_estimate"] > 0
    for gauge in ("castway_node_cost_used_cores", "castway_transcoder_lag_seconds",
                  "castway_transcoder_dropped_frames", "castway_transcoder_fps",
                  "castway_transcoder_running"):
        assert registry.get_sample_value(gauge) == 0.0, gauge
    assert registry.get_sample_value("castway_node_cost_free_cores") == \
        supervisor.ledger.capacity


async def test_the_rungs_an_encoder_sends_itself_are_not_counted_against_the_node(
        env: Any, media_dir: Path) -> None:
    """An E-RTMP multitrack publisher (issue 14) whose 160p track covers castway's only
    rung for a 360p source: its ladder is the source and its tracks, and it is counted
    at a passthrough's cost, not a decode and an encode."""
    supervisor, live, _storage, _registry = env
    src = make_multitrack_media(media_dir / "sup_tracks.mkv",
                                ((640, 360), (426, 240), (284, 160)), seconds=3.0)
    broadcast = await _broadcast(live, "mt")
    media = await supervisor.start(broadcast)
    await live.update_broadcast("mt", source=SourceInfo(video_codec="h264", fps=30.0))
    for packet in read_packets(src, tracks=True):
        await media.feed(packet)
    assert media.ladder_name == "source,track1:240p,track2:160p"
    # Packaging three renditions and ingesting what they weigh; no decode, no encode.
    source = VideoSource(640, 360, 30.0)
    sent = sum(nominal_kbps(h, 30.0) for h in (360, 240, 160))
    cal = supervisor.calibration
    assert media.cost_estimate == pytest.approx(
        estimate(source, [], cal, passthrough_tracks=2, input_kbps=sent))
    assert media.cost_estimate < ladder_cost(LadderSpec((RungSpec("160p", 160, 200),)),
                                             source, cal, input_kbps=sent)
    await media.finish()
    ended = await live.get_broadcast("mt")
    assert ended is not None
    renditions = {r.name: r.track for r in ended.renditions}
    assert renditions == {"source": 0, "240p": 1, "160p": 2}


def _pipes() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
               for fd in os.listdir("/proc/self/fd") if Path(f"/proc/self/fd/{fd}").exists())



async def test_a_finished_transcoder_is_freed_at_once_and_its_childrens_pipes_closed(
        env: Any, src_360p: Path) -> None:
    """Not when the cyclic garbage collector gets to them, which a busy server may not
    do for minutes: until then every ended broadcast's transcoder (its replay buffer,
    its sink) stayed in memory, held in a cycle through its cancelled tasks, and every
    crashed or finished child left two pipes open (multiprocessing's sentinel and the
    spawn pipe, closed only with their Process object)."""
    supervisor, live, _, _ = env
    packets = _packets(src_360p)
    first = await supervisor.start(await _broadcast(live, "b1"))  # the resource tracker
    for packet in packets:
        await first.feed(packet)
    await first.finish()
    del first
    gc.collect()
    gc.disable()
    try:
        pipes = _pipes()
        media = await supervisor.start(await _broadcast(live, "b2"))
        async with await live.subscribe(media_topic("b2")) as events:
            for packet in packets:
                await media.feed(packet)
            await next_update(events)
            assert media.pid is not None
            os.kill(media.pid, signal.SIGKILL)  # a crashed child is retired too
            while media.restarts < 1:
                await next_update(events)
        await media.finish()
        assert media.pid is None
        assert _pipes() == pipes
        freed = weakref.ref(media)
        del media
        await asyncio.sleep(0.1)  # the loop's last callbacks of its tasks run
        assert freed() is None
    finally:
        gc.enable()


async def test_a_config_that_arrives_while_a_new_child_gets_its_prelude_is_not_lost(
        env: Any, src_360p: Path) -> None:
    """A fresh child's prelude sends the configuration records in force, one pipe send at
    a time; a publisher whose audio and video arrive on separate tasks (WHIP) can bring
    a new kind's record in during one of those sends. That killed the writer task
    ("dictionary changed size during iteration"): the child never got another packet and
    the broadcast produced nothing (caught by tests/test_whip.py in CI)."""
    supervisor, live, _, _ = env
    media = await supervisor.start(await _broadcast(live, "b-prelude"))
    packets = _packets(src_360p)
    video_config = next(p for p in packets if p.is_config and p.kind is MediaKind.VIDEO)
    audio_config = next(p for p in packets if p.is_config and p.kind is MediaKind.AUDIO)
    frame = next(p for p in packets if not p.is_config and p.kind is MediaKind.VIDEO)
    media._configs[video_config.stream] = video_config
    sent: list[object] = []
    real_in_thread = media._in_thread

    async def in_thread(fn: Any, *args: Any) -> Any:
        if not sent:
            await media.feed(audio_config)  # arrives while the first record is sent
        sent.append(args[0] if args else None)
        return None

    media._in_thread = in_thread
    try:
        await media._send_prelude(SimpleNamespace(send=None), [frame])
    finally:
        media._in_thread = real_in_thread
    assert [getattr(m, "packet", None) for m in sent] == [video_config]
    assert media._configs[audio_config.stream] is audio_config  # in the queue, sent after
    await media.finish()
