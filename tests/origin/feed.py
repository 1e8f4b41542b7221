"""Real LL-HLS media for origin tests: ffmpeg-made fMP4 parts fed into a live state.

``make_clip`` asks the ffmpeg CLI for an fMP4 HLS rendition cut every 0.5 s (a keyframe
every 0.5 s, so every part is independent). ``LiveFeeder`` plays the transcoder's role:
it publishes those parts into a :class:`~castway.live.base.LiveState` the way the
transcoder does (media bytes, then the window, then the ``media:{id}`` event), and closes
a segment from every ``parts_per_segment`` parts by concatenating their bytes (CMAF
fragments concatenate into a valid segment).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import m3u8

from castway.events.media import MediaUpdate, media_topic
from castway.live.base import LiveState, RenditionWindow
from castway.model import Broadcast, Part, Rendition, Segment
from tests.support import require_tool

MEDIA_TTL_S = 600.0


@dataclass(frozen=True)
class Clip:
    init: bytes
    parts: tuple[bytes, ...]
    durations: tuple[float, ...]
    codecs: str
    width: int
    height: int


def avc_codec_string(init: bytes) -> str:
    """RFC 6381 avc1.PPCCLL from the avcC box of an init segment."""
    at = init.find(b"avcC")
    if at < 0:
        raise ValueError("no avcC box in the init segment")
    profile, compat, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


def make_clip(directory: Path, *, seconds: float = 12.0, width: int = 320, height: int = 180,
              fps: int = 30, part_s: float = 0.5) -> Clip:
    ffmpeg = require_tool("ffmpeg")
    directory.mkdir(parents=True, exist_ok=True)
    gop = round(fps * part_s)
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
         "-profile:v", "baseline", "-g", str(gop), "-keyint_min", str(gop),
         "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-ac", "2",
         "-f", "hls", "-hls_time", str(part_s), "-hls_playlist_type", "vod",
         "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
         "-hls_segment_filename", str(directory / "p%d.m4s"), str(directory / "index.m3u8")],
        check=True)
    playlist = m3u8.load(str(directory / "index.m3u8"))
    init = (directory / "init.mp4").read_bytes()
    parts = tuple((directory / s.uri).read_bytes() for s in playlist.segments)
    durations = tuple(float(s.duration) for s in playlist.segments)
    return Clip(init=init, parts=parts, durations=durations,
                codecs=f"{avc_codec_string(init)},mp4a.40.2", width=width, height=height)


@dataclass
class LiveFeeder:
    live: LiveState
    clip: Clip
    broadcast_id: str = "b0001"
    channel: str = "demo"
    rendition: str = "360p"
    # Segments after the first begin without a keyframe (a passthrough of a source whose
    # keyframe interval is longer than the segment target: split in a keyframe drought).
    keyframe_drought: bool = False
    other_renditions: tuple[str, ...] = ()
    parts_per_segment: int = 4
    part_target_s: float = 0.5
    target_duration_s: float = 2.0
    window_segments: int = 10
    segments: list[Segment] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    next_msn: int = 0
    fed: int = 0
    elapsed: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # PDT base

    def key(self, name: str) -> str:
        return f"broadcasts/{self.broadcast_id}/{self.rendition}/{name}"

    @property
    def init_key(self) -> str:
        return self.key("init.mp4")

    @property
    def remaining(self) -> int:
        return len(self.clip.parts) - self.fed

    async def start(self) -> Broadcast:
        renditions = tuple(
            Rendition(name=name, width=self.clip.width, height=self.clip.height, fps=30.0,
                      video_bitrate_kbps=300.0, codecs=self.clip.codecs)
            for name in (self.rendition, *self.other_renditions))
        broadcast = Broadcast(id=self.broadcast_id, channel=self.channel, node_id="node-1",
                              renditions=renditions)
        await self.live.put_broadcast(broadcast)
        await self.live.put_media(self.init_key, self.clip.init, MEDIA_TTL_S)
        return broadcast

    def window(self, *, ended: bool = False) -> RenditionWindow:
        hint = None if ended else self.key(f"{self.next_msn}.{len(self.parts)}.m4s")
        return RenditionWindow(
            segments=tuple(self.segments[-self.window_segments:]), next_msn=self.next_msn,
            parts=tuple(self.parts), preload_hint=hint,
            target_duration_s=self.target_duration_s, part_target_s=self.part_target_s,
            init_key=self.init_key, ended=ended)

    async def push_part(self) -> Part:
        """Publish the next part (and close its segment when it is the last one)."""
        if self.remaining <= 0:
            raise RuntimeError("the clip is exhausted")
        data = self.clip.parts[self.fed]
        duration = self.clip.durations[self.fed]
        index = len(self.parts)
        independent = not (self.keyframe_drought and index == 0 and self.next_msn > 0)
        part = Part(msn=self.next_msn, index=index, duration_s=duration,
                    independent=independent,
                    key=self.key(f"{self.next_msn}.{index}.m4s"))
        self.fed += 1
        await self.live.put_media(part.key, data, MEDIA_TTL_S)
        self.parts.append(part)
        completed = len(self.parts) == self.parts_per_segment or self.remaining == 0
        if completed:
            await self._close_segment()
        await self.live.put_window(self.broadcast_id, self.rendition, self.window())
        await self.live.publish(media_topic(self.broadcast_id),
                                MediaUpdate(self.rendition, part.msn, part.index))
        return part

    async def _close_segment(self) -> None:
        first = self.fed - len(self.parts)
        data = b"".join(self.clip.parts[first:self.fed])
        duration = sum(p.duration_s for p in self.parts)
        segment = Segment(msn=self.next_msn, duration_s=duration,
                          key=self.key(f"{self.next_msn}.m4s"), start_pts_s=self.elapsed,
                          program_date_time=self.started_at + timedelta(
                              seconds=self.elapsed),
                          init_key=self.init_key, size=len(data), parts=tuple(self.parts))
        await self.live.put_media(segment.key, data, MEDIA_TTL_S)
        await self.live.append_segment_log(self.broadcast_id, self.rendition, segment)
        self.segments.append(segment)
        self.elapsed += duration
        self.next_msn += 1
        self.parts = []

    async def push_segments(self, count: int) -> None:
        for _ in range(count * self.parts_per_segment):
            await self.push_part()

    async def end(self) -> None:
        await self.live.put_window(self.broadcast_id, self.rendition, self.window(ended=True))
        await self.live.publish(media_topic(self.broadcast_id),
                                MediaUpdate(self.rendition, self.next_msn))
