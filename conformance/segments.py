"""What a Media Segment's own media says, read with PyAV: the facts
(:class:`castway.hls.measured.SegmentFacts`) the kernel's rules hold the playlist's EXTINF,
BANDWIDTH, CODECS and RESOLUTION against.

``probe_segment`` is synchronous CPU work (it decodes every video frame); the follower
calls it off the event loop's way, one segment at a time.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av

from castway.hls.measured import SegmentFacts

# H.264 NAL unit type of a sequence parameter set (ITU-T H.264 7.4.1.2).
_NAL_SPS = 7


def probe_segment(data: bytes, init: bytes | None = None) -> SegmentFacts:
    """Demux and decode one segment (with its EXT-X-MAP init section prepended)."""
    blob = (init or b"") + data
    try:
        container = av.open(io.BytesIO(blob), mode="r")
    except av.FFmpegError as e:
        return SegmentFacts(len(data), error=f"cannot open: {e}")
    try:
        return _read(container, len(data))
    finally:
        container.close()


def _read(container: av.container.InputContainer, size: int) -> SegmentFacts:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    main = video or audio
    if main is None:
        return SegmentFacts(size, error="no audio or video stream")
    if video is not None:
        video.codec_context.thread_type = "AUTO"
    first: float | None = None
    end: float | None = None
    keyframe: bool | None = None
    width = height = None
    frame_s: float | None = None
    sps: bytes | None = None
    error = None
    decoding = False  # a segment that starts mid-GOP decodes from its first keyframe on
    try:
        for packet in container.demux(main):
            if packet.pts is None or packet.time_base is None:
                continue
            base: Fraction = packet.time_base
            start = float(packet.pts * base)
            stop = start + float((packet.duration or 0) * base)
            first = start if first is None else min(first, start)
            end = stop if end is None else max(end, stop)
            if packet.duration:
                frame_s = float(packet.duration * base)
            if main is not video:
                continue
            if keyframe is None:
                keyframe = packet.is_keyframe
                sps = _sps_of(bytes(packet))
            decoding = decoding or packet.is_keyframe
            if decoding and error is None:
                try:
                    for frame in packet.decode():
                        if isinstance(frame, av.VideoFrame):
                            width, height = frame.width, frame.height
                except av.FFmpegError as e:
                    error = f"decoding failed at {start:.3f} s: {e}"
        if video is not None and decoding and error is None:
            for frame in video.codec_context.decode(None):
                width, height = frame.width, frame.height
    except av.FFmpegError as e:
        error = error or f"demuxing failed: {e}"
    codecs = []
    if video is not None:
        codecs.append(_video_codec(video, sps))
    if audio is not None:
        codecs.append(_audio_codec(audio))
    duration = None if first is None or end is None else end - first
    return SegmentFacts(size, duration, first, keyframe, tuple(codecs), width, height,
                        frame_s, error)


def _sps_of(annex_b: bytes) -> bytes | None:
    """The first SPS in an Annex B packet (MPEG-TS carries no avcC)."""
    at = annex_b.find(b"\x00\x00\x01")
    while at != -1 and at + 6 <= len(annex_b):
        if annex_b[at + 3] & 0x1F == _NAL_SPS:
            return annex_b[at + 3:at + 7]
        at = annex_b.find(b"\x00\x00\x01", at + 3)
    return None


def _video_codec(stream: av.video.stream.VideoStream, sps: bytes | None) -> str:
    name = stream.codec_context.name
    if name == "h264":
        extradata = stream.codec_context.extradata
        if extradata and extradata[0] == 1 and len(extradata) >= 4:  # avcC (ISO 14496-15)
            return f"avc1.{extradata[1:4].hex()}"
        if sps is not None:  # profile_idc, constraint flags, level_idc follow the header
            return f"avc1.{sps[1:4].hex()}"
        return "avc1"
    return {"hevc": "hvc1", "av1": "av01", "vp9": "vp09"}.get(name, name)


def _audio_codec(stream: av.audio.stream.AudioStream) -> str:
    name = stream.codec_context.name
    if name == "aac":
        # mp4a.40.<audio object type>: LC is 2, HE-AAC 5, HE-AACv2 29 (ISO 14496-3)
        profile = (stream.codec_context.profile or "").upper()
        aot = {"LC": 2, "HE-AAC": 5, "HE-AACV2": 29}.get(profile, 2)
        return f"mp4a.40.{aot}"
    return {"mp3": "mp4a.40.34", "ac3": "ac-3", "eac3": "ec-3", "opus": "Opus"}.get(name, name)
