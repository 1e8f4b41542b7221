"""FLV audio/video tag bodies -> :class:`castway.media.MediaPacket`.

Legacy FLV (FLV spec v10.1, annex E.4.2/E.4.3): video FrameType/CodecID + AVCPacketType
(0 sequence header, 1 NALU, 2 end of sequence) + SI24 composition time, for H.264
(CodecID 7) and the widespread unofficial HEVC CodecID 12; audio SoundFormat 10 (AAC,
AACPacketType 0 AudioSpecificConfig / 1 raw) and 2/14 (MP3).

Enhanced RTMP (Veovera E-RTMP v1 and v2): the IsExHeader bit of the first video byte,
a 3-bit FrameType, a 4-bit VideoPacketType and a FourCC (hvc1, av01, vp09, avc1);
CodedFrames carries an SI24 composition time for avc1/hvc1, CodedFramesX none. v2
audio: SoundFormat 9 (ExHeader) + AudioPacketType + FourCC (Opus, mp4a, .mp3), and the
ModEx prefix packet type on both.

E-RTMP v2 multitrack (:class:`Multitrack`): a Multitrack packet type, then one byte of
AvMultitrackType (high nibble: OneTrack 0, ManyTracks 1, ManyTracksManyCodecs 2) and the
packet type of every track in it (low nibble); the FourCC once, except with many codecs,
where each track has its own. Each track: [FourCC] UI8 track id [UI24 size, unless
OneTrack] then the body a single-track packet of that type carries. FFmpeg's muxer (8.x)
and OBS send track 0 as a plain packet and every other track as a OneTrack multitrack
packet; the other forms are parsed the same way. Limits: :data:`MAX_TRACKS` tracks in one
message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from castway.media import Codec, MediaKind, MediaPacket
from ingest.protocol.errors import FlvError


class VideoCodecId(IntEnum):
    """Legacy FLV video CodecID (FLV spec E.4.3.1); 12 is the de-facto HEVC id."""

    H263 = 2
    SCREEN = 3
    VP6 = 4
    VP6_ALPHA = 5
    SCREEN2 = 6
    AVC = 7
    HEVC = 12


class FrameType(IntEnum):
    """Video FrameType (FLV spec E.4.3.1; E-RTMP keeps the values)."""

    KEY = 1
    INTER = 2
    DISPOSABLE_INTER = 3
    GENERATED_KEY = 4
    COMMAND = 5  # video info / command frame: no media


class AvcPacketType(IntEnum):
    """AVCPacketType (FLV spec E.4.3.1)."""

    SEQUENCE_HEADER = 0
    NALU = 1
    END_OF_SEQUENCE = 2


class VideoPacketType(IntEnum):
    """E-RTMP ExVideoTagHeader VideoPacketType."""

    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    CODED_FRAMES_X = 3  # composition time implied zero
    METADATA = 4
    MPEG2TS_SEQUENCE_START = 5
    MULTITRACK = 6  # v2
    MOD_EX = 7  # v2


class SoundFormat(IntEnum):
    """Legacy FLV SoundFormat (FLV spec E.4.2.1); 9 is E-RTMP v2's ExHeader."""

    MP3 = 2
    EX_HEADER = 9
    AAC = 10
    MP3_8KHZ = 14


class AudioPacketType(IntEnum):
    """E-RTMP v2 ExAudioTagHeader AudioPacketType."""

    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    MULTICHANNEL_CONFIG = 4
    MULTITRACK = 5
    MOD_EX = 7


VIDEO_FOURCC: dict[bytes, Codec] = {
    b"avc1": Codec.H264, b"hvc1": Codec.HEVC, b"av01": Codec.AV1, b"vp09": Codec.VP9}
AUDIO_FOURCC: dict[bytes, Codec] = {b"Opus": Codec.OPUS, b"mp4a": Codec.AAC,
                                    b".mp3": Codec.MP3}
_LEGACY_VIDEO: dict[int, Codec] = {VideoCodecId.AVC: Codec.H264,
                                   VideoCodecId.HEVC: Codec.HEVC}


