"""The pipeline on generated media: every segment of every rendition decodes, starts with
an IDR at the same PTS in every rendition, and PTS runs on without gaps."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.video.frame
import pytest

from castway.media import MediaKind, MediaPacket
from transcoder.demux import read_packets
from transcoder.ladder import LadderSpec, RungSpec
from transcoder.overload import Action, Degradation
from transcoder.packager import TIMELINE_OFFSET_MS, InitOut, Output, PartOut, SegmentOut
from transcoder.pipeline import Pipeline, PipelineConfig, RenditionInfo, estimate_fps
from transcoder.segmenter import SegmentPolicy

LADDER = LadderSpec((RungSpec("240p", 240, 400), RungSpec("160p", 160, 200, max_fps=15)))
POLICY = SegmentPolicy(2000, 500)


@dataclass
class Collected:
    init: dict[str, bytes] = field(default_factory=dict)
    parts: dict[str, list[PartOut]] = field(default_factory=lambda: defaultdict(list))
    segments: dict[str, list[SegmentOut]] = field(default_factory=lambda: defaultdict(list))
    infos: dict[str, RenditionInfo] = field(default_factory=dict)
    ladders: list[tuple[RenditionInfo, ...]] = field(default_factory=list)

    def on_output(self, out: Output) -> None:
        if isinstance(out, InitOut):
            self.init[out.rendition] = out.data
        elif isinstance(out, PartOut):
            self.parts[out.rendition].append(out)
        else:
            self.segments[out.rendition].append(out)

    def on_ladder(self, ladder: tuple[RenditionInfo, ...]) -> None:
        self.ladders.append(ladder)
        self.infos.update((info.name, info) for info in ladder)


def run(packets: list[MediaPacket], *, ladder: LadderSpec = LADDER,
        segment_format: str = "fmp4", discontinuity_at: int | None = None) -> Collected:
    got = Collected()
    pipeline = Pipeline(PipelineConfig(ladder, POLICY, segment_format=segment_format,
                                       realtime=False, x264_preset="ultrafast"),
                        got.on_output, got.on_ladder)
    for i, packet in enumerate(packets):
        if i == discontinuity_at:
            pipeline.discontinuity()
        pipeline.push(packet)
    pipeline.finish()
    return got


def video_frames(data: bytes) -> list[tuple[float, bool, str]]:
    """(pts seconds, keyframe, picture type) of every decoded video frame of ``data``."""
    out = []
    container: Any = av.open(io.BytesIO(data))
    try:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            out.append((float(frame.pts * frame.time_base), bool(frame.key_frame),
                        av.video.frame.PictureType(frame.pict_type).name))
    finally:
        container.close()
    return out


def audio_span(data: bytes) -> tuple[float, float]:
    container: Any = av.open(io.BytesIO(data))
    try:
        packets = [p for p in container.demux(container.streams.audio[0]) if p.pts is not None]
        return (float(packets[0].pts * packets[0].time_base),
                float((packets[-1].pts + packets[-1].duration) * packets[-1].time_base))
    finally:
        container.close()


def check_aligned(got: Collected, renditions: list[str], *, fps: dict[str, float]) -> None:
    starts: dict[str, list[float]] = {}
    for name in renditions:
        segments = got.segments[name]
        assert segments, name
        first_pts = []
        previous_end: float | None = None
        for seg in segments:
            frames = video_frames(got.init.get(name, b"") + seg.data)
            assert frames, f"{name}: a segment without video"
            pts, key, kind = frames[0]
            assert key and kind == "I", f"{name} segment at {pts} starts with {kind}"
            assert abs(pts - TIMELINE_OFFSET_MS / 1000 - seg.start_pts_s) < 1e-3
            first_pts.append(round(pts, 3))
            ordered = sorted(f[0] for f in frames)
            step = 1 / fps[name]
            if previous_end is not None:
                assert abs(ordered[0] - previous_end) < 1.5 * step, f"{name}: PTS gap"
            assert all(b - a < 1.5 * step for a, b in zip(ordered, ordered[1:], strict=False))
            previous_end = ordered[-1] + step
        starts[name] = first_pts
    reference = starts[renditions[0]]
    for name in renditions[1:]:
        assert starts[name] == reference, f"{name} boundaries differ from {renditions[0]}"


def test_every_rendition_cuts_at_the_same_idr(src_360p: Path) -> None:
    got = run(list(read_packets(src_360p)))
    names = ["source", "240p", "160p"]
    assert set(got.segments) == set(names)
    check_aligned(got, names, fps={"source": 30, "240p": 30, "160p": 15})
    # 3 s with keyframes every second: segments at 0 and 2 s.
    assert [s.start_pts_s for s in got.segments["source"]] == [0.0, 2.0]
    assert got.infos["240p"].width == 426 and got.infos["240p"].height == 240
    assert got.infos["160p"].fps == 15
    assert got.infos["source"].codecs.startswith("avc1.") and \
        got.infos["source"].codecs.endswith(",mp4a.40.2")
    # Nothing lost: every source frame is in the passthrough and the 30 fps rendition.
    for name in ("source", "240p"):
        frames = sum(len(video_frames(got.init[name] + s.data)) for s in got.segments[name])
        assert frames == 90


def test_a_segment_is_the_concatenation_of_its_parts(src_360p: Path) -> None:
    got = run(list(read_packets(src_360p)))
    for name, segments in got.segments.items():
        parts = got.parts[name]
        assert b"".join(p.data for p in parts) == b"".join(s.data for s in segments)
        assert all(p.duration_s <= 0.5 + 1e-3 for p in parts)
        independent = [p.index == 0 for p in parts]
        assert [p.independent for p in parts] == independent
        assert sum(p.duration_s for p in parts) == pytest.approx(
            sum(s.duration_s for s in segments))


def test_audio_passes_through_continuously(src_360p: Path) -> None:
    got = run(list(read_packets(src_360p)))
    for name in got.segments:
        spans = [audio_span(got.init[name] + s.data) for s in got.segments[name]]
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert abs(start - end) < 0.002, f"{name}: audio gap {start - end}"


def test_irregular_keyframes_give_irregular_but_aligned_segments(src_irregular: Path) -> None:
    got = run(list(read_packets(src_irregular)))
    # Keyframes at 0, 0.7, 2.9, 3.3, 5.5 s: the 2.9 s GOP is split before its segment
    # would outgrow EXT-X-TARGETDURATION 2, and the next keyframe starts one at once.
    assert [s.start_pts_s for s in got.segments["source"]] == [0.0, 2.467, 2.9, 5.367, 5.5]
    assert max(s.duration_s for s in got.segments["source"]) < 2.5
    # only the segments split without a keyframe start with a non-independent part
    firsts = [p.independent for p in got.parts["source"] if p.index == 0]
    assert firsts == [True, False, True, False, True]
    assert all(p.independent for p in got.parts["160p"] if p.index == 0)
    # The encoded rendition is cut at the same instants, each segment from an IDR...
    check_aligned(got, ["160p"], fps={"160p": 15})
    assert [s.start_pts_s for s in got.segments["160p"]] == \
        [s.start_pts_s for s in got.segments["source"]]
    # ... and the passthrough, played in order, loses no frame to its splits.
    whole = got.init["source"] + b"".join(s.data for s in got.segments["source"])
    assert len(video_frames(whole)) == 180
    # Parts keep latency low inside the long segments.
    assert max(p.duration_s for p in got.parts["160p"]) <= 0.5 + 1e-3


def test_source_b_frames_pass_through(src_bframes: Path) -> None:
    got = run(list(read_packets(src_bframes)),
              ladder=LadderSpec((RungSpec("160p", 160, 200),)))
    check_aligned(got, ["source", "160p"], fps={"source": 30, "160p": 30})


def test_discontinuity_closes_the_segment_and_restarts_at_a_keyframe(src_360p: Path) -> None:
    packets = list(read_packets(src_360p))
    half = next(i for i, p in enumerate(packets)
                if p.kind == MediaKind.VIDEO and p.dts_ms >= 1500)
    # The publisher reconnects: configuration again, timestamps from zero.
    replay = [p for p in packets if p.is_config] + packets[2:]
    got = run(packets[:half] + replay, discontinuity_at=half)
    starts = [s.start_pts_s for s in got.segments["source"]]
    assert starts == [0.0, 0.0, 2.0]
    assert got.segments["source"][0].duration_s == pytest.approx(1.5, abs=0.04)
    for name in got.segments:
        for seg in got.segments[name]:
            assert video_frames(got.init[name] + seg.data)[0][1]


def test_mpegts_segments_are_aligned_too(src_360p: Path) -> None:
    got = run(list(read_packets(src_360p)), segment_format="mpegts")
    assert not got.parts and not got.init
    check_aligned(got, ["source", "240p", "160p"], fps={"source": 30, "240p": 30, "160p": 15})


def test_passthrough_only_ladder(src_360p: Path) -> None:
    got = run(list(read_packets(src_360p)), ladder=LadderSpec(()))
    assert list(got.segments) == ["source"]


@pytest.mark.parametrize(("dts", "fps"), [
    ([0, 33, 67, 100, 133], 30.0), ([0, 17, 33, 50, 67, 83, 100], 60.0),
    ([0, 40, 80, 120], 25.0), ([0, 42, 83, 125, 167], 24.0), ([0, 100, 200], 10.0),
])
def test_frame_rate_estimate(dts: list[int], fps: float) -> None:
    assert estimate_fps(dts) == fps


def test_hevc_passes_through_and_mp3_is_reencoded_to_aac(src_hevc_mp3: Path) -> None:
    got = run(list(read_packets(src_hevc_mp3)), ladder=LadderSpec((RungSpec("90p", 90, 100),)))
    assert got.infos["source"].codecs.startswith("hvc1.1.")
    assert got.infos["source"].codecs.endswith(",mp4a.40.2")
    assert got.infos["90p"].codecs.startswith("avc1.")
    check_aligned(got, ["source", "90p"], fps={"source": 30, "90p": 30})
    for name in ("source", "90p"):
        start, end = audio_span(got.init[name] + b"".join(s.data for s in got.segments[name]))
        assert end - start > 1.5


def test_falling_behind_halves_the_high_frame_rate_rung_then_stops_rungs_at_boundaries(
        src_6s_60fps: Path) -> None:
    """A clock that runs three times faster than the media: the transcoder falls behind
    and gives up work in the order of transcoder.overload. Every segment that comes out
    is whole: as long as its media, starting on an IDR at the source's boundary."""
    ticks = iter(range(1_000_000))
    got = Collected()
    events: list[tuple[str, str]] = []
    stops: list[Degradation] = []

    def on_output(out: Output) -> None:
        got.on_output(out)
        if isinstance(out, SegmentOut):
            events.append(("segment", out.rendition))

    def on_stopped(step: Degradation) -> None:
        stops.append(step)
        events.append(("stopped", step.rung))

    ladder = LadderSpec((RungSpec("160p", 160, 200), RungSpec("90p", 90, 100, max_fps=30)))
    pipeline = Pipeline(PipelineConfig(ladder, POLICY, realtime=True, x264_preset="ultrafast"),
                        on_output, got.on_ladder, on_rung_stopped=on_stopped,
                        clock=lambda: next(ticks) * 0.05)
    for packet in read_packets(src_6s_60fps):
        pipeline.push(packet)
    pipeline.finish()

    assert [(d.rung, d.action) for d in pipeline.stats.degraded] == [
        ("160p", Action.STOPPED), ("90p", Action.STOPPED)]
    assert [s.rung for s in stops] == ["160p", "90p"]
    # A rung's "stopped" comes after its last segment.
    for name in ("160p", "90p"):
        assert events.index(("stopped", name)) > max(
            i for i, e in enumerate(events) if e == ("segment", name))
    source = got.segments["source"]
    assert [round(s.start_pts_s, 3) for s in source] == [0.0, 2.0, 4.0]
    # The rungs stop at segment boundaries, their segments aligned with the source's.
    for name, count in (("160p", 1), ("90p", 2)):
        segments = got.segments[name]
        assert len(segments) == count, name
        for seg, src in zip(segments, source, strict=False):
            assert seg.start_pts_s == pytest.approx(src.start_pts_s, abs=1e-3)
            assert seg.duration_s == pytest.approx(src.duration_s, abs=1 / 60 + 1e-3), name
            frames = video_frames(got.init[name] + seg.data)
            assert frames[0][1], f"{name}: a segment starts without a keyframe"
            first, last = min(f[0] for f in frames), max(f[0] for f in frames)
            assert last - first < seg.duration_s
    # The 60 fps rung ran at 30 fps before it stopped: its skipped frames are counted.
    first_160p = video_frames(got.init["160p"] + got.segments["160p"][0].data)
    assert len(first_160p) < 120 - 20
    assert pipeline.stats.dropped_frames >= 120 - len(first_160p) - 2
    # The passthrough and its audio are untouched.
    assert sum(len(video_frames(got.init["source"] + s.data)) for s in source) == 360
    spans = [audio_span(got.init["source"] + s.data) for s in source]
    assert all(abs(b[0] - a[1]) < 0.002 for a, b in zip(spans, spans[1:], strict=False))


