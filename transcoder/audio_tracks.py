"""Audio renditions (EXT-X-MEDIA TYPE=AUDIO) for a broadcast whose encoder sends audio
tracks besides its own (E-RTMP v2 multitrack audio: OBS's extra audio tracks, its Twitch
"VOD track", a commentary or a second language).

Such a broadcast's variants are video only: every AAC track, the broadcast's own (track 0)
included, becomes an audio-only rendition of its own, listed in the master's audio group
(castway.hls.playlist), track 0's the default. Demuxed because a player that put a muxed
fMP4 variant in one SourceBuffer cannot add an audio rendition beside it (hls.js:
bufferAppendError, video-dev/hls.js#5485).

Each rendition's segments are cut where the source's are (transcoder.segmenter.
BoundaryClock): an audio frame starts a segment when a boundary falls since the frame
before it, so segment N of every audio rendition holds the same stretch of the broadcast
as segment N of every variant, which a player switching audio mid-broadcast relies on.
Like an encoder-sent video track (transcoder.tracks), a track's frames wait until the
source's video has gone past them, so every boundary up to them is known.

Design: docs/transcoder.md, "Encoder-sent ladders", "Audio tracks".
"""

from __future__ import annotations

from collections import deque

from transcoder.codecs import mp4a_codec, parse_asc
from transcoder.fmp4 import AudioTrack
from transcoder.packager import ContainerWriter, Output, Packager
from transcoder.segmenter import BoundaryClock, SegmentPolicy

# AAC frames held while the source's video has not gone past them (nor the ladder been
# set up): at 48 kHz, 12.8 s -- more than any encoder's interleaving.
MAX_HELD_AUDIO_FRAMES = 600
# Boundaries before a track's first released frame were not its to meet.
_NO_FRAME_YET = -(2**62)


def audio_track_name(track: int) -> str:
    """The rendition name of audio track ``track`` (0: the broadcast's own; never a video
    rung's name)."""
    return f"audio-t{track}"


class AudioTrackRendition:
    """One AAC track (the broadcast's own or an encoder-sent one) as an audio rendition:
    held, then packaged on the source's boundaries."""

    def __init__(self, track: int) -> None:
        self.track = track
        self.name = audio_track_name(track)
        self.asc: bytes | None = None
        self.held: deque[tuple[int, bytes]] = deque(maxlen=MAX_HELD_AUDIO_FRAMES)
        self.packager: Packager | None = None
        self._released_to = _NO_FRAME_YET

    @property
    def codecs(self) -> str:
        assert self.asc is not None
        return mp4a_codec(self.asc)

    @property
    def channels(self) -> int | None:
        return parse_asc(self.asc).channels or None if self.asc is not None else None

    def configure(self, asc: bytes) -> None:
        """Its AudioSpecificConfig; raises CodecConfigError if it is not one."""
        parse_asc(asc)
        self.asc = asc

    def hold(self, pts_ms: int, data: bytes) -> None:
        if self.asc is not None:
            self.held.append((pts_ms, data))

    def start(self, policy: SegmentPolicy, writer: ContainerWriter, *, parts: bool) -> None:
        """It is a rendition from here (the ladder is being set up)."""
        assert self.asc is not None
        cfg = parse_asc(self.asc)
        self.packager = Packager(self.name, policy, writer, parts=parts, audio_only=True)
        self.packager.set_tracks(None, AudioTrack(self.asc, cfg.sample_rate, cfg.channels))
        self._released_to = _NO_FRAME_YET

    def release(self, upto_pts_ms: int | None, clock: BoundaryClock) -> list[Output]:
        """Package every held frame up to ``upto_pts_ms`` (None: all of them, the source
        has ended), each starting a segment if a boundary came since the frame before."""
        out: list[Output] = []
        if self.packager is None:
            return out
        while self.held and (upto_pts_ms is None or self.held[0][0] <= upto_pts_ms):
            pts, data = self.held.popleft()
            boundary = bool(clock.boundaries_in(self._released_to, pts))
            self._released_to = max(self._released_to, pts)
            out += self.packager.on_audio_sample(pts, data, boundary)
        return out

    def stop(self) -> None:
        """A break (timestamps restart): it is set up again with the next ladder."""
        self.packager = None
        self.held.clear()
        self._released_to = _NO_FRAME_YET