@dataclass(frozen=True, slots=True)
class SequenceEnd:
    """End of sequence (AVC EOS / E-RTMP SequenceEnd): the codec's stream ended."""

    kind: MediaKind
    codec: Codec
    dts_ms: int


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed tag that carries no media for us (reason says why)."""

    reason: str


TrackTag = MediaPacket | SequenceEnd | Ignored


class MultitrackType(IntEnum):
    """E-RTMP v2 AvMultitrackType."""

    ONE_TRACK = 0
    MANY_TRACKS = 1
    MANY_TRACKS_MANY_CODECS = 2


#: Tracks one multitrack message may carry (the track id is a byte; E-RTMP sets no
#: count): OBS's ladders have up to 5 video tracks and 6 audio tracks. More is refused as
#: a malformed message rather than parsed at the cost of the session.
MAX_TRACKS = 16


@dataclass(frozen=True, slots=True)
class TrackPacket:
    """One track's part of a multitrack message."""

    track_id: int
    tag: TrackTag


@dataclass(frozen=True, slots=True)
class Multitrack:
    """An E-RTMP v2 multitrack message: its tracks, in the order sent."""

    kind: MediaKind
    multitrack_type: MultitrackType
    tracks: tuple[TrackPacket, ...]


FlvTag = MediaPacket | SequenceEnd | Ignored | Multitrack


def _si24(b: bytes) -> int:
    v = (b[0] << 16) | (b[1] << 8) | b[2]
    return v - (1 << 24) if v & 0x800000 else v


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise FlvError(f"truncated {what}: {len(body)} bytes, need {n}")


def _skip_mod_ex(body: bytes, pos: int, packet_type: int) -> tuple[int, int]:
    """Skip E-RTMP v2 ModEx prefixes; returns the real packet type and data position."""
    for _ in range(16):
        if packet_type != VideoPacketType.MOD_EX:
            return packet_type, pos
        _need(body, pos + 1, "ModEx size")
        size = body[pos] + 1
        pos += 1
        if size == 256:
            _need(body, pos + 2, "ModEx size")
            size = int.from_bytes(body[pos:pos + 2], "big") + 1
            pos += 2
        pos += size
        _need(body, pos + 1, "ModEx data")
        packet_type = body[pos] & 0x0F  # high nibble: ModExType (timestamp offset nano)
        pos += 1
    raise FlvError("too many ModEx prefixes")


def parse_video(dts_ms: int, body: bytes) -> FlvTag:
    """Parse one video message body (an FLV VIDEODATA tag body)."""
    if not body:
        return Ignored("empty video message")
    b0 = body[0]
    if b0 & 0x80:
        return _parse_ex_video(dts_ms, body)
    frame_type, codec_id = b0 >> 4, b0 & 0x0F
    if frame_type == FrameType.COMMAND:
        return Ignored("video command frame")
    codec = _LEGACY_VIDEO.get(codec_id)
    if codec is None:
        return Ignored(f"unsupported FLV video codec id {codec_id}")
    _need(body, 5, "AVC video tag header")
    packet_type = body[1]
    if packet_type == AvcPacketType.END_OF_SEQUENCE:
        return SequenceEnd(MediaKind.VIDEO, codec, dts_ms)
    if packet_type == AvcPacketType.SEQUENCE_HEADER:
        return MediaPacket(MediaKind.VIDEO, codec, is_keyframe=True, is_config=True,
                           dts_ms=dts_ms, pts_ms=dts_ms, payload=body[5:])
    if packet_type == AvcPacketType.NALU:
        cts = _si24(body[2:5])
        return MediaPacket(MediaKind.VIDEO, codec, is_keyframe=frame_type == FrameType.KEY,
                           is_config=False, dts_ms=dts_ms, pts_ms=dts_ms + cts,
                           payload=body[5:])
    raise FlvError(f"invalid AVCPacketType {packet_type}")


def _parse_ex_video(dts_ms: int, body: bytes) -> FlvTag:
    b0 = body[0]
    frame_type = (b0 >> 4) & 0x07
    packet_type, pos = _skip_mod_ex(body, 1, b0 & 0x0F)
    if frame_type == FrameType.COMMAND and packet_type != VideoPacketType.METADATA:
        return Ignored("video command frame")
    if packet_type == VideoPacketType.MULTITRACK:
        return _multitrack(MediaKind.VIDEO, body, pos,
                           lambda pt, fourcc, data: _ex_video_body(dts_ms, frame_type, pt,
                                                                   fourcc, data))
    _need(body, pos + 4, "E-RTMP video FourCC")
    return _ex_video_body(dts_ms, frame_type, packet_type, body[pos:pos + 4],
                          body[pos + 4:])


