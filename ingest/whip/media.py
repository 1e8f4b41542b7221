"""A WebRTC publisher's encoded frames -> castway's :class:`MediaPacket` s, in the form the
RTMP path produces (castway/media.py): an AVC decoder configuration record, then
length-prefixed H.264 access units; an OpusHead, then Opus packets.

Pure and synchronous. The frames are what aiortc's depacketizers reassemble (H.264 as an
Annex B byte stream, RFC 6184; Opus as is, RFC 7587), with RTP timestamps that aiortc has
rebased to 0 per track.

One timeline for the broadcast, from 0 ms: RTP timestamps of different tracks have
unrelated origins, so each track's first frame is placed by its arrival (relative to the
first frame of any track) and later frames advance by their RTP timestamps (90 kHz for
video, 48 kHz for Opus). Lip sync is therefore as good as the first frames' arrival
(RTCP sender reports are not used: a documented limit). WebRTC H.264 has no B-frames
(constrained baseline and main without reordering), so a frame's DTS is its PTS, kept
strictly increasing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from castway.media import Codec, MediaKind, MediaPacket
from ingest.nal import avcc_record, length_prefixed, split_annexb

VIDEO_CLOCK_HZ = 90_000
OPUS_CLOCK_HZ = 48_000
_SPS, _PPS, _IDR, _AUD = 7, 8, 5, 9


def opus_head(channels: int = 2, *, pre_skip: int = 312, input_rate: int = 48_000) -> bytes:
    """The OpusHead identification header (RFC 7845 5.1), the Opus decoder configuration
    an Enhanced RTMP publisher sends: WebRTC's Opus is 48 kHz, stereo signalled in SDP."""
    return (b"OpusHead" + bytes([1, channels]) + pre_skip.to_bytes(2, "little")
            + input_rate.to_bytes(4, "little") + (0).to_bytes(2, "little") + bytes([0]))


@dataclass
class _Track:
    offset_ms: float | None = None  # the track's RTP 0 on the broadcast's timeline
    last_ms: int | None = None
    config: bytes | None = None


@dataclass
class WebRtcToMedia:
    """One publisher's frames -> MediaPackets (one instance per WHIP session)."""

    start_s: float | None = None  # arrival of the first frame of any track
    video_track: _Track = field(default_factory=_Track)
    audio_track: _Track = field(default_factory=_Track)
    #: Frames before the first keyframe with its parameter sets cannot be decoded.
    needs_keyframe: bool = True
    frames_skipped: int = 0

    def _place(self, track: _Track, rtp_ts: int, clock_hz: int, arrival_s: float,
               *, strictly: bool) -> int:
        if self.start_s is None:
            self.start_s = arrival_s
        if track.offset_ms is None:
            track.offset_ms = (arrival_s - self.start_s) * 1000.0 - rtp_ts * 1000.0 / clock_hz
        at = round(track.offset_ms + rtp_ts * 1000.0 / clock_hz)
        if track.last_ms is not None:
            at = max(at, track.last_ms + (1 if strictly else 0))
        track.last_ms = at
        return at

    def video(self, data: bytes, rtp_ts: int, arrival_s: float) -> list[MediaPacket]:
        """An H.264 access unit (Annex B) -> its config record when new, then the frame."""
        params: dict[int, list[bytes]] = {}
        frame: list[bytes] = []
        for nal in split_annexb(data):
            if not nal:
                continue
            kind = nal[0] & 0x1F
            if kind in (_SPS, _PPS):
                params.setdefault(kind, []).append(nal)
            elif kind != _AUD:
                frame.append(nal)
        keyframe = any(nal[0] & 0x1F == _IDR for nal in frame)
        track = self.video_track
        config = (avcc_record(params[_SPS], params[_PPS])
                  if _SPS in params and _PPS in params and len(params[_SPS][0]) >= 4 else None)
        if self.needs_keyframe and not (keyframe and (config or track.config)):
            self.frames_skipped += 1
            return []
        self.needs_keyframe = False
        at = self._place(track, rtp_ts, VIDEO_CLOCK_HZ, arrival_s, strictly=True)
        out: list[MediaPacket] = []
        if config is not None and config != track.config:
            track.config = config
            out.append(MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, at, at, config))
        if frame:
            out.append(MediaPacket(MediaKind.VIDEO, Codec.H264, keyframe, False, at, at,
                                   length_prefixed(frame)))
        return out

    def audio(self, data: bytes, rtp_ts: int, arrival_s: float, *,
              channels: int = 2) -> list[MediaPacket]:
        """An Opus packet -> the OpusHead first, then the packet."""
        track = self.audio_track
        at = self._place(track, rtp_ts, OPUS_CLOCK_HZ, arrival_s, strictly=False)
        out: list[MediaPacket] = []
        if track.config is None:
            track.config = opus_head(channels)
            out.append(MediaPacket(MediaKind.AUDIO, Codec.OPUS, True, True, at, at,
                                   track.config))
        if data:
            out.append(MediaPacket(MediaKind.AUDIO, Codec.OPUS, True, False, at, at, data))
        return out
