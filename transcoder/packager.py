"""One rendition's packager: samples in (decode order), parts and segments out.

Pure apart from the container writer it is given; driven by :class:`Cutter` decisions.
Timestamps come in as milliseconds (MediaPacket's unit) and are written on a timeline
shifted by :data:`TIMELINE_OFFSET_MS` so that B-frame decode times before the first
presentation time never go negative in ``tfdt`` (ISOBMFF requires an unsigned time).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from transcoder.fmp4 import VIDEO_TIMESCALE, AudioTrack, Sample, TrackRun, VideoTrack
from transcoder.fmp4 import fragment as fmp4_fragment
from transcoder.fmp4 import init_segment as fmp4_init
from transcoder.segmenter import Cut, Cutter, SegmentPolicy

TIMELINE_OFFSET_MS = 10_000
AAC_FRAME_SAMPLES = 1024
# Audio waiting for video (e.g. ahead of the first keyframe, which the first part then
# carries: nothing the publisher sent is dropped) before the oldest is dropped.
MAX_PENDING_AUDIO = 2048


@dataclass(frozen=True, slots=True)
class InitOut:
    rendition: str
    data: bytes


@dataclass(frozen=True, slots=True)
class PartOut:
    rendition: str
    index: int
    duration_s: float
    independent: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class SegmentOut:
    rendition: str
    duration_s: float
    start_pts_s: float
    data: bytes


Output = InitOut | PartOut | SegmentOut


@dataclass(slots=True)
class _Video:
    dts: int
    pts: int
    data: bytes
    keyframe: bool
    duration: int = 0  # ms


@dataclass(slots=True)
class _Part:
    video: list[_Video] = field(default_factory=list)
    audio: list[tuple[int, bytes]] = field(default_factory=list)


class ContainerWriter:
    """Turns a part's samples into bytes; fMP4 here, MPEG-TS in :mod:`transcoder.mpegts`."""

    ext = "m4s"
    has_init = True

    def init(self, video: VideoTrack | None, audio: AudioTrack | None) -> bytes:
        self._video = video
        self._audio = audio
        self._sequence = 0
        self._audio_next: int | None = None
        return fmp4_init(video, audio)

    def chunk(self, video: list[_Video], audio: list[tuple[int, bytes]],
              segment_start: bool) -> bytes:
        del segment_start
        runs: list[TrackRun] = []
        if video and self._video is not None:
            scale = VIDEO_TIMESCALE // 1000
            samples = [Sample(v.data, v.duration * scale, v.keyframe, (v.pts - v.dts) * scale)
                       for v in video]
            runs.append(TrackRun(self._video.track_id,
                                 (video[0].dts + TIMELINE_OFFSET_MS) * scale, samples))
        if audio and self._audio is not None:
            sr = self._audio.sample_rate
            start = (audio[0][0] + TIMELINE_OFFSET_MS) * sr // 1000
            # Keep the audio timeline sample-exact while the millisecond timestamps agree
            # with it to within a frame; resynchronise after a jump.
            if self._audio_next is not None and abs(start - self._audio_next) < AAC_FRAME_SAMPLES:
                start = self._audio_next
            self._audio_next = start + AAC_FRAME_SAMPLES * len(audio)
            runs.append(TrackRun(self._audio.track_id, start,
                                 [Sample(data, AAC_FRAME_SAMPLES) for _, data in audio]))
        self._sequence += 1
        return fmp4_fragment(self._sequence, runs)