def _ex_video_body(dts_ms: int, frame_type: int, packet_type: int, fourcc: bytes,
                   body: bytes) -> TrackTag:
    """What follows the FourCC (and, in a multitrack message, the track id and size)."""
    pos = 0
    codec = VIDEO_FOURCC.get(fourcc)
    if codec is None:
        return Ignored(f"unsupported E-RTMP video FourCC {fourcc!r}")
    if packet_type == VideoPacketType.SEQUENCE_START:
        return MediaPacket(MediaKind.VIDEO, codec, is_keyframe=True, is_config=True,
                           dts_ms=dts_ms, pts_ms=dts_ms, payload=body[pos:])
    if packet_type == VideoPacketType.SEQUENCE_END:
        return SequenceEnd(MediaKind.VIDEO, codec, dts_ms)
    if packet_type in (VideoPacketType.CODED_FRAMES, VideoPacketType.CODED_FRAMES_X):
        cts = 0
        if packet_type == VideoPacketType.CODED_FRAMES and codec in (Codec.H264, Codec.HEVC):
            _need(body, pos + 3, "E-RTMP composition time")
            cts = _si24(body[pos:pos + 3])
            pos += 3
        return MediaPacket(MediaKind.VIDEO, codec, is_keyframe=frame_type == FrameType.KEY,
                           is_config=False, dts_ms=dts_ms, pts_ms=dts_ms + cts,
                           payload=body[pos:])
    if packet_type == VideoPacketType.METADATA:
        return Ignored("E-RTMP video metadata (colorInfo)")
    if packet_type == VideoPacketType.MPEG2TS_SEQUENCE_START:
        return Ignored("E-RTMP MPEG2-TS sequence start")
    raise FlvError(f"invalid E-RTMP VideoPacketType {packet_type}")


def parse_audio(dts_ms: int, body: bytes) -> FlvTag:
    """Parse one audio message body (an FLV AUDIODATA tag body)."""
    if not body:
        return Ignored("empty audio message")
    sound_format = body[0] >> 4
    if sound_format == SoundFormat.AAC:
        _need(body, 2, "AAC audio tag header")
        is_config = body[1] == 0
        if body[1] not in (0, 1):
            raise FlvError(f"invalid AACPacketType {body[1]}")
        return MediaPacket(MediaKind.AUDIO, Codec.AAC, is_keyframe=True, is_config=is_config,
                           dts_ms=dts_ms, pts_ms=dts_ms, payload=body[2:])
    if sound_format in (SoundFormat.MP3, SoundFormat.MP3_8KHZ):
        return MediaPacket(MediaKind.AUDIO, Codec.MP3, is_keyframe=True, is_config=False,
                           dts_ms=dts_ms, pts_ms=dts_ms, payload=body[1:])
    if sound_format == SoundFormat.EX_HEADER:
        return _parse_ex_audio(dts_ms, body)
    return Ignored(f"unsupported FLV sound format {sound_format}")


def _parse_ex_audio(dts_ms: int, body: bytes) -> FlvTag:
    packet_type, pos = _skip_mod_ex(body, 1, body[0] & 0x0F)
    if packet_type == AudioPacketType.MULTITRACK:
        return _multitrack(MediaKind.AUDIO, body, pos,
                           lambda pt, fourcc, data: _ex_audio_body(dts_ms, pt, fourcc, data))
    _need(body, pos + 4, "E-RTMP audio FourCC")
    return _ex_audio_body(dts_ms, packet_type, body[pos:pos + 4], body[pos + 4:])


def _ex_audio_body(dts_ms: int, packet_type: int, fourcc: bytes, body: bytes) -> TrackTag:
    pos = 0
    codec = AUDIO_FOURCC.get(fourcc)
    if codec is None:
        return Ignored(f"unsupported E-RTMP audio FourCC {fourcc!r}")
    if packet_type == AudioPacketType.SEQUENCE_START:
        return MediaPacket(MediaKind.AUDIO, codec, is_keyframe=True, is_config=True,
                           dts_ms=dts_ms, pts_ms=dts_ms, payload=body[pos:])
    if packet_type == AudioPacketType.CODED_FRAMES:
        return MediaPacket(MediaKind.AUDIO, codec, is_keyframe=True, is_config=False,
                           dts_ms=dts_ms, pts_ms=dts_ms, payload=body[pos:])
    if packet_type == AudioPacketType.SEQUENCE_END:
        return SequenceEnd(MediaKind.AUDIO, codec, dts_ms)
    if packet_type == AudioPacketType.MULTICHANNEL_CONFIG:
        return Ignored("E-RTMP multichannel config")
    raise FlvError(f"invalid E-RTMP AudioPacketType {packet_type}")


