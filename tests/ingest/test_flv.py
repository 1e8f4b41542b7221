"""FLV tag bodies and Enhanced RTMP v1/v2 headers -> MediaPackets."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from castway.media import Codec, MediaKind, MediaPacket
from ingest.protocol.errors import FlvError
from ingest.protocol.flv import (
    VIDEO_FOURCC,
    Ignored,
    Multitrack,
    SequenceEnd,
    VideoPacketType,
    parse_audio,
    parse_video,
)


def si24(n: int) -> bytes:
    return (n & 0xFFFFFF).to_bytes(3, "big")


def test_avc_sequence_header() -> None:
    p = parse_video(0, b"\x17\x00" + si24(0) + b"\x01avcC")
    assert p == MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0, b"\x01avcC")


@pytest.mark.parametrize("cts", [0, 66, -33, 0x7FFFFF, -0x800000])
def test_avc_nalu_with_signed_composition_time(cts: int) -> None:
    p = parse_video(1000, b"\x27\x01" + si24(cts) + b"nalus")
    assert isinstance(p, MediaPacket)
    assert (p.is_keyframe, p.is_config, p.dts_ms, p.pts_ms, p.payload) == (
        False, False, 1000, 1000 + cts, b"nalus")


def test_avc_keyframe_and_end_of_sequence() -> None:
    p = parse_video(5, b"\x17\x01" + si24(0) + b"idr")
    assert isinstance(p, MediaPacket) and p.is_keyframe
    assert parse_video(9, b"\x17\x02" + si24(0)) == SequenceEnd(MediaKind.VIDEO, Codec.H264, 9)


def test_legacy_hevc_codec_id_12() -> None:
    p = parse_video(0, b"\x1c\x01" + si24(40) + b"hevc")
    assert isinstance(p, MediaPacket) and p.codec is Codec.HEVC and p.pts_ms == 40


def test_ex_header_hvc1_sequence_start_and_coded_frames_with_composition_time() -> None:
    start = parse_video(0, bytes((0x80 | 0x10 | 0,)) + b"hvc1" + b"hvcC")
    assert start == MediaPacket(MediaKind.VIDEO, Codec.HEVC, True, True, 0, 0, b"hvcC")
    coded = parse_video(40, bytes((0x80 | 0x20 | 1,)) + b"hvc1" + si24(-20) + b"frame")
    assert coded == MediaPacket(MediaKind.VIDEO, Codec.HEVC, False, False, 40, 20, b"frame")


def test_ex_header_coded_frames_x_has_no_composition_time() -> None:
    p = parse_video(40, bytes((0x80 | 0x10 | 3,)) + b"hvc1" + b"frame")
    assert p == MediaPacket(MediaKind.VIDEO, Codec.HEVC, True, False, 40, 40, b"frame")


@pytest.mark.parametrize("fourcc,codec", [(b"av01", Codec.AV1), (b"vp09", Codec.VP9)])
def test_ex_header_av1_and_vp9_coded_frames_carry_no_composition_time(
        fourcc: bytes, codec: Codec) -> None:
    p = parse_video(7, bytes((0x80 | 0x10 | 1,)) + fourcc + b"obu")
    assert p == MediaPacket(MediaKind.VIDEO, codec, True, False, 7, 7, b"obu")


def test_ex_header_sequence_end_metadata_and_command_frames() -> None:
    assert parse_video(3, bytes((0x80 | 0x10 | 2,)) + b"av01") == SequenceEnd(
        MediaKind.VIDEO, Codec.AV1, 3)
    assert isinstance(parse_video(0, bytes((0x80 | 0x10 | 4,)) + b"hvc1\x02\x00"), Ignored)
    assert isinstance(parse_video(0, bytes((0x80 | 0x50 | 1,)) + b"\x00"), Ignored)
    # Multitrack (tests/ingest/test_flv_multitrack.py): a header cut short is an error.
    with pytest.raises(FlvError, match="multitrack FourCC"):
        parse_video(0, bytes((0x80 | 0x10 | 6,)) + b"\x00")


def test_ex_header_mod_ex_prefix_is_skipped() -> None:
    # ModEx (7): size-1 = 2 (3 bytes of nanosecond offset), then ModExType 0 | CodedFramesX.
    body = bytes((0x80 | 0x10 | 7, 2)) + b"\x00\x01\x02" + bytes((0x03,)) + b"hvc1data"
    p = parse_video(10, body)
    assert isinstance(p, MediaPacket) and p.payload == b"data" and p.pts_ms == 10


def test_unknown_codecs_are_ignored_not_fatal() -> None:
    assert isinstance(parse_video(0, b"\x12\x00"), Ignored)  # Sorenson H.263
    assert isinstance(parse_video(0, bytes((0x90,)) + b"xxxx"), Ignored)
    assert isinstance(parse_audio(0, b"\x60\x00"), Ignored)  # Nellymoser
    assert isinstance(parse_video(0, b""), Ignored)
    assert isinstance(parse_audio(0, b""), Ignored)


@pytest.mark.parametrize("body", [b"\x17", b"\x17\x01\x00", b"\x17\x05" + si24(0),
                                  b"\x90hv", bytes((0x81,)) + b"hvc1\x00"])
def test_truncated_or_invalid_video_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(FlvError):
        parse_video(0, body)


def test_aac_config_and_raw() -> None:
    assert parse_audio(0, b"\xaf\x00\x11\x90") == MediaPacket(
        MediaKind.AUDIO, Codec.AAC, True, True, 0, 0, b"\x11\x90")
    assert parse_audio(21, b"\xaf\x01raw") == MediaPacket(
        MediaKind.AUDIO, Codec.AAC, True, False, 21, 21, b"raw")
    with pytest.raises(FlvError):
        parse_audio(0, b"\xaf")
    with pytest.raises(FlvError):
        parse_audio(0, b"\xaf\x07")


def test_mp3() -> None:
    assert parse_audio(5, b"\x2f\xff\xfb") == MediaPacket(
        MediaKind.AUDIO, Codec.MP3, True, False, 5, 5, b"\xff\xfb")
    p = parse_audio(5, b"\xe2mp3")
    assert isinstance(p, MediaPacket) and p.codec is Codec.MP3


def test_ex_audio_opus() -> None:
    assert parse_audio(0, b"\x90Opus" + b"OpusHead") == MediaPacket(
        MediaKind.AUDIO, Codec.OPUS, True, True, 0, 0, b"OpusHead")
    assert parse_audio(20, b"\x91Opus" + b"pkt") == MediaPacket(
        MediaKind.AUDIO, Codec.OPUS, True, False, 20, 20, b"pkt")
    assert parse_audio(40, b"\x92Opus") == SequenceEnd(MediaKind.AUDIO, Codec.OPUS, 40)
    assert isinstance(parse_audio(0, b"\x91fLaC" + b"x"), Ignored)
    with pytest.raises(FlvError, match="multitrack type"):
        parse_audio(0, b"\x95")


# --- fuzzing (hypothesis) ---------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None)
_TAG_RESULTS = (MediaPacket, SequenceEnd, Ignored, Multitrack)


@FUZZ
@given(st.integers(0, 2**32 - 1), st.binary(max_size=64))
# A OneTrack multitrack message whose track has an unknown FourCC: a Multitrack of one
# Ignored track (the fuzz test listed every result but this one).
@example(0, b"\xb6\x00\x00\x00\x00\x00\x00")
def test_any_video_or_audio_body_parses_or_raises_an_flv_error(dts: int, body: bytes) -> None:
    for parse in (parse_video, parse_audio):
        try:
            assert isinstance(parse(dts, body), _TAG_RESULTS)
        except FlvError:
            pass


@FUZZ
@given(st.integers(0, 2**32 - 1), st.sampled_from([0x80, 0x90, 0xA0, 0x97, 0x87, 0xD0]),
       st.binary(max_size=40))
def test_any_enhanced_rtmp_header_parses_or_raises_an_flv_error(
        dts: int, first: int, rest: bytes) -> None:
    # The ExHeader bit (video) / SoundFormat 9 (audio), then anything: ModEx chains,
    # FourCCs, packet types.
    for parse, body in ((parse_video, bytes((first,)) + rest),
                        (parse_audio, bytes((0x90 | first & 0x0F,)) + rest)):
        try:
            assert isinstance(parse(dts, body), _TAG_RESULTS)
        except FlvError:
            pass


@FUZZ
@given(st.integers(0, 2**31), st.sampled_from([(7, Codec.H264), (12, Codec.HEVC)]),
       st.sampled_from([1, 2, 3, 4]), st.integers(-0x800000, 0x7FFFFF),
       st.binary(max_size=100))
def test_legacy_video_tags_carry_their_fields(dts: int, codec: tuple[int, Codec],
                                              frame_type: int, cts: int,
                                              payload: bytes) -> None:
    codec_id, expected = codec
    p = parse_video(dts, bytes((frame_type << 4 | codec_id, 1)) + si24(cts) + payload)
    assert p == MediaPacket(MediaKind.VIDEO, expected, is_keyframe=frame_type == 1,
                            is_config=False, dts_ms=dts, pts_ms=dts + cts, payload=payload)


@FUZZ
@given(st.integers(0, 2**31), st.sampled_from(sorted(VIDEO_FOURCC)),
       st.integers(-0x800000, 0x7FFFFF), st.binary(max_size=100),
       st.lists(st.binary(min_size=1, max_size=300), max_size=3))
def test_enhanced_video_tags_carry_their_fields_through_mod_ex_prefixes(
        dts: int, fourcc: bytes, cts: int, payload: bytes, mod_ex: list[bytes]) -> None:
    codec = VIDEO_FOURCC[fourcc]
    prefix = b""
    for data in mod_ex:  # each ModEx: size-1 (UI8, or 0xFF + UI16), data, next type
        size = len(data) - 1
        prefix += (bytes((size,)) if size < 255 else b"\xff" + size.to_bytes(2, "big"))
        prefix += data
        prefix += bytes((VideoPacketType.MOD_EX,))
    first_type = VideoPacketType.MOD_EX if mod_ex else VideoPacketType.CODED_FRAMES
    if mod_ex:
        prefix = prefix[:-1] + bytes((VideoPacketType.CODED_FRAMES,))
    with_cts = codec in (Codec.H264, Codec.HEVC)
    body = (bytes((0x80 | 1 << 4 | first_type,)) + prefix + fourcc
            + (si24(cts) if with_cts else b"") + payload)
    p = parse_video(dts, body)
    assert p == MediaPacket(MediaKind.VIDEO, codec, is_keyframe=True, is_config=False,
                            dts_ms=dts, pts_ms=dts + (cts if with_cts else 0),
                            payload=payload)
