"""A small fragmented-MP4 (CMAF) writer: init segments and one fragment per LL-HLS part.

ISO/IEC 14496-12 (ISOBMFF) boxes: ``ftyp`` + ``moov`` (``mvhd``, a ``trak`` per track,
``mvex``/``trex``) for the init segment (EXT-X-MAP); ``moof`` (``mfhd``, a ``traf`` per
track with ``tfhd`` default-base-is-moof, ``tfdt`` v1, ``trun`` v1 with signed
composition offsets) + ``mdat`` per fragment. A segment is the concatenation of its
parts' fragments (RFC 8216bis 4.4.4.9), so a part boundary is always a fragment boundary.
Sample entries: ``avc1``/``avcC``, ``hvc1``/``hvcC``, ``av01``/``av1C``, ``mp4a``/``esds``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

VIDEO_TIMESCALE = 90000

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_SAMPLE_ENTRY = {"h264": (b"avc1", b"avcC"), "hevc": (b"hvc1", b"hvcC"),
                 "av1": (b"av01", b"av1C")}

# Sample flags (ISOBMFF 8.8.3.1): sync sample vs. a sample that depends on others.
SYNC_FLAGS = 0x02000000
NON_SYNC_FLAGS = 0x01010000


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


@dataclass(frozen=True, slots=True)
class VideoTrack:
    codec: str  # "h264", "hevc", "av1"
    config: bytes  # avcC / hvcC / av1C record
    width: int
    height: int
    track_id: int = 1
    timescale: int = VIDEO_TIMESCALE


@dataclass(frozen=True, slots=True)
class AudioTrack:
    asc: bytes  # AudioSpecificConfig
    sample_rate: int
    channels: int
    track_id: int = 2

    @property
    def timescale(self) -> int:
        return self.sample_rate


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes
    duration: int  # in the track's timescale
    keyframe: bool = True
    cts_offset: int = 0  # pts - dts, in the track's timescale


@dataclass(frozen=True, slots=True)
class TrackRun:
    track_id: int
    base_decode_time: int  # tfdt, in the track's timescale
    samples: Sequence[Sample]


def _descriptor(tag: int, body: bytes) -> bytes:
    size = len(body)
    encoded = bytes([0x80 | ((size >> 21) & 0x7F), 0x80 | ((size >> 14) & 0x7F),
                     0x80 | ((size >> 7) & 0x7F), size & 0x7F])
    return bytes([tag]) + encoded + body


def _esds(asc: bytes) -> bytes:
    dsi = _descriptor(0x05, asc)
    dcd = _descriptor(0x04, bytes([0x40, 0x15]) + b"\x00\x00\x00"
                      + struct.pack(">II", 0, 0) + dsi)
    sl = _descriptor(0x06, b"\x02")
    es = _descriptor(0x03, struct.pack(">HB", 0, 0) + dcd + sl)
    return full_box(b"esds", 0, 0, es)


def _video_entry(t: VideoTrack) -> bytes:
    entry, config_box = _SAMPLE_ENTRY[t.codec]
    return box(entry, b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 16,
               struct.pack(">HHIIIH", t.width, t.height, 0x00480000, 0x00480000, 0, 1),
               b"\x00" * 32, struct.pack(">Hh", 0x0018, -1), box(config_box, t.config))


def _audio_entry(t: AudioTrack) -> bytes:
    return box(b"mp4a", b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 8,
               struct.pack(">HHHHI", max(1, min(t.channels, 8)) if t.channels else 2, 16,
                           0, 0, (t.sample_rate << 16) & 0xFFFFFFFF),
               _esds(t.asc))


def _trak(track_id: int, timescale: int, handler: bytes, media_header: bytes,
          entry: bytes, width: int = 0, height: int = 0) -> bytes:
    volume = 0x0100 if handler == b"soun" else 0
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, track_id, 0, 0),
                    b"\x00" * 8, struct.pack(">hhhH", 0, 0, volume, 0), _MATRIX,
                    struct.pack(">II", width << 16, height << 16))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, 0),
                    struct.pack(">HH", 0x55C4, 0))  # language "und"
    name = b"VideoHandler\x00" if handler == b"vide" else b"SoundHandler\x00"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0), handler, b"\x00" * 12, name)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1),
                                 full_box(b"url ", 0, 1)))
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
               full_box(b"stts", 0, 0, struct.pack(">I", 0)),
               full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
               full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
               full_box(b"stco", 0, 0, struct.pack(">I", 0)))
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def init_segment(video: VideoTrack | None, audio: AudioTrack | None) -> bytes:
    """ftyp + moov for the given tracks (EXT-X-MAP)."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"isom", b"mp41")
    traks: list[bytes] = []
    trexs: list[bytes] = []
    next_id = 1
    if video is not None:
        vmhd = full_box(b"vmhd", 0, 1, b"\x00" * 8)
        traks.append(_trak(video.track_id, video.timescale, b"vide", vmhd,
                           _video_entry(video), video.width, video.height))
        next_id = max(next_id, video.track_id + 1)
    if audio is not None:
        smhd = full_box(b"smhd", 0, 0, b"\x00" * 4)
        traks.append(_trak(audio.track_id, audio.timescale, b"soun", smhd, _audio_entry(audio)))
        next_id = max(next_id, audio.track_id + 1)
    for t in (video, audio):
        if t is not None:
            trexs.append(full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)))
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, 0),
                    struct.pack(">IH", 0x00010000, 0x0100), b"\x00" * 10, _MATRIX,
                    b"\x00" * 24, struct.pack(">I", next_id))
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def fragment(sequence_number: int, runs: Sequence[TrackRun]) -> bytes:
    """moof + mdat holding ``runs`` (tracks without samples are left out)."""
    runs = [r for r in runs if r.samples]
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))

    def trafs(offsets: Sequence[int]) -> list[bytes]:
        out = []
        for run, offset in zip(runs, offsets, strict=True):
            tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", run.track_id))
            tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", run.base_decode_time))
            rows = b"".join(struct.pack(">IIIi", s.duration, len(s.data),
                                        SYNC_FLAGS if s.keyframe else NON_SYNC_FLAGS,
                                        s.cts_offset) for s in run.samples)
            trun = full_box(b"trun", 1, 0x000F01,
                            struct.pack(">Ii", len(run.samples), offset), rows)
            out.append(box(b"traf", tfhd, tfdt, trun))
        return out

    # The moof's size does not depend on the offsets' values, so measure then fill in.
    moof_size = len(box(b"moof", mfhd, *trafs([0] * len(runs))))
    offsets = []
    position = moof_size + 8
    for run in runs:
        offsets.append(position)
        position += sum(len(s.data) for s in run.samples)
    moof = box(b"moof", mfhd, *trafs(offsets))
    mdat = box(b"mdat", *(s.data for run in runs for s in run.samples))
    return moof + mdat
