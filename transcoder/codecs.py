"""RFC 6381 CODECS strings from decoder configuration records.

- H.264: ``avc1.PPCCLL`` from AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1),
  whose profile/compat/level bytes are copies of the SPS's.
- HEVC: ``hvc1.<space><profile>.<compat>.<tier><level>.<constraints>`` from
  HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 E.3).
- AV1: ``av01.P.LLT.DD`` from AV1CodecConfigurationRecord (AV1-ISOBMFF 2.3, codecs
  parameter string section).
- AAC: ``mp4a.40.<audioObjectType>`` from AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass


class CodecConfigError(ValueError):
    """A decoder configuration record is malformed."""


def avc1_codec(avcc: bytes) -> str:
    if len(avcc) < 4 or avcc[0] != 1:
        raise CodecConfigError("AVCDecoderConfigurationRecord too short or wrong version")
    return f"avc1.{avcc[1]:02x}{avcc[2]:02x}{avcc[3]:02x}"


def hvc1_codec(hvcc: bytes) -> str:
    if len(hvcc) < 13 or hvcc[0] != 1:
        raise CodecConfigError("HEVCDecoderConfigurationRecord too short or wrong version")
    space = (hvcc[1] >> 6) & 3
    tier = (hvcc[1] >> 5) & 1
    profile = hvcc[1] & 0x1F
    compat = int.from_bytes(hvcc[2:6], "big")
    # The compatibility flags are written bit-reversed, in hex without leading zeros.
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraints = list(hvcc[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    level = hvcc[12]
    parts = ["hvc1", f"{'' if space == 0 else 'ABC'[space - 1]}{profile}",
             f"{reversed_compat:X}", f"{'H' if tier else 'L'}{level}"]
    parts += [f"{c:X}" for c in constraints]
    return ".".join(parts)


def av01_codec(av1c: bytes) -> str:
    if len(av1c) < 4 or av1c[0] != 0x81:
        raise CodecConfigError("AV1CodecConfigurationRecord too short or wrong marker")
    profile = (av1c[1] >> 5) & 7
    level = av1c[1] & 0x1F
    tier = "H" if (av1c[2] >> 7) & 1 else "M"
    high_bitdepth = (av1c[2] >> 6) & 1
    twelve_bit = (av1c[2] >> 5) & 1
    depth = 12 if twelve_bit else (10 if high_bitdepth else 8)
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


@dataclass(frozen=True, slots=True)
class AudioConfig:
    object_type: int
    sample_rate: int
    channels: int


_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
          8000, 7350)


def parse_asc(asc: bytes) -> AudioConfig:
    """The basics of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1)."""
    if len(asc) < 2:
        raise CodecConfigError("AudioSpecificConfig too short")
    bits = int.from_bytes(asc, "big")
    nbits = len(asc) * 8
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        if pos + n > nbits:
            raise CodecConfigError("AudioSpecificConfig truncated")
        value = (bits >> (nbits - pos - n)) & ((1 << n) - 1)
        pos += n
        return value

    aot = take(5)
    if aot == 31:
        aot = 32 + take(6)
    index = take(4)
    rate = take(24) if index == 15 else (_RATES[index] if index < len(_RATES) else 0)
    if rate == 0:
        raise CodecConfigError(f"AudioSpecificConfig: bad sampling frequency index {index}")
    channels = take(4)
    return AudioConfig(aot, rate, channels)


def mp4a_codec(asc: bytes) -> str:
    return f"mp4a.40.{parse_asc(asc).object_type}"


def video_codec_string(codec: str, record: bytes) -> str:
    if codec == "h264":
        return avc1_codec(record)
    if codec == "hevc":
        return hvc1_codec(record)
    if codec == "av1":
        return av01_codec(record)
    raise CodecConfigError(f"no CODECS string for video codec {codec!r}")
