"""The publisher's stream as it arrives, measured for the streamer: keyframe interval,
frame rate (from the timestamps, not the wall clock), bitrate stability, audio.

Sans-IO: packets and bitrate samples in, a :class:`StreamHealth` out. A long keyframe
interval is known as soon as the next keyframe is late, before it comes (with ffmpeg's
``-g 250`` at 25 fps: two seconds after the first keyframe), and :meth:`on_packet` says
so at once so that the caller can log it then.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from castway.media import MediaKind, MediaPacket
from castway.stream_health import KEYFRAME_INTERVAL_MAX_S, SourceWarning

# Timestamp jitter (FLV's are whole milliseconds) before an interval counts as long.
KEYFRAME_TOLERANCE_S = 0.1
FPS_WINDOW_FRAMES = 60
NO_AUDIO_AFTER_S = 3.0  # of video: an encoder sends its first audio well before this
BITRATE_SAMPLES = 10  # one per stats interval (a second)
MIN_BITRATE_SAMPLES = 5
# Standard deviation over mean of the bitrate samples: CBR stays well below this; a
# connection dropping packets or an encoder starved of CPU swings above it.
UNSTEADY_VARIATION = 0.5


@dataclass(frozen=True, slots=True)
class StreamHealth:
    keyframe_interval_s: float | None  # the longest of the last interval and the open one
    fps: float | None
    bitrate_variation: float | None  # standard deviation / mean of the recent samples
    audio: bool
    warnings: tuple[SourceWarning, ...]


class HealthTracker:
    """One broadcast's source health. ``keyframe_limit_s``: the longest keyframe interval
    that keeps segments at their target (the target, at most
    :data:`~castway.stream_health.KEYFRAME_INTERVAL_MAX_S`)."""

    def __init__(self, *, segment_target_s: float) -> None:
        self.keyframe_limit_s = min(segment_target_s, KEYFRAME_INTERVAL_MAX_S)
        self._last_keyframe_ms: int | None = None
        self._last_interval_s: float | None = None
        self._open_interval_s = 0.0  # since the last keyframe, up to the newest frame
        self._frames: deque[int] = deque(maxlen=FPS_WINDOW_FRAMES)
        self._first_video_ms: int | None = None
        self._audio = False
        self._bitrates: deque[float] = deque(maxlen=BITRATE_SAMPLES)
        # Worked out when a sample comes (once a second), not on every packet's update:
        # at a few hundred packets a second it was 5 % of the ingest event loop.
        self._variation: float | None = None
        self._warnings: set[SourceWarning] = set()

    def on_packet(self, packet: MediaPacket) -> list[SourceWarning]:
        """Measure ``packet``; the warnings it raises (each once, when it starts)."""
        if packet.is_config:
            return []
        if packet.kind is MediaKind.AUDIO:
            self._audio = True
            return self._update()
        dts = packet.dts_ms
        if self._frames and dts < self._frames[-1]:
            self.discontinuity()  # timestamps restarted: measure afresh
        self._frames.append(dts)
        if self._first_video_ms is None:
            self._first_video_ms = dts
        if packet.is_keyframe:
            if self._last_keyframe_ms is not None:
                self._last_interval_s = (dts - self._last_keyframe_ms) / 1000
            self._last_keyframe_ms = dts
        if self._last_keyframe_ms is not None:
            self._open_interval_s = (dts - self._last_keyframe_ms) / 1000
        return self._update()

    def on_bitrate(self, kbps: float) -> list[SourceWarning]:
        """One bitrate sample (the ingest stats loop's, once a second)."""
        self._bitrates.append(kbps)
        samples = list(self._bitrates)
        mean = statistics.fmean(samples)
        self._variation = (round(statistics.pstdev(samples) / mean, 3)
                           if len(samples) >= MIN_BITRATE_SAMPLES and mean > 0 else None)
        return self._update()

    def discontinuity(self) -> None:
        """The publisher reconnected: its timestamps start over."""
        self._last_keyframe_ms = None
        self._open_interval_s = 0.0
        self._frames.clear()

    @property
    def keyframe_interval_s(self) -> float | None:
        longest = max(self._last_interval_s or 0.0, self._open_interval_s)
        return round(longest, 3) if longest > 0 else None

    @property
    def fps(self) -> float | None:
        if len(self._frames) < 2 or self._frames[-1] <= self._frames[0]:
            return None
        return round((len(self._frames) - 1) * 1000 / (self._frames[-1] - self._frames[0]), 2)

    @property
    def bitrate_variation(self) -> float | None:
        return self._variation

    def report(self) -> StreamHealth:
        return StreamHealth(keyframe_interval_s=self.keyframe_interval_s, fps=self.fps,
                            bitrate_variation=self.bitrate_variation, audio=self._audio,
                            warnings=tuple(sorted(self._warnings)))

    def _update(self) -> list[SourceWarning]:
        active: set[SourceWarning] = set()
        interval = self.keyframe_interval_s
        if interval is not None and interval > self.keyframe_limit_s + KEYFRAME_TOLERANCE_S:
            active.add(SourceWarning.LONG_KEYFRAME_INTERVAL)
        if (not self._audio and self._frames and self._first_video_ms is not None
                and (self._frames[-1] - self._first_video_ms) / 1000 > NO_AUDIO_AFTER_S):
            active.add(SourceWarning.NO_AUDIO)
        variation = self.bitrate_variation
        if variation is not None and variation > UNSTEADY_VARIATION:
            active.add(SourceWarning.UNSTEADY_BITRATE)
        raised = sorted(active - self._warnings)
        self._warnings = active
        return raised
