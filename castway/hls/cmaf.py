"""The media duration of a CMAF (fMP4) segment, from its boxes (ISO/IEC 14496-12).

Sans-IO: init segment and media segment bytes in, seconds out. For checking that a
playlist's EXTINF says how long its segment plays (rfc8216bis 4.4.4.1): the video
track's sample durations (``trun``, else ``tfhd``/``trex`` defaults) over its timescale
(``mdhd``); an audio-only file's audio track.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# Containers whose children are boxes (only those this module descends into).
_CONTAINERS = {b"moov", b"trak", b"mdia", b"mvex", b"moof", b"traf"}


class CmafError(ValueError):
    """Bytes that are not the fMP4 this module reads."""


@dataclass(frozen=True, slots=True)
class Track:
    track_id: int
    handler: bytes  # b"vide", b"soun"
    timescale: int
    default_duration: int  # trex default_sample_duration


def _boxes(data: bytes, start: int = 0, end: int | None = None
           ) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            if at + 16 > end:
                raise CmafError("truncated largesize box")
            size = struct.unpack_from(">Q", data, at + 8)[0]
            header = 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise CmafError(f"box {kind!r} overruns its parent")
        yield kind, at + header, at + size
        at += size


def _find(data: bytes, path: tuple[bytes, ...], start: int = 0,
          end: int | None = None) -> Iterator[tuple[int, int]]:
    """Payload ranges of every box at ``path`` below data[start:end]."""
    for kind, a, b in _boxes(data, start, end):
        if kind != path[0]:
            continue
        if len(path) == 1:
            yield a, b
        elif kind in _CONTAINERS:
            yield from _find(data, path[1:], a, b)


def tracks(init: bytes) -> dict[int, Track]:
    """The tracks of an init segment by track id."""
    defaults: dict[int, int] = {}
    for a, _ in _find(init, (b"moov", b"mvex", b"trex")):
        track_id, _desc, duration = struct.unpack_from(">III", init, a + 4)
        defaults[track_id] = duration
    out: dict[int, Track] = {}
    for a, b in _find(init, (b"moov", b"trak")):
        track_id = handler = timescale = None
        for ta, _ in _find(init, (b"tkhd",), a, b):
            version = init[ta]
            track_id = struct.unpack_from(">I", init, ta + (20 if version == 1 else 12))[0]
        for ma, mb in _find(init, (b"mdia",), a, b):
            for ha, _ in _find(init, (b"hdlr",), ma, mb):
                handler = init[ha + 8:ha + 12]
            for da, _ in _find(init, (b"mdhd",), ma, mb):
                version = init[da]
                timescale = struct.unpack_from(">I", init, da + (20 if version == 1 else 12))[0]
        if track_id is None or handler is None or not timescale:
            raise CmafError("a trak without tkhd, hdlr or mdhd")
        out[track_id] = Track(track_id, handler, timescale, defaults.get(track_id, 0))
    return out


def track_durations(init: bytes, segment: bytes) -> dict[int, float]:
    """Seconds of media per track id in a media segment (one or more fragments)."""
    known = tracks(init)
    ticks: dict[int, int] = {}
    for a, b in _find(segment, (b"moof", b"traf")):
        track_id: int | None = None
        default = 0
        for fa, _ in _find(segment, (b"tfhd",), a, b):
            flags = int.from_bytes(segment[fa + 1:fa + 4], "big")
            track_id = struct.unpack_from(">I", segment, fa + 4)[0]
            at = fa + 8
            at += 8 if flags & 0x01 else 0  # base-data-offset
            at += 4 if flags & 0x02 else 0  # sample-description-index
            if flags & 0x08:
                default = struct.unpack_from(">I", segment, at)[0]
            elif track_id in known:
                default = known[track_id].default_duration
        if track_id is None:
            raise CmafError("a traf without tfhd")
        for ra, _ in _find(segment, (b"trun",), a, b):
            flags = int.from_bytes(segment[ra + 1:ra + 4], "big")
            count = struct.unpack_from(">I", segment, ra + 4)[0]
            at = ra + 8
            at += 4 if flags & 0x01 else 0  # data-offset
            at += 4 if flags & 0x04 else 0  # first-sample-flags
            fields = [0x100, 0x200, 0x400, 0x800]
            stride = 4 * sum(1 for f in fields if flags & f)
            if flags & 0x100:
                total = sum(struct.unpack_from(">I", segment, at + i * stride)[0]
                            for i in range(count))
            else:
                total = default * count
            ticks[track_id] = ticks.get(track_id, 0) + total
    return {tid: n / known[tid].timescale for tid, n in ticks.items() if tid in known}


def media_duration_s(init: bytes, segment: bytes) -> float:
    """How long a segment plays: its video track's duration (its audio track's when it
    has no video)."""
    known = tracks(init)
    durations = track_durations(init, segment)
    for handler in (b"vide", b"soun"):
        for track_id, track in known.items():
            if track.handler == handler and track_id in durations:
                return durations[track_id]
    raise CmafError("no video or audio samples in the segment")
