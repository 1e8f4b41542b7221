"""MediaPacket: what ingest hands the transcoder, one per FLV audio/video tag.

The payload is the codec's elementary data as FLV carries it: for H.264/HEVC the
length-prefixed (AVCC/HVCC) NAL units, or for a config packet the decoder configuration
record (AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord,
AV1CodecConfigurationRecord); for AAC raw access units, or for a config packet the
AudioSpecificConfig.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from enum import StrEnum

from castway.model import Broadcast


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


class BroadcastMedia(typing.Protocol):
    """Where one live broadcast's packets go (the transcoder, or nothing with
    ``CASTWAY_TRANSCODE=false``). Implemented by ``transcoder``, used by ``ingest``."""

    @property
    def dropped(self) -> int:
        """Source video frames the pipeline dropped so far (skipped to catch up, or not
        taken on a full queue): the broadcast's ``dropped`` stat."""

    async def feed(self, packet: MediaPacket) -> None:
        """Hand over one packet. Never blocks for long: the implementation queues
        (bounded) and counts what it drops."""

    async def discontinuity(self) -> None:
        """The publisher reconnected within the grace window: timestamps may restart."""

    async def finish(self, *, failed: bool = False) -> None:
        """The broadcast ended: flush, write the last segments and EXT-X-ENDLIST."""

    async def hand_over(self) -> None:
        """The broadcast goes on on another ingest node: flush (the segment in progress
        closes as a complete segment), write the last segments and leave the playlists
        open (no EXT-X-ENDLIST) for that node to continue."""


class MediaPipelineFactory(typing.Protocol):
    async def start(self, broadcast: Broadcast, *, handover: bool = False) -> BroadcastMedia:
        """Start the pipeline of a broadcast that just went live; with ``handover``, of
        a live broadcast another ingest node handed over to this one: its playlists go on
        from the live state (sequence numbers, discontinuity sequence, init generations)
        after a discontinuity."""