_NOT_IN_A_TRACK = {MediaKind.VIDEO: (VideoPacketType.MULTITRACK, VideoPacketType.MOD_EX),
                   MediaKind.AUDIO: (AudioPacketType.MULTITRACK, AudioPacketType.MOD_EX)}


def _multitrack(kind: MediaKind, body: bytes, pos: int,
                parse_track: Callable[[int, bytes, bytes], TrackTag]) -> Multitrack:
    """The tracks of a multitrack message whose AvMultitrackType byte is at ``pos``;
    ``parse_track(packet_type, fourcc, data)`` parses one track's body."""
    _need(body, pos + 1, "E-RTMP multitrack type")
    try:
        mt_type = MultitrackType(body[pos] >> 4)
    except ValueError as exc:
        raise FlvError(f"invalid E-RTMP AvMultitrackType {body[pos] >> 4}") from exc
    packet_type = body[pos] & 0x0F
    pos += 1
    if packet_type in _NOT_IN_A_TRACK[kind]:
        raise FlvError(f"E-RTMP multitrack message of packet type {packet_type}")
    fourcc = b""
    if mt_type is not MultitrackType.MANY_TRACKS_MANY_CODECS:
        _need(body, pos + 4, "E-RTMP multitrack FourCC")
        fourcc, pos = body[pos:pos + 4], pos + 4
    tracks: list[TrackPacket] = []
    while True:
        if len(tracks) == MAX_TRACKS:
            raise FlvError(f"E-RTMP multitrack message with more than {MAX_TRACKS} tracks")
        if mt_type is MultitrackType.MANY_TRACKS_MANY_CODECS:
            _need(body, pos + 4, "E-RTMP track FourCC")
            fourcc, pos = body[pos:pos + 4], pos + 4
        _need(body, pos + 1, "E-RTMP track id")
        track_id, pos = body[pos], pos + 1
        if mt_type is MultitrackType.ONE_TRACK:
            data, pos = body[pos:], len(body)
        else:
            _need(body, pos + 3, "E-RTMP track size")
            size = int.from_bytes(body[pos:pos + 3], "big")
            pos += 3
            _need(body, pos + size, f"E-RTMP track {track_id}")
            data, pos = body[pos:pos + size], pos + size
        tracks.append(TrackPacket(track_id, parse_track(packet_type, fourcc, data)))
        if pos >= len(body):
            return Multitrack(kind, mt_type, tuple(tracks))


# --- MediaPacket -> FLV tag body (the publisher side: restreaming) ----------------------

_FOURCC_OF_VIDEO: dict[Codec, bytes] = {c: f for f, c in VIDEO_FOURCC.items()}
_FOURCC_OF_AUDIO: dict[Codec, bytes] = {c: f for f, c in AUDIO_FOURCC.items()}
#: Sample rate 44 kHz, 16-bit, stereo: the flags FLV requires on AAC tags (E.4.2.1),
#: which decoders ignore in favour of the AudioSpecificConfig.
_AAC_FLAGS = 0x0F
_MP3_FLAGS = 0x0F


def needs_enhanced(codec: Codec) -> bool:
    """Whether ``codec`` travels only in Enhanced RTMP tags (legacy FLV has ids for
    H.264, AAC and MP3 alone; the unofficial HEVC id 12 is not sent)."""
    return codec not in (Codec.H264, Codec.AAC, Codec.MP3)


def fourcc(codec: Codec) -> str:
    """The E-RTMP FourCC of a codec, as ``fourCcList`` names it."""
    found = _FOURCC_OF_VIDEO.get(codec) or _FOURCC_OF_AUDIO.get(codec)
    if found is None:
        raise FlvError(f"no E-RTMP FourCC for {codec}")
    return found.decode("ascii")


