from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from transcoder.codecs import CodecConfigError
from transcoder.nal import (
    annexb_to_avcc,
    avcc_record,
    avcc_record_from_annexb,
    parse_avcc_record,
    split_annexb,
    split_avcc,
    sps_dimensions,
)

SPS = bytes([0x67, 0x64, 0x00, 0x1F, 0xAC])
PPS = bytes([0x68, 0xEE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x80, 0x00, 0x00, 0x03, 0x01])  # emulation prevention inside
AUD = bytes([0x09, 0xF0])


def test_annexb_with_3_and_4_byte_start_codes() -> None:
    stream = b"\x00\x00\x00\x01" + AUD + b"\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + IDR
    assert list(split_annexb(stream)) == [AUD, SPS, IDR]


def test_annexb_to_avcc_round_trip_drops_delimiters() -> None:
    stream = b"\x00\x00\x00\x01" + AUD + b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" \
        + PPS + b"\x00\x00\x00\x01" + IDR
    avcc = annexb_to_avcc(stream)
    assert list(split_avcc(avcc)) == [SPS, PPS, IDR]
    assert list(split_avcc(annexb_to_avcc(stream, drop_parameter_sets=True))) == [IDR]


def test_configuration_record_round_trip() -> None:
    record = avcc_record_from_annexb(b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS)
    assert record[:5] == bytes([1, 0x64, 0x00, 0x1F, 0xFF])
    assert parse_avcc_record(record) == (4, [SPS], [PPS])
    assert avcc_record([SPS], [PPS]) == record


def test_malformed_input_is_an_error_not_a_crash() -> None:
    with pytest.raises(CodecConfigError):
        list(split_avcc(b"\x00\x00\x00\x09abc"))
    with pytest.raises(CodecConfigError):
        avcc_record([], [PPS])
    with pytest.raises(CodecConfigError):
        parse_avcc_record(bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0x00, 0x20, 0x67]))


@pytest.mark.parametrize(("width", "height", "profile"), [
    (1920, 1080, "high"), (1280, 720, "main"), (854, 480, "baseline"), (640, 360, "high")])
def test_the_sequence_header_says_the_source_size(width: int, height: int,
                                                  profile: str) -> None:
    """1080 is coded as 1088 and cropped: the display size is what comes out."""
    import av

    ctx: Any = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.flags |= av.codec.context.Flags.global_header
    ctx.options = {"profile": profile}
    ctx.open()
    record = avcc_record_from_annexb(bytes(ctx.extradata))
    assert sps_dimensions(record) == (width, height)
