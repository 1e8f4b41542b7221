from __future__ import annotations

import pytest

from transcoder.codecs import (
    AudioConfig,
    CodecConfigError,
    av01_codec,
    avc1_codec,
    hvc1_codec,
    mp4a_codec,
    parse_asc,
    video_codec_string,
)


def test_avc1_from_the_configuration_record() -> None:
    assert avc1_codec(bytes([1, 0x64, 0x00, 0x1F, 0xFF, 0xE1])) == "avc1.64001f"
    assert avc1_codec(bytes([1, 0x42, 0xC0, 0x1E, 0xFF])) == "avc1.42c01e"
    with pytest.raises(CodecConfigError):
        avc1_codec(b"\x00\x64")


def test_hvc1_reverses_compatibility_flags_and_trims_constraints() -> None:
    record = bytes([1, 0x01, 0x60, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 93]) + bytes(10)
    assert hvc1_codec(record) == "hvc1.1.6.L93.B0"
    main10_high = bytes([1, 0x22, 0x20, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 150]) + bytes(10)
    assert hvc1_codec(main10_high) == "hvc1.2.4.H150.90"


def test_av01_from_the_configuration_record() -> None:
    assert av01_codec(bytes([0x81, 0x08, 0x0C, 0x00])) == "av01.0.08M.08"
    assert av01_codec(bytes([0x81, 0x2D, 0xCC, 0x00])) == "av01.1.13H.10"
    with pytest.raises(CodecConfigError):
        av01_codec(bytes([0x01, 0x08, 0x0C, 0x00]))


@pytest.mark.parametrize(("asc", "config", "codec"), [
    (bytes([0x12, 0x10]), AudioConfig(2, 44100, 2), "mp4a.40.2"),
    (bytes([0x11, 0x90]), AudioConfig(2, 48000, 2), "mp4a.40.2"),
    (bytes([0x2B, 0x92, 0x08, 0x00]), AudioConfig(5, 22050, 2), "mp4a.40.5"),
    (bytes([0x11, 0x88]), AudioConfig(2, 48000, 1), "mp4a.40.2"),
])
def test_audio_specific_config(asc: bytes, config: AudioConfig, codec: str) -> None:
    assert parse_asc(asc) == config
    assert mp4a_codec(asc) == codec


@pytest.mark.parametrize("asc", [b"", b"\x12", bytes([0x17, 0x90])])
def test_bad_audio_specific_config(asc: bytes) -> None:
    with pytest.raises(CodecConfigError):
        parse_asc(asc)


def test_unknown_video_codec() -> None:
    with pytest.raises(CodecConfigError):
        video_codec_string("vp9", b"")
