"""Encoder-sent ladders (E-RTMP multitrack, issue 14): the publisher's tracks 1, 2, ...
become renditions packaged as they came, castway encodes only the rungs they leave
out, and a track whose keyframes miss the source's segment boundaries is encoded by
castway from the first one it misses, so the ladder stays aligned."""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest

from castway.media import Codec, MediaKind, MediaPacket
from tests.support import make_multitrack_media
from transcoder.demux import read_packets
from transcoder.journal import MAGIC_V1, encode_item, read_journal
from transcoder.ladder import DEFAULT_LADDER, Rung
from transcoder.overload import Degradation
from transcoder.packager import TIMELINE_OFFSET_MS, InitOut, Output, PartOut, SegmentOut
from transcoder.pipeline import Pipeline, PipelineConfig, RenditionInfo
from transcoder.segmenter import SegmentPolicy
from transcoder.tracks import AlignmentCheck, TrackInfo, hybrid_rungs, track_names

POLICY = SegmentPolicy(2000, 500)
SIZES = ((640, 360), (426, 240), (284, 160))


# --- the decisions ----------------------------------------------------------------------
def info(track: int, height: int) -> TrackInfo:
    return TrackInfo(track, Codec.H264, height * 16 // 9, height, 30.0, None)


def rung(name: str, height: int) -> Rung:
    return Rung(name, height * 16 // 9, height, 30.0, 1000)


def test_tracks_are_named_by_height_and_never_share_a_name() -> None:
    names = track_names([info(1, 720), info(2, 480), info(3, 720)], {"source", "audio"})
    assert names == {1: "720p", 2: "480p", 3: "720p-t3"}
    assert track_names([info(1, 720)], {"720p"}) == {1: "720p-t1"}


def test_castway_encodes_only_the_rungs_no_track_has_the_height_of() -> None:
    rungs = [rung("720p", 720), rung("480p", 480), rung("360p", 360), rung("160p", 160)]
    tracks = [info(1, 720), info(2, 360)]
    assert [r.name for r in hybrid_rungs(rungs, {t.height for t in tracks})] == [
        "480p", "160p"]
    assert hybrid_rungs(rungs, []) == rungs


def test_an_aligned_track_starts_a_segment_on_each_boundary_within_the_jitter() -> None:
    check = AlignmentCheck()
    boundaries = [0, 2000, 4000]

    def at(pts: int, key: bool) -> bool | None:
        window = [b for b in boundaries if check.horizon(pts) < b <= pts + 2]
        return check.check(pts, key, window)

    assert at(0, True) is True
    assert [at(p, False) for p in range(33, 1990, 33)] == [None] * 60
    assert at(2001, True) is True  # a millisecond off: the encoders' rounding
    assert at(2034, False) is None


def test_a_track_without_a_keyframe_at_a_boundary_is_misaligned() -> None:
    check = AlignmentCheck()
    assert check.check(0, True, [0]) is True
    assert check.check(1500, True, []) is None  # an extra keyframe costs nothing
    # The boundary at 2000 passes with a plain frame there.
    assert check.check(2000, False, [2000]) is False
    check = AlignmentCheck()
    check.check(0, True, [0])
    # ...or with no frame at all near it (the track's next keyframe is later).
    assert check.check(2100, True, [2000]) is False


def test_boundaries_before_a_tracks_first_packet_are_not_its_to_meet() -> None:
    check = AlignmentCheck()
    assert check.horizon(5000) == 4997
    assert check.check(5000, True, [5000]) is True


# --- the pipeline -----------------------------------------------------------------------
@dataclass
class Got:
    """Outputs, with each segment's init section as it was when the segment was cut."""

    inits: dict[str, bytes] = field(default_factory=dict)
    segments: dict[str, list[tuple[SegmentOut, bytes]]] = field(
        default_factory=lambda: defaultdict(list))
    infos: dict[str, RenditionInfo] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)

    def on_output(self, out: Output) -> None:
        if isinstance(out, InitOut):
            self.inits[out.rendition] = out.data
        elif isinstance(out, SegmentOut):
            self.segments[out.rendition].append((out, self.inits.get(out.rendition, b"")))
        else:
            assert isinstance(out, PartOut)

    def on_ladder(self, ladder: tuple[RenditionInfo, ...]) -> None:
        self.infos.update((i.name, i) for i in ladder)

    def on_stopped(self, step: Degradation) -> None:
        self.stopped.append(step.rung)


def run(packets: list[MediaPacket], keep_rungs: tuple[str, ...] | None = None) -> Got:
    got = Got()
    pipeline = Pipeline(PipelineConfig(DEFAULT_LADDER, POLICY, realtime=False,
                                       x264_preset="ultrafast", keep_rungs=keep_rungs),
                        got.on_output, got.on_ladder, on_rung_stopped=got.on_stopped)
    for packet in packets:
        pipeline.push(packet)
    pipeline.finish()
    return got


def demuxed(data: bytes) -> list[tuple[float, bool, str]]:
    """(pts s, keyframe, sha1) of every video packet of an init + segment."""
    container: Any = av.open(io.BytesIO(data))
    try:
        stream = container.streams.video[0]
        return [(float(p.pts * p.time_base), bool(p.is_keyframe),
                 hashlib.sha1(bytes(p)).hexdigest())
                for p in container.demux(stream) if p.size]
    finally:
        container.close()


def first_frames(data: bytes) -> tuple[float, str, int]:
    """(pts s, picture type, frames) of the decoded segment."""
    container: Any = av.open(io.BytesIO(data))
    try:
        frames = list(container.decode(container.streams.video[0]))
        return (float(frames[0].pts * frames[0].time_base),
                av.video.frame.PictureType(frames[0].pict_type).name, len(frames))
    finally:
        container.close()


def track_packets(path: Path, track: int) -> list[str]:
    return [hashlib.sha1(p.payload).hexdigest() for p in read_packets(path, tracks=True)
            if p.kind == MediaKind.VIDEO and p.track == track and not p.is_config]


@pytest.fixture(scope="module")
def aligned_src(media_dir: Path) -> Path:
    """6 s: 360p (track 0) + 240p and 160p tracks, keyframes every 2 s on all three."""
    return make_multitrack_media(media_dir / "tracks_aligned.mkv", SIZES, seconds=6.0)


@pytest.fixture(scope="module")
def misaligned_src(media_dir: Path) -> Path:
    """6 s: as above, but the 160p track's keyframes come every 1.5 s."""
    return make_multitrack_media(media_dir / "tracks_misaligned.mkv", SIZES, seconds=6.0,
                                 gops=(60, 60, 45))


def assert_aligned(got: Got, names: list[str]) -> None:
    starts = {}
    for name in names:
        assert got.segments[name], name
        pts = []
        for segment, init in got.segments[name]:
            first, kind, _ = first_frames(init + segment.data)
            assert kind == "I", f"{name} segment at {first} starts with {kind}"
            assert abs(first - TIMELINE_OFFSET_MS / 1000 - segment.start_pts_s) < 0.003
            pts.append(round(segment.start_pts_s, 2))
        starts[name] = pts
    assert all(s == starts[names[0]] for s in starts.values()), starts


def test_aligned_tracks_are_renditions_packaged_as_they_came(aligned_src: Path) -> None:
    got = run(list(read_packets(aligned_src, tracks=True)))
    # 360p source: castway's own ladder is 160p alone (rungs at or above the source's
    # height are left out), and the encoder sent that: castway encodes nothing.
    assert set(got.segments) == {"source", "240p", "160p"}
    assert_aligned(got, ["source", "240p", "160p"])
    for name, track in (("240p", 1), ("160p", 2)):
        sent = [h for s, init in got.segments[name] for _, _, h in demuxed(init + s.data)]
        assert sent == track_packets(aligned_src, track), f"{name} is not track {track}"
        meta = got.infos[name]
        assert (meta.track, meta.note, meta.height, meta.fps) == (track, "", SIZES[track][1],
                                                                   30.0)
        assert meta.codecs.startswith("avc1.42") and meta.codecs.endswith(",mp4a.40.2")
        assert meta.video_bitrate_kbps is None  # measured on its parts, like the source
    assert got.infos["source"].track == 0


def test_castway_fills_the_rungs_the_encoder_did_not_send(aligned_src: Path) -> None:
    packets = [p for p in read_packets(aligned_src, tracks=True) if p.track != 2]
    got = run(packets)
    assert set(got.segments) == {"source", "240p", "160p"}
    assert got.infos["240p"].track == 1
    assert got.infos["160p"].track is None  # castway's
    assert_aligned(got, ["source", "240p", "160p"])


def test_a_misaligned_track_is_encoded_by_castway_from_the_boundary_it_missed(
        misaligned_src: Path) -> None:
    got = run(list(read_packets(misaligned_src, tracks=True)))
    assert set(got.segments) == {"source", "240p", "160p"}
    assert_aligned(got, ["source", "240p", "160p"])
    segments = got.segments["160p"]
    # The first segment is the track's own; from 2 s (its keyframe came at 1.5 s and
    # 3 s) castway's, with a new init section.
    sent = track_packets(misaligned_src, 2)
    first, first_init = segments[0]
    assert [h for _, _, h in demuxed(first_init + first.data)] == sent[:len(
        demuxed(first_init + first.data))]
    assert segments[1][1] != first_init
    meta = got.infos["160p"]
    assert meta.track is None and "keyframes are not on the source's segment boundaries" \
        in meta.note
    # Whole: as many frames as the source, and every segment as long as its media.
    frames = sum(first_frames(init + s.data)[2] for s, init in segments)
    assert frames == 180
    assert [round(s.duration_s, 2) for s, _ in segments] == [
        round(s.duration_s, 2) for s, _ in got.segments["source"]]
    assert got.stopped == []


def test_a_misaligned_hevc_track_stops_at_the_boundary_it_missed(media_dir: Path) -> None:
    """castway encodes H.264: an HEVC rendition cannot turn H.264 without a break in
    every playlist, so it ends where it missed a boundary (its playlist then answers
    410, as an overloaded rung's does), whole up to there."""
    src = make_multitrack_media(media_dir / "tracks_hevc_off.mkv", SIZES, seconds=6.0,
                                gops=(60, 60, 45),
                                codecs=("libx264", "libx264", "libx265"))
    got = run(list(read_packets(src, tracks=True)))
    assert got.stopped == ["160p"]
    assert got.infos["160p"].codecs.startswith("hvc1.")
    [(segment, init)] = got.segments["160p"]  # 0 to 2 s, its own
    assert segment.duration_s == pytest.approx(2.0, abs=0.04)
    assert first_frames(init + segment.data)[2] == 60
    assert_aligned(got, ["source", "240p"])


def test_an_audio_track_without_frames_and_an_unsupported_track_are_left_out(
        aligned_src: Path) -> None:
    packets = list(read_packets(aligned_src, tracks=True))
    extra = [MediaPacket(MediaKind.AUDIO, Codec.AAC, True, True, 0, 0, b"\x11\x90", 1),
             MediaPacket(MediaKind.AUDIO, Codec.OPUS, True, True, 0, 0, b"OpusHead", 2),
             MediaPacket(MediaKind.VIDEO, Codec.VP9, True, True, 0, 0, b"\x01", 3)]
    got = run(extra + packets)
    # A rendition that never had a frame would hold the master back for good.
    assert set(got.segments) == {"source", "240p", "160p"}
    assert set(got.infos) == {"source", "240p", "160p"}


# --- encoder-sent audio tracks (transcoder.audio_tracks) --------------------------------
def aac_frames(data: bytes) -> list[tuple[float, str]]:
    """(pts s, sha1) of every audio packet of an init + segment."""
    container: Any = av.open(io.BytesIO(data))
    try:
        if not container.streams.audio:
            return []
        return [(float(p.pts * p.time_base), hashlib.sha1(bytes(p)).hexdigest())
                for p in container.demux(container.streams.audio[0]) if p.size]
    finally:
        container.close()


@pytest.fixture(scope="module")
def two_audio_src(media_dir: Path) -> Path:
    """6 s: 360p (track 0) + a 240p track, 440 Hz audio (track 0) + 660 Hz (track 1)."""
    return make_multitrack_media(media_dir / "tracks_two_audio.mkv", SIZES[:2], seconds=6.0,
                                 audio_tracks=2)


def test_audio_tracks_are_audio_renditions_cut_where_the_variants_are(
        two_audio_src: Path) -> None:
    got = run(list(read_packets(two_audio_src, tracks=True)))
    assert set(got.segments) == {"source", "240p", "160p", "audio-t0", "audio-t1"}
    for name, track in (("audio-t0", 0), ("audio-t1", 1)):
        info = got.infos[name]
        assert (info.alternate_audio, info.track, info.codecs, info.width, info.channels) == \
            (True, track, "mp4a.40.2", None, 2)
    # The variants are video only: a player takes the audio from the group.
    for name in ("source", "240p", "160p"):
        assert not got.infos[name].alternate_audio
        assert "mp4a" not in got.infos[name].codecs, got.infos[name]
        segment, init = got.segments[name][0]
        assert aac_frames(init + segment.data) == []
    video = got.segments["source"]
    frame_s = 1024 / 48_000

    def sent(track: int) -> list[tuple[int, str]]:
        return [(p.pts_ms, hashlib.sha1(p.payload).hexdigest())
                for p in read_packets(two_audio_src, tracks=True)
                if p.kind == MediaKind.AUDIO and p.track == track and not p.is_config]
    start_ms = round(video[0][0].start_pts_s * 1000)
    for name, track in (("audio-t0", 0), ("audio-t1", 1)):
        audio = got.segments[name]
        assert len(audio) == len(video) == 3
        for (a, _), (v, _) in zip(audio, video, strict=True):
            # Segment N of each audio rendition is the stretch of segment N of every
            # variant: it starts with the first AAC frame at or after its first frame.
            assert 0 <= a.start_pts_s - v.start_pts_s < frame_s
        # Each is its track's frames as they came, none lost from the first boundary on.
        packaged = [h for s, init in audio for _, h in aac_frames(init + s.data)]
        assert packaged == [h for pts, h in sent(track) if pts >= start_ms], name


def test_a_successor_keeps_the_audio_renditions_its_predecessor_published(
        two_audio_src: Path) -> None:
    packets = list(read_packets(two_audio_src, tracks=True))
    names = ("240p", "160p", "audio-t0", "audio-t1")
    got = run(packets, keep_rungs=names)
    assert set(got.segments) == {"source", *names}
    assert "mp4a" not in got.infos["source"].codecs
    # A ladder published without them stays without them: the variants keep the audio.
    got = run(packets, keep_rungs=names[:2])
    assert set(got.segments) == {"source", "240p", "160p"}
    assert got.infos["source"].codecs.endswith(",mp4a.40.2")


def test_the_journal_keeps_each_packets_track(tmp_path: Path) -> None:
    packet = MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 10, 20, b"abc", 2)
    path = tmp_path / "b.journal"
    header = b'{"broadcast_id": "b", "msn": {}, "default_msn": 0}'
    path.write_bytes(b"CWJ2" + len(header).to_bytes(4, "big") + header + encode_item(packet))
    assert read_journal(path)[1] == [packet]


def test_a_journal_written_before_tracks_reads_as_track_0(tmp_path: Path) -> None:
    import struct

    header = b'{"broadcast_id": "b", "msn": {}, "default_msn": 0}'
    record = b"P" + struct.pack(">BBBqqI", 0, 0, 1, 10, 20, 3) + b"abc"
    path = tmp_path / "old.journal"
    path.write_bytes(MAGIC_V1 + len(header).to_bytes(4, "big") + header + record)
    assert read_journal(path)[1] == [
        MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 10, 20, b"abc")]