def test_a_stop_still_pending_at_a_break_is_made_there_and_said(src_360p: Path) -> None:
    """A rung overload decided to stop, its boundary not reached when the publisher
    reconnects: the break closes its segment like every other's, and the rung is said to
    be stopped there (else its playlist would be left open and stale)."""
    got = Collected()
    stops: list[str] = []
    pipeline = Pipeline(PipelineConfig(LadderSpec((RungSpec("160p", 160, 200),)), POLICY,
                                       realtime=False, x264_preset="ultrafast"),
                        got.on_output, got.on_ladder,
                        on_rung_stopped=lambda step: stops.append(step.rung))
    packets = list(read_packets(src_360p))
    for packet in packets[:40]:
        pipeline.push(packet)
    assert pipeline._overload is not None
    step = pipeline._overload.observe(5.0, 0.0)
    assert step is not None and step.rung == "160p" and step.action is Action.STOPPED
    pipeline.discontinuity()
    assert stops == ["160p"]
    segments_at_break = len(got.segments["160p"])
    assert segments_at_break >= 1
    for packet in packets[40:]:
        pipeline.push(packet)
    pipeline.finish()
    assert len(got.segments["160p"]) == segments_at_break  # nothing after the break
    assert stops == ["160p"]


def test_new_codec_parameters_mid_stream_are_a_break(src_360p: Path,
                                                     src_irregular: Path) -> None:
    """A publisher that changes resolution without reconnecting: flush, new init, and
    the break is reported so the playlists get EXT-X-DISCONTINUITY."""
    got = Collected()
    breaks: list[int] = []
    inits: list[bytes] = []

    def on_output(out: Output) -> None:
        if isinstance(out, InitOut) and out.rendition == "source":
            inits.append(out.data)
        got.on_output(out)

    pipeline = Pipeline(PipelineConfig(LadderSpec(()), POLICY, realtime=False), on_output,
                        on_discontinuity=lambda: breaks.append(len(got.segments["source"])))
    for packet in read_packets(src_360p):
        pipeline.push(packet)
    for packet in read_packets(src_irregular):
        pipeline.push(packet)
    pipeline.finish()
    assert breaks == [2]  # after the first clip's two segments were flushed
    assert len(inits) == 2 and inits[0] != inits[1]
    assert [s.start_pts_s for s in got.segments["source"]] == [0.0, 2.0, 0.0, 2.467, 2.9,
                                                                5.367, 5.5]


