"""A media file as the MediaPackets ingest would send (file mode and benchmarks).

Demuxed with PyAV; the video stream must carry its decoder configuration record as
extradata (MP4, MOV, FLV, MKV do; MPEG-TS does not and is refused).
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from castway.media import Codec, MediaKind, MediaPacket

_VIDEO = {"h264": Codec.H264, "hevc": Codec.HEVC, "av1": Codec.AV1, "libdav1d": Codec.AV1}
_AUDIO = {"aac": Codec.AAC, "mp3": Codec.MP3, "mp3float": Codec.MP3, "opus": Codec.OPUS}


class DemuxError(Exception):
    """The file cannot be read as a castway source."""


def _ms(value: int | None, time_base: Fraction | None) -> int | None:
    if value is None or time_base is None:
        return None
    return int(round(value * time_base * 1000))


def read_packets(path: Path, *, tracks: bool = False) -> Iterator[MediaPacket]:
    """The file's first video and audio stream as track 0; with ``tracks``, its other
    video streams as tracks 1, 2, ... (an encoder-sent ladder, E-RTMP multitrack) and its
    other AAC streams as audio tracks 1, 2, ... (numbered apart from the video's, as
    E-RTMP numbers them)."""
    try:
        container: Any = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise DemuxError(f"cannot open {path}: {exc}") from exc
    try:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None:
            raise DemuxError(f"{path}: no video stream")
        vcodec = _VIDEO.get(video.codec_context.name)
        if vcodec is None:
            raise DemuxError(f"{path}: unsupported video codec {video.codec_context.name}")
        vconfig = bytes(video.codec_context.extradata or b"")
        if not vconfig or (vcodec == Codec.H264 and vconfig[0] != 1):
            raise DemuxError(f"{path}: video has no decoder configuration record "
                             f"(use MP4, MKV or FLV)")
        yield MediaPacket(MediaKind.VIDEO, vcodec, False, True, 0, 0, vconfig)
        others: dict[Any, tuple[int, Codec]] = {}
        for number, stream in enumerate(container.streams.video[1:] if tracks else (), 1):
            codec = _VIDEO.get(stream.codec_context.name)
            config = bytes(stream.codec_context.extradata or b"")
            if codec is not None and config:
                others[stream] = (number, codec)
                yield MediaPacket(MediaKind.VIDEO, codec, False, True, 0, 0, config, number)
        for number, stream in enumerate(container.streams.audio[1:] if tracks else (), 1):
            config = bytes(stream.codec_context.extradata or b"")
            if _AUDIO.get(stream.codec_context.name) == Codec.AAC and config:
                others[stream] = (number, Codec.AAC)
                yield MediaPacket(MediaKind.AUDIO, Codec.AAC, False, True, 0, 0, config,
                                  number)
        acodec = _AUDIO.get(audio.codec_context.name) if audio is not None else None
        streams = [video, *others]
        if audio is not None and acodec is not None:
            streams.append(audio)
            aconfig = bytes(audio.codec_context.extradata or b"")
            if aconfig or acodec != Codec.AAC:
                yield MediaPacket(MediaKind.AUDIO, acodec, False, True, 0, 0, aconfig)
            else:
                acodec = None
        for packet in container.demux(streams):
            if packet.size == 0:
                continue
            tb = packet.time_base
            dts = _ms(packet.dts, tb)
            pts = _ms(packet.pts, tb)
            if pts is None and dts is None:
                continue
            pts = dts if pts is None else pts
            dts = pts if dts is None else dts
            assert pts is not None and dts is not None
            if packet.stream is video:
                yield MediaPacket(MediaKind.VIDEO, vcodec, bool(packet.is_keyframe), False,
                                  dts, pts, bytes(packet))
            elif packet.stream in others:
                number, codec = others[packet.stream]
                kind = MediaKind.VIDEO if packet.stream.type == "video" else MediaKind.AUDIO
                yield MediaPacket(kind, codec, bool(packet.is_keyframe), False,
                                  dts, pts, bytes(packet), number)
            elif acodec is not None:
                yield MediaPacket(MediaKind.AUDIO, acodec, True, False, dts, pts,
                                  bytes(packet))
    finally:
        container.close()
