"""MediaPacket: what ingest hands the transcoder, one per FLV audio/video tag.

The payload is the codec's elementary data as FLV carries it: for H.264/HEVC the
length-prefixed (AVCC/HVCC) NAL units, or for a config packet the decoder configuration
record (AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord,
AV1CodecConfigurationRecord); for AAC raw access units, or for a config packet the
AudioSpecificConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MediaKind(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"


class Codec(StrEnum):
    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"
    VP9 = "vp9"
    AAC = "aac"
    MP3 = "mp3"
    OPUS = "opus"


@dataclass(frozen=True, slots=True)
class MediaPacket:
    kind: MediaKind
    codec: Codec
    is_keyframe: bool
    is_config: bool  # sequence header: decoder configuration, not a frame
    dts_ms: int
    pts_ms: int  # dts + composition time offset
    payload: bytes