def test_av1_passes_through_and_is_decoded_for_the_ladder(src_av1: Path) -> None:
    got = run(list(read_packets(src_av1)), ladder=LadderSpec((RungSpec("90p", 90, 100),)))
    assert got.infos["source"].codecs.startswith("av01.0.")
    assert got.infos["90p"].codecs.startswith("avc1.")
    for name in ("source", "90p"):
        frames = [f for s in got.segments[name]
                  for f in video_frames(got.init[name] + s.data)]
        assert len(frames) == 30 and frames[0][1]


def test_a_hardware_encoder_is_never_required(src_360p: Path) -> None:
    """No NVENC device here: the ladder asking for it still gets x264 renditions."""
    ladder = LadderSpec((RungSpec("160p", 160, 200),), encoder="h264_nvenc")
    got = run(list(read_packets(src_360p)), ladder=ladder)
    check_aligned(got, ["source", "160p"], fps={"source": 30, "160p": 30})


def test_a_timestamp_jump_without_reconnect_is_a_break(src_360p: Path) -> None:
    packets = list(read_packets(src_360p))
    shifted = [p if p.is_config else MediaPacket(p.kind, p.codec, p.is_keyframe, False,
                                                 p.dts_ms + 20_000, p.pts_ms + 20_000,
                                                 p.payload)
               for p in packets[2:]]
    got = Collected()
    breaks: list[int] = []
    pipeline = Pipeline(PipelineConfig(LadderSpec(()), POLICY, realtime=False),
                        got.on_output, on_discontinuity=lambda: breaks.append(1))
    for packet in packets + shifted:
        pipeline.push(packet)
    pipeline.finish()
    assert breaks == [1]
    assert [s.start_pts_s for s in got.segments["source"]] == [0.0, 2.0, 20.0, 22.0]
    assert max(s.duration_s for s in got.segments["source"]) < 2.1


