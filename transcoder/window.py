"""Per-rendition playlist bookkeeping: media sequence numbers, parts, discontinuities,
the sliding live window, measured bandwidth. Pure and synchronous.

One :class:`RenditionLog` per rendition lives in the parent process (the sink, or the
file writer), not in the transcoder child, so sequence numbers continue across child
restarts and publisher reconnects (RFC 8216bis 6.2.1: a media sequence number is never
reused, and EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuities that slid out).
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from castway.hls.timing import DateAnchor, declared_part_target_s, target_duration_of
from castway.layout import (
    InitName,
    MediaName,
    PartName,
    SegmentName,
    init_generation,
    rendition_key,
)
from castway.live.base import RenditionWindow
from castway.model import Part, Rendition, Segment

if TYPE_CHECKING:
    from transcoder.pipeline import RenditionInfo


# rfc8216bis 6.2.2: a live playlist never holds less than this many target durations.
MIN_WINDOW_TARGET_DURATIONS = 3.0
# rfc8216bis 4.4.6.2: BANDWIDTH is measured over runs of segments this long (in target
# durations).
PEAK_RUN_MIN = 0.5
PEAK_RUN_MAX = 1.5


class RenditionLog:
    def __init__(self, prefix: str, rendition: str, *, ext: str = "m4s",
                 window_segments: int = 10, target_segment_s: float = 2.0,
                 part_target_s: float = 0.5, start_msn: int = 0,
                 parts: bool = True) -> None:
        self.prefix = prefix
        self.rendition = rendition
        self.ext = ext
        self.window_segments = max(1, window_segments)
        self.next_msn = start_msn
        self.discontinuity_count = 0  # discontinuities so far (for the next one's seq)
        self.parts_enabled = parts
        self._target_floor = target_segment_s
        # Declared, not configured: fixed for the broadcast and in every rendition.
        self._part_target = declared_part_target_s(part_target_s)
        self._max_part = 0.0
        self._max_segment = 0.0
        self._window: deque[Segment] = deque()
        self._parts: list[Part] = []
        self._pending_discontinuity = False
        self._init_generation = -1
        self._init_key: str | None = None
        self._init_bytes: bytes | None = None
        self._ended = False
        self._stopped = False
        self._peak_bps = 0
        # Bits and seconds of the parts published before the first segment closed.
        self._early_bits = 0
        self._early_s = 0.0
        self._recent: deque[tuple[int, float]] = deque()  # (bytes, seconds) of the newest
        self._total_bits = 0
        self._total_s = 0.0
        self._dates = DateAnchor()

    def continue_from(self, window: RenditionWindow, *, peak_bps: int = 0,
                      average_bps: int = 0) -> None:
        """Go on from the live window another node published for this rendition (a
        cross-node handover): sequence numbers after its last, its discontinuity count,
        init generations after every one it used (an init key a CDN may have cached is
        never rewritten), its sliding window, target durations that never shrink
        (RFC 8216bis 6.2.1), program date times that never go back, and its measured
        bandwidth. The caller marks the break (:meth:`mark_discontinuity`)."""
        segments = tuple(window.segments)
        self.next_msn = window.next_msn
        self._window = deque(segments)
        self._parts = []
        if segments:
            last = segments[-1]
            self.discontinuity_count = last.discontinuity_seq
            self._dates.dated_until(last.program_date_time
                                    + timedelta(seconds=last.duration_s))
        else:
            self.discontinuity_count = window.discontinuity_seq
        generations = [g for key in (window.init_key, *(s.init_key for s in segments))
                       if key is not None and (g := init_generation(key)) is not None]
        self._init_generation = max([self._init_generation, *generations])
        self._init_key = window.init_key
        self._init_bytes = None  # whatever this node's encoder makes gets a new key
        self._max_segment = max([self._max_segment, window.target_duration_s,
                                 *(s.duration_s for s in segments)])
        self._max_part = max(self._max_part, window.part_target_s)
        self._peak_bps = max(self._peak_bps, peak_bps)
        if average_bps > 0:
            # The other node's average weighs as much as the window it left.
            seconds = sum(s.duration_s for s in segments)
            self._total_s += seconds
            self._total_bits += int(average_bps * seconds)
        self._slide()
        self._dates.release()

    def join(self, leader: RenditionLog) -> None:
        """Start as a rendition added beside ``leader``'s (a rung the source's new size
        brings in after a break): its numbering and discontinuity count, so the same
        media sequence number carries the same discontinuity sequence in every
        rendition (RFC 8216bis 6.2.2, variants aligned), and the break still pending
        there is pending here too."""
        self.next_msn = leader.next_msn
        self.discontinuity_count = leader.discontinuity_count
        self._pending_discontinuity = leader._pending_discontinuity
        self._max_segment = max(self._max_segment, leader._max_segment)

    def _key(self, name: MediaName) -> str:
        return rendition_key(self.prefix, self.rendition, name)

    # --- inputs ---------------------------------------------------------------------
    def set_init(self, data: bytes) -> tuple[str, bool]:
        """The init segment in force; returns its key and whether it is new."""
        if self._init_bytes == data and self._init_key is not None:
            return self._init_key, False
        self._init_generation += 1
        self._init_key = self._key(InitName(self._init_generation))
        self._init_bytes = data
        return self._init_key, True

    def mark_discontinuity(self) -> None:
        """The next segment follows a timestamp break (reconnect, restart)."""
        if self._window or self._parts or self.next_msn > 0:
            self._pending_discontinuity = True
        self._dates.release()

    def add_part(self, index: int, duration_s: float, independent: bool,
                 size: int = 0) -> Part:
        part = Part(self.next_msn, index, duration_s, independent,
                    self._key(PartName(self.next_msn, index, self.ext)))
        self._parts.append(part)
        if self._peak_bps == 0:
            self._early_bits += size * 8
            self._early_s += duration_s
        self._max_part = max(self._max_part, duration_s)
        return part

    def resume_parts(self, parts: tuple[Part, ...]) -> None:
        """Take over the parts another node published of the segment in progress (it
        died before closing it), so that segment can be closed here from them."""
        self._parts = [p for p in parts if p.msn == self.next_msn]

    @property
    def open_parts(self) -> tuple[Part, ...]:
        return tuple(self._parts)

    def add_segment(self, duration_s: float, start_pts_s: float, size: int,
                    now: datetime) -> Segment:
        """A complete segment; ``now`` anchors EXT-X-PROGRAM-DATE-TIME after a break."""
        if not self._dates.anchored:
            self._dates.anchor(start_pts_s, now)
        pdt = self._dates.date(start_pts_s)
        discontinuity = self._pending_discontinuity
        if discontinuity:
            self.discontinuity_count += 1
        segment = Segment(
            msn=self.next_msn, duration_s=duration_s,
            key=self._key(SegmentName(self.next_msn, self.ext)),
            start_pts_s=start_pts_s, program_date_time=pdt, discontinuity=discontinuity,
            discontinuity_seq=self.discontinuity_count, init_key=self._init_key, size=size,
            parts=tuple(self._parts) if self.parts_enabled else ())
        self._pending_discontinuity = False
        self._dates.dated_until(pdt + timedelta(seconds=duration_s))
        self._parts = []
        self.next_msn += 1
        self._window.append(segment)
        self._max_segment = max(self._max_segment, duration_s)
        self._slide()
        if duration_s > 0:
            self._recent.append((size, duration_s))
            self._peak_bps = max(self._peak_bps, self._peak_ending_now())
            self._total_bits += size * 8
            self._total_s += duration_s
        return segment

    def _target_duration(self) -> int:
        return target_duration_of([self._max_segment], self._target_floor)

    def _slide(self) -> None:
        """Drop the oldest segments beyond ``window_segments``, but never below three
        target durations of media (rfc8216bis 6.2.2: a live playlist MUST NOT shrink
        under that; short segments after keyframe-drought splits would)."""
        floor = MIN_WINDOW_TARGET_DURATIONS * self._target_duration()
        total = sum(s.duration_s for s in self._window)
        while len(self._window) > self.window_segments and \
                total - self._window[0].duration_s >= floor - 1e-9:
            total -= self._window.popleft().duration_s

    def _peak_ending_now(self) -> int:
        """rfc8216bis 4.4.6.2 BANDWIDTH: the largest bit rate of any contiguous run of
        segments lasting between 0.5 and 1.5 target durations; here the runs ending
        with the newest segment. A short segment alone (a drought split's tail, one
        closed at a crash) is not such a run, so it never inflates the peak."""
        td = self._target_duration()
        bits, seconds, best = 0, 0.0, 0
        for size, duration in reversed(self._recent):
            bits += size * 8
            seconds += duration
            if seconds > PEAK_RUN_MAX * td + 1e-9:
                break
            if seconds >= PEAK_RUN_MIN * td - 1e-9:
                best = max(best, math.ceil(bits / seconds))
        newest_size, newest_s = self._recent[-1]
        if newest_s > PEAK_RUN_MAX * td:  # longer than any run (a handed-over target)
            best = math.ceil(newest_size * 8 / newest_s)
        # Keep what a later run can still use: the newest 1.5 target durations.
        kept = sum(d for _, d in self._recent)
        while len(self._recent) > 1 and kept - self._recent[0][1] >= PEAK_RUN_MAX * td:
            kept -= self._recent.popleft()[1]
        return best

    def end(self, *, stopped: bool = False) -> None:
        """EXT-X-ENDLIST; ``stopped``: the broadcast goes on without this rendition."""
        self._ended = True
        self._stopped = self._stopped or stopped

    # --- outputs --------------------------------------------------------------------
    @property
    def peak_bps(self) -> int:
        return self._peak_bps

    @property
    def early_bps(self) -> int:
        """The bit rate of the parts published so far, before any segment is measured
        (0 once one is): an over-estimate of the peak, since the first part carries the
        first keyframe, and better than none for a passthrough's first master."""
        if self._peak_bps or self._early_s <= 0:
            return 0
        return math.ceil(self._early_bits / self._early_s)

    @property
    def average_bps(self) -> int:
        return int(self._total_bits / self._total_s) if self._total_s > 0 else 0

    @property
    def init(self) -> str | None:
        return self._init_key

    def as_rendition(self, info: RenditionInfo) -> Rendition:
        """The master playlist's entry for this rendition: what the pipeline announced,
        with the bandwidth measured on the segments so far."""
        measured = self.peak_bps
        if not measured and info.video_bitrate_kbps is None:
            measured = self.early_bps  # a passthrough has no target to stand for it
        return Rendition(info.name, info.width, info.height, info.fps,
                         info.video_bitrate_kbps, info.codecs,
                         measured or None, self.average_bps or None, info.track, info.note,
                         info.alternate_audio, info.channels)

    def _next_part_name(self) -> PartName:
        """The part to hint (EXT-X-PRELOAD-HINT): one that will exist whatever the source
        does. Once the open segment has its target duration, the next part is most likely
        the next segment's first (the keyframe is due), and that part always comes, even
        if the segment runs on; a part index past the end of the segment never does, and
        a player asking for it gets a 404 (Shaka may take it as fatal)."""
        open_s = sum(part.duration_s for part in self._parts)
        if self._parts and open_s >= self._target_floor - self._part_target / 2:
            return PartName(self.next_msn + 1, 0, self.ext)
        return PartName(self.next_msn, len(self._parts), self.ext)

    def window(self) -> RenditionWindow:
        segments = tuple(self._window)
        hint = None
        if self.parts_enabled and not self._ended:
            hint = self._key(self._next_part_name())
        first_seq = segments[0].discontinuity_seq if segments else self.discontinuity_count
        if segments and segments[0].discontinuity:
            first_seq -= 1  # the tag counts discontinuities *before* the first segment
        return RenditionWindow(
            segments=segments, next_msn=self.next_msn,
            parts=tuple(self._parts) if self.parts_enabled else (), preload_hint=hint,
            target_duration_s=float(self._target_duration()),
            part_target_s=max(self._part_target, self._max_part),
            init_key=self._init_key, discontinuity_seq=max(0, first_seq),
            ended=self._ended, stopped=self._stopped)
