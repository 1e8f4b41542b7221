"""The timing rules of a media playlist, one owner each: EXT-X-TARGETDURATION from the
segment durations, and EXT-X-PROGRAM-DATE-TIME from one anchor.

Dependency-free (the transcoder child imports it without the rest of castway).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta


def round_duration(seconds: float) -> int:
    """Round half up to the nearest integer, as RFC 8216 4.3.3.1 compares EXTINF to
    EXT-X-TARGETDURATION (Python's round() is banker's rounding: round(2.5) == 2)."""
    return math.floor(seconds + 0.5)


def target_duration_of(durations_s: Iterable[float], floor_s: float) -> int:
    """EXT-X-TARGETDURATION: ``floor_s`` (the configured target), raised so that no
    EXTINF, once rounded to the nearest integer, exceeds it (RFC 8216bis 4.4.3.1); at
    least 1."""
    return max(1, round_duration(max(floor_s, *durations_s, 0.0)))


def part_tolerance_ms(part_target_ms: int) -> int:
    """How far past the part target a part may run: millisecond timestamps of 29.97/30
    fps video make 15 frames 500 or 501 ms. At most 10 ms (2% of a 0.5 s part)."""
    return max(1, min(10, part_target_ms // 20))


def declared_part_target_s(part_target_s: float) -> float:
    """EXT-X-PART-INF PART-TARGET for a configured part target: the target plus its
    tolerance, so that no part ever exceeds it (rfc8216bis 4.4.4.9) and it never has to
    grow mid-broadcast or differ between renditions (the cutter keeps every part within
    it, transcoder.segmenter.Cutter)."""
    ms = int(round(part_target_s * 1000))
    return (ms + part_tolerance_ms(ms)) / 1000


class DateAnchor:
    """EXT-X-PROGRAM-DATE-TIME from presentation time: the first segment after a start or
    a break pins a wall-clock instant to its presentation time, and every later segment
    is dated by its presentation-time distance to it, so dates advance exactly as the
    media does (no wall-clock jitter between segments).

    With :meth:`dated_until`, a new anchor is never earlier than the end of what was dated
    before: a date only moves forward (RFC 8216bis 4.4.4.6 maps each date to one media
    instant; a date going back would map two).
    """

    __slots__ = ("_anchor", "_not_before")

    def __init__(self) -> None:
        self._anchor: tuple[float, datetime] | None = None
        self._not_before: datetime | None = None

    @property
    def anchored(self) -> bool:
        return self._anchor is not None

    def anchor(self, pts_s: float, at: datetime) -> None:
        """Presentation time ``pts_s`` happened at ``at`` (or at the end of what was
        dated before, if that is later)."""
        if self._not_before is not None and at < self._not_before:
            at = self._not_before
        self._anchor = (pts_s, at)

    def release(self) -> None:
        """A break: the next segment anchors again."""
        self._anchor = None

    def dated_until(self, end: datetime) -> None:
        """Media up to ``end`` has been dated: no later anchor goes before it."""
        self._not_before = end

    def date(self, pts_s: float) -> datetime:
        """The date of presentation time ``pts_s``; anchor first."""
        if self._anchor is None:
            raise RuntimeError("DateAnchor.date before anchor")
        anchor_pts, anchor_at = self._anchor
        return anchor_at + timedelta(seconds=pts_s - anchor_pts)
