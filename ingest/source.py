"""What a publisher sends, read as SourceInfo and stats: onMetaData (FLV spec E.5), the
codec configuration records (AAC AudioSpecificConfig), bytes and frames."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from castway.media import MediaKind, MediaPacket
from castway.model import SourceInfo

_VIDEO_CODEC_IDS: dict[int, str] = {7: "h264", 12: "hevc"}
_AUDIO_CODEC_IDS: dict[int, str] = {10: "aac", 2: "mp3", 14: "mp3"}
_FOURCC_NAMES: dict[str, str] = {"avc1": "h264", "hvc1": "hevc", "av01": "av1",
                                 "vp09": "vp9", "mp4a": "aac", ".mp3": "mp3", "Opus": "opus"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _codec_name(value: object, legacy: dict[int, str]) -> str | None:
    """onMetaData's videocodecid/audiocodecid: a legacy FLV id or an E-RTMP FourCC
    (as a number, or a string)."""
    if isinstance(value, str):
        return _FOURCC_NAMES.get(value, value)
    number = _number(value)
    if number is None or number < 0 or number >= 2**32:
        return None
    n = int(number)
    if n in legacy:
        return legacy[n]
    fourcc = n.to_bytes(4, "big").decode("latin-1")
    return _FOURCC_NAMES.get(fourcc)


def source_from_metadata(metadata: dict[str, object]) -> SourceInfo:
    """SourceInfo from an onMetaData object (FLV spec E.5 field names)."""
    channels = _number(metadata.get("audiochannels"))
    if channels is None and isinstance(metadata.get("stereo"), bool):
        channels = 2.0 if metadata["stereo"] else 1.0
    rate = _number(metadata.get("audiosamplerate"))
    encoder = metadata.get("encoder")
    return SourceInfo(
        video_codec=_codec_name(metadata.get("videocodecid"), _VIDEO_CODEC_IDS),
        audio_codec=_codec_name(metadata.get("audiocodecid"), _AUDIO_CODEC_IDS),
        width=int(w) if (w := _number(metadata.get("width"))) else None,
        height=int(h) if (h := _number(metadata.get("height"))) else None,
        fps=_number(metadata.get("framerate")) or _number(metadata.get("fps")) or None,
        video_bitrate_kbps=_number(metadata.get("videodatarate")) or None,
        audio_bitrate_kbps=_number(metadata.get("audiodatarate")) or None,
        audio_sample_rate=int(rate) if rate else None,
        audio_channels=int(channels) if channels else None,
        encoder=encoder if isinstance(encoder, str) else None,
    )


def parse_audio_specific_config(asc: bytes) -> tuple[int | None, int | None]:
    """Sample rate and channel count of an AAC AudioSpecificConfig (ISO 14496-3 1.6.2.1)."""
    if len(asc) < 2:
        return None, None
    bits = int.from_bytes(asc[:5].ljust(5, b"\x00"), "big")
    pos = 40

    def take(n: int) -> int:
        nonlocal pos
        pos -= n
        return (bits >> pos) & ((1 << n) - 1)

    object_type = take(5)
    if object_type == 31:
        take(6)
    index = take(4)
    if index == 15:
        rate: int | None = take(24)
    else:
        rate = _AAC_RATES[index] if index < len(_AAC_RATES) else None
    channels = take(4)
    return rate, channels or None


def tracks_from_metadata(metadata: dict[str, object]
                         ) -> tuple[dict[int, SourceInfo], dict[int, SourceInfo]]:
    """What an E-RTMP v2 onMetaData says of each other track ("Enhancing onMetaData"):
    ``videoTrackIdInfoMap`` and ``audioTrackIdInfoMap``, objects keyed by track id (1, 2,
    ...; track 0 is the top-level fields), each a per-track object of the same field
    names (width, height, framerate, videodatarate; audiodatarate, audiosamplerate,
    channels). (video, audio) by track id; what is not such an object, or past
    MAX_COUNTED_TRACKS, is left out (a publisher's metadata is only what it claims)."""
    maps: list[dict[int, SourceInfo]] = []
    for name in ("videoTrackIdInfoMap", "audioTrackIdInfoMap"):
        found: dict[int, SourceInfo] = {}
        value = metadata.get(name)
        for key, track in (value.items() if isinstance(value, dict) else ()):
            if len(found) >= MAX_COUNTED_TRACKS:
                break
            track_id = _track_id(key)
            if track_id is None or not isinstance(track, dict):
                continue
            fields = {str(k): v for k, v in track.items()}
            if "channels" in fields and "audiochannels" not in fields:
                fields["audiochannels"] = fields["channels"]
            found[track_id] = source_from_metadata(fields)
        maps.append(found)
    return maps[0], maps[1]


def _track_id(key: object) -> int | None:
    """A track id key: a decimal string (AMF0 object keys are strings) from 1 to 255."""
    if not isinstance(key, str) or not key.isdecimal() or len(key) > 3:
        return None
    n = int(key)
    return n if 1 <= n <= 255 else None


def merge_source(old: SourceInfo | None, new: SourceInfo) -> SourceInfo:
    """``new``'s known fields over ``old``'s."""
    if old is None:
        return new
    updates = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)
               if getattr(new, f.name) is not None}
    return dataclasses.replace(old, **updates)