def _audio_packet_count(data: bytes) -> int:
    container: Any = av.open(io.BytesIO(data))
    try:
        return sum(1 for p in container.demux(container.streams.audio[0]) if p.size)
    finally:
        container.close()


def test_every_rendition_carries_every_audio_packet_even_ahead_of_the_first_frame(
        h264_aac_flv: Path) -> None:
    # An FLV from ffmpeg starts with an audio tag before the first video tag, as OBS's
    # streams often do: the passthrough rendition must keep it like the encoded ones.
    packets = list(read_packets(h264_aac_flv))
    first_video = next(i for i, p in enumerate(packets) if p.kind == MediaKind.VIDEO
                       and not p.is_config)
    assert any(p.kind == MediaKind.AUDIO and not p.is_config for p in packets[:first_video])
    published = sum(1 for p in packets if p.kind == MediaKind.AUDIO and not p.is_config)
    got = run(packets)
    assert set(got.segments) == {"source", "240p", "160p"}
    for name, segments in got.segments.items():
        data = got.init[name] + b"".join(s.data for s in segments)
        assert _audio_packet_count(data) == published, name


def _aac_packets(path: Path) -> list[MediaPacket]:
    """An audio-only file as ingest hands it over: the AudioSpecificConfig, then frames."""
    from castway.media import Codec

    container: Any = av.open(str(path))
    try:
        stream = container.streams.audio[0]
        out = [MediaPacket(MediaKind.AUDIO, Codec.AAC, False, True, 0, 0,
                           bytes(stream.codec_context.extradata))]
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                ms = int(round(packet.pts * packet.time_base * 1000))
                out.append(MediaPacket(MediaKind.AUDIO, Codec.AAC, True, False, ms, ms,
                                       bytes(packet)))
        return out
    finally:
        container.close()


