"""Enhanced RTMP v2 multitrack messages (issue 14): every form from byte scripts, the
limits, fuzzing, FFmpeg's own muxer output, and what a session does with the tracks."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castway.media import Codec, MediaKind, MediaPacket
from ingest.protocol.errors import FlvError
from ingest.protocol.flv import (
    MAX_TRACKS,
    Ignored,
    Multitrack,
    MultitrackType,
    SequenceEnd,
    TrackPacket,
    parse_audio,
    parse_video,
)

EX_KEY, EX_INTER = 0x80 | 0x10, 0x80 | 0x20
MULTITRACK_VIDEO = 6
MULTITRACK_AUDIO = 5
AUDIO_EX = 9 << 4


def si24(n: int) -> bytes:
    return (n & 0xFFFFFF).to_bytes(3, "big")


def ui24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def video(frame: int, mt_type: int, packet_type: int, rest: bytes) -> bytes:
    return bytes((frame | MULTITRACK_VIDEO, mt_type << 4 | packet_type)) + rest


def test_one_track_sequence_start_as_ffmpeg_sends_track_1() -> None:
    tag = parse_video(0, video(EX_KEY, 0, 0, b"avc1" + b"\x01" + b"\x01avcC"))
    assert tag == Multitrack(MediaKind.VIDEO, MultitrackType.ONE_TRACK, (
        TrackPacket(1, MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0,
                                   b"\x01avcC")),))


def test_one_track_coded_frames_carry_their_composition_time() -> None:
    tag = parse_video(100, video(EX_INTER, 0, 1, b"hvc1" + b"\x02" + si24(-33) + b"nal"))
    assert isinstance(tag, Multitrack)
    [track] = tag.tracks
    assert track.track_id == 2
    assert track.tag == MediaPacket(MediaKind.VIDEO, Codec.HEVC, False, False, 100, 67,
                                    b"nal")


def test_many_tracks_one_codec_each_with_its_size() -> None:
    body = video(EX_KEY, 1, 3, b"avc1" + b"\x00" + ui24(3) + b"top" + b"\x01" + ui24(4)
                 + b"next" + b"\x02" + ui24(0))
    tag = parse_video(40, body)
    assert isinstance(tag, Multitrack) and tag.multitrack_type is MultitrackType.MANY_TRACKS
    assert [(t.track_id, t.tag) for t in tag.tracks] == [
        (0, MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 40, 40, b"top")),
        (1, MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 40, 40, b"next")),
        (2, MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 40, 40, b""))]


def test_many_tracks_many_codecs_name_each_track_s_fourcc() -> None:
    body = video(EX_KEY, 2, 0, b"av01" + b"\x00" + ui24(4) + b"av1C"
                 + b"hvc1" + b"\x01" + ui24(4) + b"hvcC" + b"vp08" + b"\x02" + ui24(1) + b"x")
    tag = parse_video(0, body)
    assert isinstance(tag, Multitrack)
    assert [(t.track_id, t.tag) for t in tag.tracks] == [
        (0, MediaPacket(MediaKind.VIDEO, Codec.AV1, True, True, 0, 0, b"av1C")),
        (1, MediaPacket(MediaKind.VIDEO, Codec.HEVC, True, True, 0, 0, b"hvcC")),
        (2, Ignored("unsupported E-RTMP video FourCC b'vp08'"))]


def test_multitrack_sequence_end() -> None:
    tag = parse_video(7, video(EX_KEY, 0, 2, b"avc1\x03"))
    assert isinstance(tag, Multitrack)
    assert tag.tracks == (TrackPacket(3, SequenceEnd(MediaKind.VIDEO, Codec.H264, 7)),)


def test_audio_one_track_and_many_tracks() -> None:
    one = parse_audio(0, bytes((AUDIO_EX | MULTITRACK_AUDIO, 0 << 4 | 0)) + b"mp4a\x01"
                      + b"\x11\x90")
    assert one == Multitrack(MediaKind.AUDIO, MultitrackType.ONE_TRACK, (
        TrackPacket(1, MediaPacket(MediaKind.AUDIO, Codec.AAC, True, True, 0, 0,
                                   b"\x11\x90")),))
    many = parse_audio(21, bytes((AUDIO_EX | MULTITRACK_AUDIO, 2 << 4 | 1))
                       + b"Opus\x00" + ui24(2) + b"op" + b"mp4a\x01" + ui24(3) + b"aac")
    assert isinstance(many, Multitrack)
    assert [(t.track_id, t.tag) for t in many.tracks] == [
        (0, MediaPacket(MediaKind.AUDIO, Codec.OPUS, True, False, 21, 21, b"op")),
        (1, MediaPacket(MediaKind.AUDIO, Codec.AAC, True, False, 21, 21, b"aac"))]


@pytest.mark.parametrize(("body", "error"), [
    (video(EX_KEY, 3, 1, b"avc1\x00frame"), "AvMultitrackType 3"),
    (video(EX_KEY, 0, MULTITRACK_VIDEO, b"avc1\x00"), "packet type 6"),
    (video(EX_KEY, 0, 7, b"avc1\x00"), "packet type 7"),
    (video(EX_KEY, 1, 1, b"avc1\x00" + ui24(10) + b"short"), "truncated E-RTMP track 0"),
    (video(EX_KEY, 1, 1, b"avc1\x00\x00"), "truncated E-RTMP track size"),
    (video(EX_KEY, 0, 1, b"av"), "truncated E-RTMP multitrack FourCC"),
    (bytes((EX_KEY | MULTITRACK_VIDEO,)), "truncated E-RTMP multitrack type"),
    (video(EX_KEY, 1, 3, b"avc1" + b"".join(bytes((i,)) + ui24(1) + b"x"
                                          for i in range(MAX_TRACKS + 1))),
     f"more than {MAX_TRACKS} tracks"),
])
def test_malformed_or_past_the_limits_is_a_clear_error(body: bytes, error: str) -> None:
    with pytest.raises(FlvError, match=error):
        parse_video(0, body)


def test_as_many_tracks_as_the_limit_are_taken() -> None:
    body = video(EX_KEY, 1, 3, b"avc1" + b"".join(bytes((i,)) + ui24(1) + b"x"
                                                  for i in range(MAX_TRACKS)))
    tag = parse_video(0, body)
    assert isinstance(tag, Multitrack) and len(tag.tracks) == MAX_TRACKS


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0x7F), st.integers(0, 0xFF), st.binary(max_size=300))
def test_fuzzed_multitrack_video_parses_or_fails_cleanly(first: int, types: int,
                                                         rest: bytes) -> None:
    body = bytes((0x80 | (first & 0x70) | MULTITRACK_VIDEO, types)) + rest
    try:
        tag = parse_video(0, body)
    except FlvError:
        return
    assert isinstance(tag, Multitrack | Ignored)
    if isinstance(tag, Multitrack):
        assert 1 <= len(tag.tracks) <= MAX_TRACKS


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0xFF), st.binary(max_size=300))
def test_fuzzed_multitrack_audio_parses_or_fails_cleanly(types: int, rest: bytes) -> None:
    try:
        tag = parse_audio(0, bytes((AUDIO_EX | MULTITRACK_AUDIO, types)) + rest)
    except FlvError:
        return
    assert isinstance(tag, Multitrack)


def _flv_tags(path: Path) -> list[tuple[int, int, bytes]]:
    """(type, timestamp, body) of every tag of an FLV file."""
    data = path.read_bytes()
    pos, out = 13, []
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        out.append((data[pos], ts, data[pos + 11:pos + 11 + size]))
        pos += 11 + size + 4
    return out


def test_ffmpeg_s_enhanced_flv_v2_muxer_output_parses_track_by_track(tmp_path: Path) -> None:
    """Three video tracks as the libav bundled with PyAV (FFmpeg 8) muxes them: track 0
    as plain packets, tracks 1 and 2 as OneTrack multitrack packets. Every track's
    sequence header and every frame come out, keyframes where the encoder put them."""
    path = tmp_path / "three.flv"
    out = av.open(str(path), "w", format="flv")
    streams = []
    for width, height in ((320, 180), (256, 144), (160, 90)):
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "g": "30"}
        streams.append(stream)
    for n in range(45):
        for stream in streams:
            frame = av.VideoFrame(stream.width, stream.height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([n * 3 % 256]) * plane.buffer_size)
            frame.pts = n
            out.mux(stream.encode(frame))
    for stream in streams:
        out.mux(stream.encode(None))
    out.close()

    configs: dict[int, int] = {}
    frames: dict[int, int] = {}
    keyframes: dict[int, list[int]] = {}
    for kind, ts, body in _flv_tags(path):
        if kind != 9:
            continue
        tag = parse_video(ts, body)
        tracks = tag.tracks if isinstance(tag, Multitrack) else (TrackPacket(0, tag),)
        for track in tracks:
            packet = track.tag
            if isinstance(packet, SequenceEnd):
                continue  # at the end of the file, one per track
            assert isinstance(packet, MediaPacket), packet
            assert packet.codec is Codec.H264
            if packet.is_config:
                configs[track.track_id] = configs.get(track.track_id, 0) + 1
                assert packet.payload[0] == 1  # an avcC record
                continue
            frames[track.track_id] = frames.get(track.track_id, 0) + 1
            if packet.is_keyframe:
                keyframes.setdefault(track.track_id, []).append(packet.dts_ms)
    assert configs == {0: 1, 1: 1, 2: 1}
    assert frames == {0: 45, 1: 45, 2: 45}
    assert keyframes[0] == keyframes[1] == keyframes[2] == [0, 1000]