class Packager:
    """One rendition's packager. Video drives the cuts (audio waits for the video sample
    that follows it); an ``audio_only`` packager cuts on its own AAC frames instead
    (:meth:`on_audio_sample`), every one of which is a sync sample."""

    def __init__(self, name: str, policy: SegmentPolicy, writer: ContainerWriter,
                 *, parts: bool = True, audio_only: bool = False) -> None:
        self.name = name
        self.writer = writer
        self.parts = parts
        self.audio_only = audio_only
        self._cutter = Cutter(policy)
        self._video_track: VideoTrack | None = None
        self._audio_track: AudioTrack | None = None
        self._init_sent = False
        self._last: _Video | None = None
        self._part = _Part()
        self._part_index = 0
        self._segment_chunks: list[bytes] = []
        self._segment_duration_ms = 0.0
        self._segment_start_pts = 0
        self._audio: deque[tuple[int, bytes]] = deque()
        self._default_duration = 33
        self.dropped_audio = 0
        self.video_frames = 0

    def set_tracks(self, video: VideoTrack | None, audio: AudioTrack | None) -> None:
        self._video_track = video
        self._audio_track = audio

    @property
    def ready(self) -> bool:
        return self._video_track is not None or (self.audio_only
                                                  and self._audio_track is not None)

    def on_audio(self, pts_ms: int, data: bytes) -> None:
        if len(self._audio) >= MAX_PENDING_AUDIO:
            self._audio.popleft()
            self.dropped_audio += 1
        self._audio.append((pts_ms, data))

    def on_video(self, dts_ms: int, pts_ms: int, data: bytes, keyframe: bool,
                 boundary: bool) -> list[Output]:
        out: list[Output] = []
        # A boundary need not be a keyframe: the passthrough's keyframe-drought splits
        # (transcoder.segmenter) start a segment that is not independent.
        cut = self._cutter.on_video(dts_ms, boundary)
        last = self._last
        if last is not None:
            delta = dts_ms - last.dts
            last.duration = delta if 0 < delta < 10_000 else self._default_duration
            self._default_duration = last.duration
            self._part.video.append(last)
            self._last = None
        if cut in (Cut.PART, Cut.SEGMENT):
            out += self._close_part(pts_ms if cut == Cut.SEGMENT else dts_ms)
        if cut == Cut.SEGMENT:
            out += self._close_segment()
            self._segment_start_pts = pts_ms
        if cut == Cut.DROP:
            return out
        self.video_frames += 1
        self._last = _Video(dts_ms, pts_ms, data, keyframe)
        return out

    def on_audio_sample(self, pts_ms: int, data: bytes, boundary: bool) -> list[Output]:
        """An audio-only rendition's AAC frame; ``boundary`` starts a segment."""
        out: list[Output] = []
        cut = self._cutter.on_video(pts_ms, boundary)
        if cut in (Cut.PART, Cut.SEGMENT):
            out += self._close_part(None)
        if cut == Cut.SEGMENT:
            out += self._close_segment()
            self._segment_start_pts = pts_ms
        if cut == Cut.DROP:
            self.dropped_audio += 1
            return out
        self._part.audio.append((pts_ms, data))
        return out

    def flush(self) -> list[Output]:
        """Close the open part and segment (end of stream, discontinuity)."""
        out: list[Output] = []
        if self._last is not None:
            self._last.duration = self._default_duration
            self._part.video.append(self._last)
            self._last = None
        out += self._close_part(None)
        out += self._close_segment()
        self._cutter.reset()
        self._audio.clear()
        return out

    def end_at(self, pts_ms: int) -> list[Output]:
        """The rendition stops where the segment starting at ``pts_ms`` would have begun
        (transcoder.overload): its open segment closes there, as long as its media, and
        nothing more comes out of it. Audio from ``pts_ms`` on is not this rendition's."""
        out: list[Output] = []
        if self._last is not None:
            so_far = self._segment_duration_ms + sum(v.duration for v in self._part.video)
            rest = pts_ms - self._segment_start_pts - so_far
            # A frame's duration runs to the boundary; outside a frame's span (a clock
            # that makes no sense), the last known frame duration stands.
            self._last.duration = int(rest) if 0 < rest < 10_000 else self._default_duration
            self._part.video.append(self._last)
            self._last = None
        out += self._close_part(pts_ms)
        out += self._close_segment()
        self._cutter.reset()
        self._audio.clear()
        return out

    def _close_part(self, until_ms: int | None) -> list[Output]:
        part = self._part
        if not part.video and not (self.audio_only and part.audio):
            return []
        while self._audio and (until_ms is None or self._audio[0][0] < until_ms):
            part.audio.append(self._audio.popleft())
        out: list[Output] = []
        if not self._init_sent:
            if not self.ready:
                raise RuntimeError(f"rendition {self.name}: tracks unknown at first part")
            init = self.writer.init(self._video_track, self._audio_track)
            if self.writer.has_init:
                out.append(InitOut(self.name, init))
            self._init_sent = True
        data = self.writer.chunk(part.video, part.audio, segment_start=self._part_index == 0)
        if part.video:
            duration_ms = float(sum(v.duration for v in part.video))
            independent = part.video[0].keyframe and self._part_index == 0
        else:  # audio only: exact frame durations, and every AAC frame is a sync sample
            rate = self._audio_track.sample_rate if self._audio_track else 48_000
            duration_ms = 1000.0 * AAC_FRAME_SAMPLES * len(part.audio) / rate
            independent = True
        if self.parts:
            out.append(PartOut(self.name, self._part_index, duration_ms / 1000.0,
                               independent, data))
        self._segment_chunks.append(data)
        self._segment_duration_ms += duration_ms
        self._part_index += 1
        self._part = _Part()
        return out

    def _close_segment(self) -> list[Output]:
        if not self._segment_chunks:
            return []
        out: list[Output] = [SegmentOut(self.name, self._segment_duration_ms / 1000.0,
                                        self._segment_start_pts / 1000.0,
                                        b"".join(self._segment_chunks))]
        self._segment_chunks = []
        self._segment_duration_ms = 0.0
        self._part_index = 0
        return out

