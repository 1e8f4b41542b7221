"""MediaPacket: what ingest hands the transcoder, one per FLV audio/video tag.

The payload is the codec's elementary data as FLV carries it: for H.264/HEVC the
length-prefixed (AVCC/HVCC) NAL units, or for a config packet the decoder configuration
record (AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord,
AV1CodecConfigurationRecord); for AAC raw access units, or for a config packet the
AudioSpecificConfig.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from enum import StrEnum

from castway.model import Broadcast

logger = logging.getLogger(__name__)


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
    # The E-RTMP multitrack track id: 0 is the broadcast (every other ingest sends only
    # track 0); an encoder-sent ladder's other renditions come as 1, 2, ...
    track: int = 0

    @property
    def stream(self) -> tuple[MediaKind, int]:
        """Which elementary stream this is (a configuration record replaces the one
        before it of the same stream only)."""
        return (self.kind, self.track)


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


class TeeFactory:
    """One broadcast's packets to a primary pipeline (the transcoder: its failures are the
    broadcast's) and to side pipelines (restreaming) that never affect it: a side that
    fails to start is left out, one that raises is dropped, and the primary always goes
    first. Composed by the wiring, so neither side knows of the other."""

    def __init__(self, primary: MediaPipelineFactory | None,
                 sides: typing.Sequence[MediaPipelineFactory]) -> None:
        self.primary = primary
        self.sides = tuple(sides)

    async def start(self, broadcast: Broadcast, *, handover: bool = False) -> BroadcastMedia:
        primary = (await self.primary.start(broadcast, handover=handover)
                   if self.primary is not None else None)
        sides: list[BroadcastMedia] = []
        for factory in self.sides:
            try:
                sides.append(await factory.start(broadcast, handover=handover))
            except Exception:
                logger.exception("side media pipeline did not start; the broadcast goes "
                                 "on without it", extra={"broadcast_id": broadcast.id,
                                                         "channel": broadcast.channel})
        return TeeMedia(primary, sides, broadcast)


class TeeMedia:
    """The :class:`BroadcastMedia` of :class:`TeeFactory`."""

    def __init__(self, primary: BroadcastMedia | None, sides: list[BroadcastMedia],
                 broadcast: Broadcast) -> None:
        self.primary = primary
        self.sides = sides
        self._fields = {"broadcast_id": broadcast.id, "channel": broadcast.channel}

    @property
    def dropped(self) -> int:
        """The primary's drop count (what the ingest stats report): the sides' drops are
        theirs, in their own stats."""
        return self.primary.dropped if self.primary is not None else 0

    async def _each_side(self, call: typing.Callable[[BroadcastMedia],
                                                     typing.Awaitable[None]]) -> None:
        for side in list(self.sides):
            try:
                await call(side)
            except Exception:
                logger.exception("side media pipeline failed; dropped from the broadcast",
                                 extra=self._fields)
                self.sides.remove(side)

    async def feed(self, packet: MediaPacket) -> None:
        if self.primary is not None:
            await self.primary.feed(packet)
        await self._each_side(lambda side: side.feed(packet))

    async def discontinuity(self) -> None:
        if self.primary is not None:
            await self.primary.discontinuity()
        await self._each_side(lambda side: side.discontinuity())

    async def finish(self, *, failed: bool = False) -> None:
        try:
            if self.primary is not None:
                await self.primary.finish(failed=failed)
        finally:
            await self._each_side(lambda side: side.finish(failed=failed))

    async def hand_over(self) -> None:
        try:
            if self.primary is not None:
                await self.primary.hand_over()
        finally:
            await self._each_side(lambda side: side.hand_over())
