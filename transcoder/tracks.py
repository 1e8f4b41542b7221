"""Encoder-sent renditions (E-RTMP v2 multitrack, OBS "Multitrack Video"): the decisions,
without libav. The publisher's track 0 is the broadcast (the ``source`` rendition); every
other video track is a rendition packaged as it came (:class:`TrackInfo`), named by its
height (:func:`track_names`), and castway encodes only the rungs of its own ladder that no
track covers (:func:`hybrid_rungs`). A track passes through only while its keyframes fall
on the source's segment boundaries (:class:`AlignmentCheck`); one that misses a boundary
is encoded by castway from the source from that boundary on.

Design: docs/transcoder.md, "Encoder-sent ladders".
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from castway.media import Codec
from transcoder.segmenter import TIMESTAMP_JITTER_MS

# A track's keyframe this close to a source boundary is on it: encoders round their
# timestamps to the millisecond each in its own way.
ALIGN_TOLERANCE_MS = TIMESTAMP_JITTER_MS
# Codecs a track may pass through in (the fMP4 sample entries castway writes).
PASSTHROUGH_CODECS = frozenset({Codec.H264, Codec.HEVC, Codec.AV1})


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One encoder-sent video track, as it is once its first keyframe has decoded."""

    track: int
    codec: Codec
    width: int
    height: int
    fps: float
    bitrate_kbps: float | None  # what arrived so far, over its timestamps


def track_names(tracks: Sequence[TrackInfo], taken: Collection[str]) -> dict[int, str]:
    """Each track's rendition name: ``720p`` like castway's own rungs (so a player's
    choice reads the same whoever encoded it), ``720p-t2`` where two tracks, or a name
    already taken, share a height."""
    names: dict[int, str] = {}
    used = set(taken)
    for info in sorted(tracks, key=lambda t: (-t.height, t.track)):
        name = f"{info.height}p"
        if name in used:
            name = f"{info.height}p-t{info.track}"
        used.add(name)
        names[info.track] = name
    return names


class _HasHeight(Protocol):
    @property
    def height(self) -> int: ...


H = TypeVar("H", bound=_HasHeight)


def hybrid_rungs(rungs: Sequence[H], covered: Collection[int]) -> list[H]:
    """The rungs castway still encodes: its own ladder (resolved rungs, or the ladder's
    specs) less every rung a track has the height of (``covered``: the encoder sent
    that one, at no cost here)."""
    return [r for r in rungs if r.height not in covered]


class AlignmentCheck:
    """Whether one track's keyframes fall on the source's segment boundaries.

    Fed the track's packets in decode order, each with the boundaries the source has
    made since the packet before (a track's packet is only looked at once the source has
    gone past it, so every boundary up to it is known). With closed GOPs, the first
    packet at or past a boundary is the track's keyframe there if the track is aligned.
    """

    def __init__(self) -> None:
        self._seen_to: int | None = None  # the latest PTS looked at

    def horizon(self, pts_ms: int) -> int:
        """Boundaries after this PTS and up to the packet's concern it (see :meth:`check`)."""
        if self._seen_to is None:
            # A track's first packet: boundaries before it were not its to meet.
            return pts_ms - ALIGN_TOLERANCE_MS - 1
        return self._seen_to

    def check(self, pts_ms: int, keyframe: bool, boundaries: Sequence[int]) -> bool | None:
        """``boundaries``: the source's boundaries in (``horizon(pts_ms)``,
        ``pts_ms + ALIGN_TOLERANCE_MS``]. True: the packet starts a segment, on a
        boundary; False: the track missed a boundary (its keyframe is not there); None:
        no boundary here."""
        self._seen_to = max(self._seen_to if self._seen_to is not None else pts_ms,
                            pts_ms + ALIGN_TOLERANCE_MS)
        if not boundaries:
            return None
        if len(boundaries) == 1 and keyframe and \
                abs(pts_ms - boundaries[0]) <= ALIGN_TOLERANCE_MS:
            return True
        return False