def test_audio_without_video_becomes_an_audio_only_rendition(media_dir: Path) -> None:
    import subprocess

    from tests.support import require_tool

    path = media_dir / "tc_audio_only.m4a"
    subprocess.run([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-f",
                    "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "7",
                    "-c:a", "aac", "-ac", "2", str(path)], check=True)
    packets = _aac_packets(path)
    got = run(packets)
    assert set(got.infos) == {"audio"}
    info = got.infos["audio"]
    assert info.codecs == "mp4a.40.2" and info.width is None and info.height is None
    segments = got.segments["audio"]
    # cut at the target on the audio's own frames (2 s = 93.75 AAC frames at 48 kHz)
    starts = [s.start_pts_s for s in segments]
    assert len(starts) == 4
    assert all(1.95 <= b - a <= 2.05 for a, b in zip(starts, starts[1:], strict=False))
    assert all(s.duration_s < 2.5 for s in segments)
    assert all(p.independent for p in got.parts["audio"])
    # every frame is there, in order, playable from the init segment
    whole = got.init["audio"] + b"".join(s.data for s in segments)
    container: Any = av.open(io.BytesIO(whole))
    try:
        demuxed = [p for p in container.demux(container.streams.audio[0]) if p.size]
    finally:
        container.close()
    assert len(demuxed) == len(packets) - 1


