"""MPEG-TS elementary streams -> MediaPackets as the RTMP path makes them: decoder
configuration records, length-prefixed NAL units, raw AAC after its ASC, and one
monotonic millisecond timeline across wraps and discontinuities."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from castway.media import Codec, MediaKind
from ingest.nal import avcc_record, hvcc_record, split_annexb
from ingest.srt.tsmedia import (
    MAX_JUMP_MS,
    STITCH_STEP_MS,
    WRAP,
    Timeline,
    TsPacket,
    TsToMedia,
)

SPS = bytes.fromhex("6764000cacd94141fb0110")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = bytes.fromhex("65888480")
SLICE = bytes.fromhex("419a0203")
AUD = bytes.fromhex("09f0")
START = b"\x00\x00\x00\x01"


def annexb(*nals: bytes) -> bytes:
    return b"".join(START + n for n in nals)


def adts(raw: bytes, *, profile: int = 1, rate_index: int = 3, channels: int = 2) -> bytes:
    """An ADTS frame (ISO 14496-3 1.A.2.2) around ``raw``: AAC-LC 48 kHz stereo default."""
    length = 7 + len(raw)
    return bytes([0xFF, 0xF1, (profile << 6) | (rate_index << 2) | (channels >> 2),
                  ((channels & 3) << 6) | (length >> 11), (length >> 3) & 0xFF,
                  ((length & 7) << 5) | 0x1F, 0xFC]) + raw


def video(data: bytes, ts: int, *, key: bool = False, pts: int | None = None) -> TsPacket:
    return TsPacket(0, "h264", data, pts if pts is not None else ts, ts, key)


def audio(data: bytes, ts: int | None) -> TsPacket:
    return TsPacket(1, "aac", data, ts, ts, True)


def test_annexb_splits_on_3_and_4_byte_start_codes() -> None:
    data = START + SPS + b"\x00\x00\x01" + PPS + START + IDR
    assert list(split_annexb(data)) == [SPS, PPS, IDR]


def test_h264_keyframe_becomes_an_avcc_record_then_length_prefixed_nals() -> None:
    conv = TsToMedia()
    out = conv.convert(video(annexb(AUD, SPS, PPS, IDR), 90_000, key=True))
    config, frame = out
    assert config.is_config and config.codec is Codec.H264
    assert config.payload == avcc_record([SPS], [PPS])
    assert config.payload[:4] == bytes([1, 0x64, 0x00, 0x0C])  # version, profile, level
    assert frame.is_keyframe and not frame.is_config
    assert frame.payload == len(IDR).to_bytes(4, "big") + IDR  # AUD, SPS, PPS gone
    assert (frame.dts_ms, frame.pts_ms) == (0, 0)
    # the same parameter sets again are no new config; a B-frame keeps its offset
    [inter] = conv.convert(video(annexb(SPS, PPS, SLICE), 90_000 + 3600, pts=90_000 + 10800))
    assert (inter.dts_ms, inter.pts_ms, inter.is_keyframe) == (40, 120, False)


def test_frames_before_the_first_parameter_sets_are_dropped() -> None:
    conv = TsToMedia()
    assert conv.convert(video(annexb(SLICE), 0)) == []
    assert [m.is_config for m in conv.convert(video(annexb(SPS, PPS, IDR), 3600, key=True))] \
        == [True, False]


def test_hevc_parameter_sets_become_an_hvcc_record() -> None:
    vps, sps, pps = b"\x40\x01\x0c", b"\x42\x01\x01" + bytes(range(1, 13)), b"\x44\x01\xc1"
    idr = b"\x26\x01\xaf"
    config, frame = TsToMedia().convert(
        TsPacket(0, "hevc", annexb(vps, sps, pps, idr), 0, 0, True))
    assert config.codec is Codec.HEVC and config.payload == hvcc_record([vps], [sps], [pps])
    assert config.payload[0] == 1 and config.payload[1:13] == bytes(range(1, 13))
    assert config.payload[21] & 3 == 3  # 4-byte NAL lengths
    assert frame.payload == len(idr).to_bytes(4, "big") + idr


def test_adts_frames_become_an_asc_then_raw_frames_each_with_its_time() -> None:
    conv = TsToMedia()
    out = conv.convert(audio(adts(b"\x01" * 10) + adts(b"\x02" * 12), 0))
    assert [m.is_config for m in out] == [True, False, False]
    assert out[0].payload == b"\x11\x90"  # AAC-LC, 48 kHz, stereo
    assert out[1].payload == b"\x01" * 10 and out[2].payload == b"\x02" * 12
    assert [m.dts_ms for m in out[1:]] == [0, 21]  # 1024 samples at 48 kHz
    # a PES without a timestamp goes on after the last frame
    [nxt] = conv.convert(audio(adts(b"\x03"), None))
    assert nxt.dts_ms == 43 and all(m.kind is MediaKind.AUDIO for m in out)


def test_opus_config_is_its_opushead() -> None:
    head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    out = TsToMedia().convert(TsPacket(1, "opus", b"\xfc\x00", 0, 0, True, head))
    assert [(m.codec, m.is_config, m.payload) for m in out] == [
        (Codec.OPUS, True, head), (Codec.OPUS, False, b"\xfc\x00")]


def test_unknown_codecs_are_ignored_and_named() -> None:
    conv = TsToMedia()
    assert conv.convert(TsPacket(2, "mp2", b"\x00", 0, 0)) == []
    assert conv.ignored == {"mp2"}


def test_start_waits_for_every_stream_and_sends_configs_first() -> None:
    conv = TsToMedia(expect={0, 1})
    assert conv.convert(video(annexb(SPS, PPS, IDR), 90_000 + 1890, key=True)) == []
    out = conv.convert(audio(adts(b"\x01"), 90_000))  # audio muxed 21 ms ahead of video
    assert [m.is_config for m in out] == [True, True, False, False]
    assert [m.kind for m in out[2:]] == [MediaKind.AUDIO, MediaKind.VIDEO]
    assert [m.dts_ms for m in out if not m.is_config] == [0, 21]  # from the earliest


def test_start_gives_up_waiting_for_a_silent_stream() -> None:
    conv = TsToMedia(expect={0, 1})
    assert conv.convert(video(annexb(SPS, PPS, IDR), 0, key=True)) == []
    out = conv.convert(video(annexb(SLICE), 90 * 1600))
    assert [m.dts_ms for m in out] == [0, 0, 1600]


def test_timeline_unwraps_the_33_bit_clock() -> None:
    t = Timeline()
    assert t.to_ms(WRAP - 9000) == 0
    assert t.to_ms(WRAP - 90) == 99
    assert t.to_ms(8910) == 199  # wrapped: goes on (17910 ticks after the start)
    assert t.to_ms(WRAP - 180) == 98  # a late packet from before the wrap


def test_timeline_stitches_a_discontinuity_either_way() -> None:
    t = Timeline()
    assert [t.to_ms(x) for x in (900_000, 903_600)] == [0, 40]
    jumped = t.to_ms(900_000 + 90 * (MAX_JUMP_MS + 1000))  # forward
    assert jumped == 40 + STITCH_STEP_MS
    assert t.to_ms(900_000 + 90 * (MAX_JUMP_MS + 1040)) == jumped + 40
    back = t.to_ms(90)  # backwards: the encoder restarted its clock
    assert back == jumped + 40 + STITCH_STEP_MS
    assert t.to_ms(3690) == back + 40


@given(st.lists(st.integers(0, WRAP - 1), min_size=1, max_size=50))
def test_timeline_never_goes_far_back(values: list[int]) -> None:
    t = Timeline()
    highest = None
    for v in values:
        out = t.to_ms(v)
        if highest is not None:
            assert out >= highest - MAX_JUMP_MS
        highest = out if highest is None else max(highest, out)


@given(st.lists(st.tuples(st.sampled_from(["h264", "hevc", "aac", "opus", "mp2"]),
                          st.binary(max_size=300),
                          st.one_of(st.none(), st.integers(0, WRAP - 1)),
                          st.booleans()), max_size=30))
def test_any_payload_is_packets_or_nothing(items: list[tuple[str, bytes, int | None,
                                                             bool]]) -> None:
    conv = TsToMedia(expect={0, 1})
    for i, (codec, data, ts, key) in enumerate(items):
        for m in conv.convert(TsPacket(i % 3, codec, data, ts, ts, key)):
            assert m.payload or m.is_config
    conv.flush()