@dataclass
class SourceCounters:
    """One broadcast's media as received: bytes, frames and codecs, sampled for stats."""

    video_codec: str | None = None
    audio_codec: str | None = None
    video_bytes: int = 0
    audio_bytes: int = 0
    video_frames: int = 0
    sampled: tuple[float, int, int] = (0.0, 0, 0)  # time, bytes, frames at the last sample

    def count(self, packet: MediaPacket) -> SourceInfo | None:
        """Count ``packet``; what it tells of the source when it configures a new codec."""
        if packet.kind is MediaKind.VIDEO:
            self.video_bytes += len(packet.payload)
            if not packet.is_config:
                self.video_frames += 1
            elif self.video_codec != packet.codec.value:
                self.video_codec = packet.codec.value
                return SourceInfo(video_codec=self.video_codec)
            return None
        self.audio_bytes += len(packet.payload)
        if packet.is_config and self.audio_codec != packet.codec.value:
            self.audio_codec = packet.codec.value
            rate, channels = (parse_audio_specific_config(packet.payload)
                              if packet.codec.value == "aac" else (None, None))
            return SourceInfo(audio_codec=self.audio_codec, audio_sample_rate=rate,
                              audio_channels=channels)
        return None

    def sample(self, now: float) -> tuple[float, float]:
        """Bitrate (kbit/s) and frame rate since the last sample (``now``: a monotonic
        time)."""
        then, last_bytes, last_frames = self.sampled
        elapsed = max(now - then, 1e-3)
        total = self.video_bytes + self.audio_bytes
        self.sampled = (now, total, self.video_frames)
        kbps = (total - last_bytes) * 8 / 1000 / elapsed
        return kbps, (self.video_frames - last_frames) / elapsed


# Encoder-sent tracks whose figures are kept (more are ingested only as the transcoder
# takes them, castway.encoder_ladder.MAX_LADDER_TRACKS).
MAX_COUNTED_TRACKS = 16


@dataclass(slots=True)
class _TrackCount:
    rates: SourceCounters = dataclasses.field(default_factory=SourceCounters)
    last_keyframe_ms: int | None = None
    keyframe_interval_s: float | None = None


@dataclass
class TrackCounters:
    """The encoder-sent tracks of a broadcast (E-RTMP multitrack, track 1 and up) as
    received: per video track its codec, bit rate, frame rate and keyframe interval; per
    audio track (numbered apart from the video's, as E-RTMP numbers them) its codec and
    bit rate."""

    tracks: dict[int, _TrackCount] = dataclasses.field(default_factory=dict)
    audio: dict[int, SourceCounters] = dataclasses.field(default_factory=dict)
    # What the publisher's onMetaData declared of each (tracks_from_metadata).
    declared_video: dict[int, SourceInfo] = dataclasses.field(default_factory=dict)
    declared_audio: dict[int, SourceInfo] = dataclasses.field(default_factory=dict)

    def declare(self, metadata: dict[str, object]) -> None:
        """An onMetaData: what it declares of each track replaces what was declared."""
        video, audio = tracks_from_metadata(metadata)
        if video or audio:
            self.declared_video, self.declared_audio = video, audio

    def count(self, packet: MediaPacket) -> None:
        if packet.kind is not MediaKind.VIDEO:
            audio = self.audio.get(packet.track)
            if audio is None:
                if len(self.audio) >= MAX_COUNTED_TRACKS:
                    return
                audio = self.audio[packet.track] = SourceCounters()
            audio.count(packet)
            return
        track = self.tracks.get(packet.track)
        if track is None:
            if len(self.tracks) >= MAX_COUNTED_TRACKS:
                return
            track = self.tracks[packet.track] = _TrackCount()
        track.rates.count(packet)
        if packet.is_keyframe and not packet.is_config:
            if track.last_keyframe_ms is not None and packet.dts_ms > track.last_keyframe_ms:
                track.keyframe_interval_s = (packet.dts_ms - track.last_keyframe_ms) / 1000
            track.last_keyframe_ms = packet.dts_ms

    def sample(self, now: float) -> dict[str, float | str]:
        """Per track since the last sample, as flat stats keys (``track1_bitrate_kbps``,
        ``audio_track1_bitrate_kbps``)."""
        stats: dict[str, float | str] = {}
        for number, track in sorted(self.tracks.items()):
            kbps, fps = track.rates.sample(now)
            prefix = f"track{number}_"
            stats[prefix + "codec"] = track.rates.video_codec or ""
            stats[prefix + "bitrate_kbps"] = round(kbps, 1)
            stats[prefix + "fps"] = round(fps, 2)
            if track.keyframe_interval_s is not None:
                stats[prefix + "keyframe_interval_s"] = round(track.keyframe_interval_s, 3)
        for number, audio in sorted(self.audio.items()):
            kbps, _ = audio.sample(now)
            stats[f"audio_track{number}_codec"] = audio.audio_codec or ""
            stats[f"audio_track{number}_bitrate_kbps"] = round(kbps, 1)
        for prefix, declared in (("track", self.declared_video),
                                 ("audio_track", self.declared_audio)):
            for number, info in sorted(declared.items()):
                for key, value in _declared_figures(info).items():
                    stats[f"{prefix}{number}_declared_{key}"] = value
        return stats


def _declared_figures(info: SourceInfo) -> dict[str, float]:
    """A track's onMetaData figures, as stats values (those it declared)."""
    figures = {"width": info.width, "height": info.height, "fps": info.fps,
               "bitrate_kbps": info.video_bitrate_kbps or info.audio_bitrate_kbps,
               "sample_rate": info.audio_sample_rate, "channels": info.audio_channels}
    return {k: float(v) for k, v in figures.items() if v is not None}