def test_a_keyframe_drought_with_b_frames_is_split_aligned_and_loses_nothing(
        media_dir: Path) -> None:
    from tests.support import make_test_media

    # OBS-like x264: B-frames and a keyframe interval far over the target (10 s)
    src = make_test_media(media_dir / "tc_drought_bframes.mp4", seconds=8, width=320,
                          height=180, gop=300, extra_args=("-bf", "2", "-preset:v", "veryfast"))
    got = run(list(read_packets(src)))
    source, encoded = got.segments["source"], got.segments["160p"]
    assert [s.start_pts_s for s in source] == [s.start_pts_s for s in encoded]
    assert len(source) == 4 and all(s.duration_s < 2.5 for s in source + encoded)
    check_aligned(got, ["160p"], fps={"160p": 15})  # each from a forced IDR
    whole = got.init["source"] + b"".join(s.data for s in source)
    assert len(video_frames(whole)) == 240


def test_rungs_a_handed_over_broadcast_published_are_kept(src_irregular: Path) -> None:
    """A node continuing a broadcast (handover) keeps every rung the master lists, even
    one this source's size would leave out (240p over a 180-line source)."""
    got = Collected()
    config = PipelineConfig(LADDER, POLICY, realtime=False, x264_preset="ultrafast",
                            keep_rungs=("240p", "160p"))
    pipeline = Pipeline(config, got.on_output, got.on_ladder)
    for packet in read_packets(src_irregular):
        pipeline.push(packet)
    pipeline.finish()
    assert set(got.infos) == {"source", "240p", "160p"}
    assert (got.infos["240p"].width, got.infos["240p"].height) == (426, 240)
    assert got.segments["240p"]


def test_the_ladder_is_announced_whole_and_never_changes_its_rungs(
        src_irregular: Path, src_360p: Path) -> None:
    """The master playlist is rendered from one announcement of the whole ladder, and a
    new size mid-broadcast (180 lines, then 360) keeps exactly the rungs first
    announced: 240p, which the larger size would bring in, is not added (players hold
    the master they loaded)."""
    got = Collected()
    pipeline = Pipeline(PipelineConfig(LADDER, POLICY, realtime=False,
                                       x264_preset="ultrafast"), got.on_output,
                        got.on_ladder)
    for packet in read_packets(src_irregular):
        pipeline.push(packet)
    for packet in read_packets(src_360p):
        pipeline.push(packet)
    pipeline.finish()
    names = [[info.name for info in ladder] for ladder in got.ladders]
    assert names == [["source", "160p"], ["source", "160p"]]
    assert set(got.segments) == {"source", "160p"}
    first, second = got.ladders
    assert (first[0].width, first[0].height) == (320, 180)
    assert (second[0].width, second[0].height) == (640, 360)
    # What the ladder declares is what each rendition's init segment carries.
    for info in second:
        assert info.codecs.startswith("avc1.") and info.codecs.endswith(",mp4a.40.2")
