"""Segment and part boundaries: pure, synchronous decisions (no I/O, no libav):
:class:`BoundaryClock` (segments, from source keyframes) and :class:`Cutter` (parts).

Design: docs/transcoder.md, "Keyframe alignment policy" (and "Keyframe drought" under
"Sources that are not a plain stream").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from castway.hls.timing import part_tolerance_ms, target_duration_of

# Boundaries remembered for encoded renditions whose frames come out of the decoder and
# encoder later than the source packet went in. Far more than any codec delay.
MAX_PENDING_BOUNDARIES = 64
# Frame steps of millisecond timestamps vary by this much (29.97 fps: 33, 33, 34 ms).
TIMESTAMP_JITTER_MS = 2


@dataclass(frozen=True, slots=True)
class SegmentPolicy:
    target_ms: int = 2000
    part_target_ms: int = 500

    @property
    def tolerance_ms(self) -> int:
        # Millisecond timestamps of a 29.97/30 fps GOP land a millisecond or two short.
        return max(1, min(50, self.target_ms // 20))

    @property
    def part_tolerance_ms(self) -> int:
        return part_tolerance_ms(self.part_target_ms)

    @property
    def max_segment_ms(self) -> int:
        """The longest segment whose EXTINF still rounds to the target duration
        (EXT-X-TARGETDURATION is the target rounded to the nearest integer)."""
        return target_duration_of((), self.target_ms / 1000) * 1000 + 499

    @classmethod
    def from_seconds(cls, target_s: float, part_target_s: float) -> SegmentPolicy:
        if target_s <= 0 or part_target_s <= 0:
            raise ValueError("segment and part targets must be positive")
        return cls(int(round(target_s * 1000)), int(round(min(part_target_s, target_s) * 1000)))


class BoundaryClock:
    """Decides segment boundaries from the source's video packets (decode order)."""

    def __init__(self, policy: SegmentPolicy) -> None:
        self.policy = policy
        self._segment_start: int | None = None
        self._boundaries: deque[int] = deque(maxlen=MAX_PENDING_BOUNDARIES)
        self._boundary_set: set[int] = set()
        self._last_pts: int | None = None
        self._step_ms = 0
        self.drought_splits = 0  # boundaries made without a source keyframe
        self._in_drought = False  # the current segment began at such a split

    def on_source_video(self, pts_ms: int, keyframe: bool) -> bool:
        """True when the source frame with ``pts_ms`` starts a new segment."""
        last, self._last_pts = self._last_pts, pts_ms
        if last is not None and 0 < pts_ms - last < 1000:
            self._step_ms = pts_ms - last
        start = self._segment_start
        if not keyframe:
            # Two frame steps of margin: B-frame reordering moves a segment's end by one.
            if start is None or pts_ms - start + 2 * self._step_ms <= self.policy.max_segment_ms:
                return False
            self.drought_splits += 1
            self._in_drought = True
        elif start is not None and not self._in_drought and \
                pts_ms - start < self.policy.target_ms - self.policy.tolerance_ms:
            return False
        else:
            # After a drought split any keyframe starts a segment at once, however short:
            # the passthrough is independent again from there.
            self._in_drought = False
        self._segment_start = pts_ms
        if len(self._boundaries) == self._boundaries.maxlen:
            self._boundary_set.discard(self._boundaries[0])
        self._boundaries.append(pts_ms)
        self._boundary_set.add(pts_ms)
        return True

    def is_boundary(self, pts_ms: int) -> bool:
        """Whether a (decoded) frame with ``pts_ms`` must be an IDR starting a segment."""
        return pts_ms in self._boundary_set

    def boundaries_in(self, after_ms: int, upto_ms: int) -> list[int]:
        """The boundaries made so far in (``after_ms``, ``upto_ms``], in order."""
        return [b for b in self._boundaries if after_ms < b <= upto_ms]

    def discontinuity(self) -> None:
        """Timestamps restart: the next source keyframe starts a segment whatever its PTS."""
        self._segment_start = None
        self._last_pts = None
        self._in_drought = False
        self._boundaries.clear()
        self._boundary_set.clear()


class Cut(IntEnum):
    """What a rendition does before muxing a video sample."""

    DROP = 0  # no segment open yet (video before the first boundary)
    CONTINUE = 1
    PART = 2  # close the current part, start a new one in the same segment
    SEGMENT = 3  # close the current part and segment, start a new segment


class Cutter:
    """One rendition's part/segment cutting over its own video samples in decode order.

    ``boundary`` says whether the sample is a keyframe at a boundary of the
    :class:`BoundaryClock`; parts are cut on the rendition's own decode timeline.
    """

    def __init__(self, policy: SegmentPolicy) -> None:
        self.policy = policy
        self._open = False
        self._part_start_dts = 0
        self._last_dts: int | None = None
        self._last_delta = 0

    @property
    def open(self) -> bool:
        return self._open

    def on_video(self, dts_ms: int, boundary: bool) -> Cut:
        if self._last_dts is not None and 0 < dts_ms - self._last_dts < 1000:
            self._last_delta = dts_ms - self._last_dts
        self._last_dts = dts_ms
        if boundary:
            self._open = True
            self._part_start_dts = dts_ms
            return Cut.SEGMENT
        if not self._open:
            return Cut.DROP
        # Cut once the part is full, or when this frame would make it overrun the target
        # and its tolerance, which PART-TARGET declares (castway.hls.timing
        # .declared_part_target_s; parts never exceed it, rfc8216bis 4.4.4.9). The next
        # frame step is guessed from the last one, give or take TIMESTAMP_JITTER_MS.
        elapsed = dts_ms - self._part_start_dts
        target = self.policy.part_target_ms
        tolerance = self.policy.part_tolerance_ms
        if elapsed >= target - tolerance or \
                elapsed + self._last_delta + TIMESTAMP_JITTER_MS > target + tolerance:
            self._part_start_dts = dts_ms
            return Cut.PART
        return Cut.CONTINUE

    def reset(self) -> None:
        """After a discontinuity: drop samples until the next boundary."""
        self._open = False