def tag_body(packet: MediaPacket) -> bytes:
    """The FLV tag body that carries ``packet``: the inverse of :func:`parse_video` /
    :func:`parse_audio`. Legacy tags (FLV spec E.4.2, E.4.3) for H.264, AAC and MP3, the
    forms every RTMP server takes; Enhanced RTMP v1/v2 tags for HEVC, AV1, VP9 and Opus
    (a target that did not announce them must not be sent them:
    :func:`needs_enhanced`). A packet of a track other than 0 goes as an E-RTMP v2
    multitrack message of one track, as OBS sends its ladder's other renditions."""
    if packet.track:
        return _one_track_body(packet)
    frame = FrameType.KEY if packet.is_keyframe or packet.is_config else FrameType.INTER
    cts = packet.pts_ms - packet.dts_ms
    if packet.kind is MediaKind.VIDEO:
        if packet.codec is Codec.H264:
            kind = AvcPacketType.SEQUENCE_HEADER if packet.is_config else AvcPacketType.NALU
            return (bytes((frame << 4 | VideoCodecId.AVC, kind))
                    + (cts & 0xFFFFFF).to_bytes(3, "big") + packet.payload)
        code = _FOURCC_OF_VIDEO.get(packet.codec)
        if code is None:
            raise FlvError(f"no FLV video form for {packet.codec}")
        if packet.is_config:
            return bytes((0x80 | frame << 4 | VideoPacketType.SEQUENCE_START,)) + code \
                + packet.payload
        if packet.codec is Codec.HEVC and cts:
            return (bytes((0x80 | frame << 4 | VideoPacketType.CODED_FRAMES,)) + code
                    + (cts & 0xFFFFFF).to_bytes(3, "big") + packet.payload)
        return bytes((0x80 | frame << 4 | VideoPacketType.CODED_FRAMES_X,)) + code \
            + packet.payload
    if packet.codec is Codec.AAC:
        return bytes((SoundFormat.AAC << 4 | _AAC_FLAGS, 0 if packet.is_config else 1)) \
            + packet.payload
    if packet.codec is Codec.MP3:
        return bytes((SoundFormat.MP3 << 4 | _MP3_FLAGS,)) + packet.payload
    code = _FOURCC_OF_AUDIO.get(packet.codec)
    if code is None:
        raise FlvError(f"no FLV audio form for {packet.codec}")
    audio = AudioPacketType.SEQUENCE_START if packet.is_config else AudioPacketType.CODED_FRAMES
    return bytes((SoundFormat.EX_HEADER << 4 | audio,)) + code + packet.payload


def _one_track_body(packet: MediaPacket) -> bytes:
    """An E-RTMP v2 multitrack message (AvMultitrackType OneTrack) carrying ``packet``:
    ExHeader, the multitrack type and the packet's own type, FourCC, track id, then the
    packet's body as a plain E-RTMP tag would carry it."""
    if not 0 < packet.track < 256:
        raise FlvError(f"track id {packet.track} does not fit E-RTMP's byte")
    if packet.kind is MediaKind.VIDEO:
        code = _FOURCC_OF_VIDEO.get(packet.codec)
        if code is None:
            raise FlvError(f"no FLV video form for {packet.codec}")
        frame = FrameType.KEY if packet.is_keyframe or packet.is_config else FrameType.INTER
        cts = packet.pts_ms - packet.dts_ms
        if packet.is_config:
            video, data = VideoPacketType.SEQUENCE_START, packet.payload
        elif packet.codec in (Codec.H264, Codec.HEVC) and cts:
            video = VideoPacketType.CODED_FRAMES
            data = (cts & 0xFFFFFF).to_bytes(3, "big") + packet.payload
        else:
            video, data = VideoPacketType.CODED_FRAMES_X, packet.payload
        return (bytes((0x80 | frame << 4 | VideoPacketType.MULTITRACK,
                       MultitrackType.ONE_TRACK << 4 | video))
                + code + bytes((packet.track,)) + data)
    code = _FOURCC_OF_AUDIO.get(packet.codec)
    if code is None:
        raise FlvError(f"no FLV audio form for {packet.codec}")
    audio = AudioPacketType.SEQUENCE_START if packet.is_config else AudioPacketType.CODED_FRAMES
    return (bytes((SoundFormat.EX_HEADER << 4 | AudioPacketType.MULTITRACK,
                   MultitrackType.ONE_TRACK << 4 | audio))
            + code + bytes((packet.track,)) + packet.payload)
