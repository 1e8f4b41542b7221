"""Real HLS segments for the archiver's tests, made by the ffmpeg CLI, and a way to lay
them out as a transcoder sink would: bytes in storage under the documented keys, each
segment appended to the live state's segment log, the broadcast in the catalog."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiver.context import ArchiveContext
from castway.catalog.base import Catalog, SegmentRecord
from castway.live.base import LiveState
from castway.model import Broadcast, BroadcastState, Channel, Rendition, Segment, Visibility
from castway.storage.base import Storage
from castway.storage.local import LocalStorage
from tests.support import require_tool

FPS = 30
CODECS = "avc1.640015,mp4a.40.2"


@dataclass(frozen=True, slots=True)
class HlsRun:
    """One publisher session's worth of fMP4 HLS output: init + segments (name, duration)."""

    directory: Path
    segments: tuple[tuple[str, float], ...]
    frames: int

    @property
    def duration_s(self) -> float:
        return sum(d for _, d in self.segments)


def make_hls_run(directory: Path, *, seconds: float, width: int = 320, height: int = 180,
                 pattern: str = "testsrc2") -> HlsRun:
    """``seconds`` of test pattern + tone as 1 s fMP4 segments (keyframe every second)."""
    ffmpeg = require_tool("ffmpeg")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"{pattern}=size={width}x{height}:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS),
         "-keyint_min", str(FPS), "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-ac", "2",
         "-f", "hls", "-hls_time", "1", "-hls_segment_type", "fmp4",
         "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename",
         str(directory / "%d.m4s"), "-hls_playlist_type", "vod",
         str(directory / "index.m3u8")],
        check=True)
    text = (directory / "index.m3u8").read_text()
    segments = tuple((name, float(d)) for d, name in
                     re.findall(r"#EXTINF:([\d.]+),\s*\n(\S+)", text))
    return HlsRun(directory, segments, frames=round(seconds * FPS))


def rendition(name: str = "source", width: int = 320, height: int = 180) -> Rendition:
    return Rendition(name=name, width=width, height=height, fps=FPS,
                     video_bitrate_kbps=None, codecs=CODECS, bandwidth_bps=1_000_000)


@dataclass(frozen=True, slots=True)
class Published:
    broadcast: Broadcast
    segments: dict[str, list[Segment]]  # rendition -> log
    payloads: dict[str, bytes]  # key -> bytes, for every object the sink wrote


def plan_segments(broadcast_id: str, rendition_name: str, runs: Sequence[HlsRun],
                  started: datetime) -> tuple[list[Segment], dict[str, bytes]]:
    """The segment log a sink writes for consecutive publisher sessions of one rendition
    (a new init segment and a discontinuity after each reconnect), and the objects."""
    prefix = f"broadcasts/{broadcast_id}/{rendition_name}"
    log: list[Segment] = []
    payloads: dict[str, bytes] = {}
    msn = 0
    pts = 0.0
    for generation, run in enumerate(runs):
        init_key = f"{prefix}/init.mp4" if generation == 0 else f"{prefix}/init.{generation}.mp4"
        payloads[init_key] = (run.directory / "init.mp4").read_bytes()
        for index, (name, duration) in enumerate(run.segments):
            data = (run.directory / name).read_bytes()
            key = f"{prefix}/{msn}.m4s"
            payloads[key] = data
            log.append(Segment(msn=msn, duration_s=duration, key=key, start_pts_s=pts,
                               program_date_time=started + timedelta(seconds=pts),
                               discontinuity=generation > 0 and index == 0,
                               discontinuity_seq=generation, init_key=init_key,
                               size=len(data)))
            msn += 1
            pts += duration
    return log, payloads


async def publish(broadcast_id: str, runs: Sequence[HlsRun], *, live: LiveState,
                  catalog: Catalog, storage: Storage | None, channel: str = "ch1",
                  renditions: Sequence[Rendition] = (), store: bool = True,
                  visibility: Visibility = Visibility.PUBLIC) -> Published:
    """Lay out a finished broadcast as the ingest + transcoder would have: channel and
    broadcast in the catalog, segment logs in the live state, objects in storage (unless
    ``store`` is False: the caller uploads them)."""
    renditions = tuple(renditions) or (rendition(),)
    started = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    if catalog.get_channel(channel) is None:
        catalog.create_channel(Channel(name=channel, vod_visibility=visibility))
    broadcast = Broadcast(id=broadcast_id, channel=channel, node_id="node-1",
                          state=BroadcastState.ENDED, started_at=started,
                          ended_at=started + timedelta(seconds=60), renditions=renditions)
    catalog.save_broadcast(broadcast)
    await live.put_broadcast(broadcast)
    segments: dict[str, list[Segment]] = {}
    payloads: dict[str, bytes] = {}
    for r in renditions:
        log, objects = plan_segments(broadcast_id, r.name, runs, started)
        segments[r.name] = log
        payloads.update(objects)
        for segment in log:
            await live.append_segment_log(broadcast_id, r.name, segment)
    if store and storage is not None:
        for key, data in payloads.items():
            storage.put(key, data)
    return Published(broadcast, segments, payloads)


def record_durably(catalog: Catalog, published: Published) -> None:
    """What the transcoder sink's recorder writes to the catalog as each segment becomes
    durable: the durable segment log."""
    catalog.record_segments([SegmentRecord(published.broadcast.id, rendition, segment)
                             for rendition, log in published.segments.items()
                             for segment in log])


def allow_public_read(client: Any, bucket: str) -> None:
    """A bucket policy letting anonymous GETs through, as a public bucket (or CloudFront
    with origin access) would serve a public VOD; then ffmpeg can play straight from S3."""
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"}]}))


def count_frames(url: str) -> int:
    """Video frames ffmpeg's HLS demuxer decodes from a playlist, start to end."""
    ffprobe = require_tool("ffprobe")
    result = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", url],
        capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"ffprobe could not play {url}: {result.stderr[-2000:]}")
    return int(result.stdout.strip().splitlines()[0].strip(","))


def probe_duration(path_or_url: str) -> float:
    ffprobe = require_tool("ffprobe")
    result = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         path_or_url], check=True, capture_output=True, text=True, timeout=120)
    return float(result.stdout.strip())


def local_path(ctx: ArchiveContext, key: str) -> str:
    assert isinstance(ctx.storage, LocalStorage)
    return str(ctx.storage.root / key)
