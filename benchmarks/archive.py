"""``castway bench archive``: how fast a broadcast becomes a VOD, and MP4 export speed.

1. End event -> playable VOD, for 1 minute, 1 hour and 24 hours of segments: segment
   logs of a 4-rendition ladder at 2 s segments are synthesized in the live state (their
   media is not needed: making the VOD reads no media), an "ended" event is published,
   and the clock stops when the archiver service (embedded mode) has written the master
   playlist into storage.
2. MP4 export: a real clip is made with the ffmpeg CLI as fMP4 HLS segments, laid out in
   storage like a transcoder would, and remuxed by ``export_mp4``; speed is media
   duration over wall time (x realtime).

Everything runs against a local storage directory and in-process live state by default;
``--redis-url`` uses Redis for the live state instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.context import ArchiveContext
from archiver.instant_vod import make_vod
from archiver.mp4_export import export_mp4
from archiver.service import ArchiverService
from castway.catalog import open_catalog
from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEnded
from castway.layout import init_key, master_key, segment_key
from castway.live.base import LiveState
from castway.model import Broadcast, BroadcastState, Channel, Rendition, Segment, new_id
from castway.settings import Settings
from castway.storage.local import LocalStorage

LADDER = (
    Rendition("source", 1920, 1080, 30.0, None, "avc1.640028,mp4a.40.2", 6_500_000),
    Rendition("720p", 1280, 720, 30.0, 3000, "avc1.64001f,mp4a.40.2", 3_600_000),
    Rendition("480p", 854, 480, 30.0, 1400, "avc1.64001e,mp4a.40.2", 1_800_000),
    Rendition("360p", 640, 360, 30.0, 800, "avc1.640015,mp4a.40.2", 1_000_000),
)
SEGMENT_S = 2.0
LENGTHS = (("1 min", 60.0), ("1 h", 3600.0), ("24 h", 86400.0))


@dataclass(frozen=True, slots=True)
class VodResult:
    length: str
    renditions: int
    segments: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ExportResult:
    media_s: float
    resolution: str
    seconds: float

    @property
    def x_realtime(self) -> float:
        return self.media_s / self.seconds if self.seconds > 0 else float("inf")


async def synthesize(live: LiveState, broadcast_id: str, length_s: float) -> int:
    """Segment logs of the whole ladder for a broadcast of ``length_s``."""
    started = datetime(2026, 1, 1, tzinfo=UTC)
    count = int(length_s / SEGMENT_S)
    for rendition in LADDER:
        for msn in range(count):
            await live.append_segment_log(broadcast_id, rendition.name, Segment(
                msn=msn, duration_s=SEGMENT_S,
                key=segment_key(broadcast_id, rendition.name, msn, "m4s"),
                start_pts_s=msn * SEGMENT_S,
                program_date_time=started + timedelta(seconds=msn * SEGMENT_S),
                init_key=init_key(broadcast_id, rendition.name, 0), size=1_000_000))
    return count * len(LADDER)


async def bench_vod(settings: Settings, lengths: list[tuple[str, float]],
                    follow: bool = True) -> list[VodResult]:
    from castway.live import open_live_state

    catalog = open_catalog(settings)
    live = open_live_state(settings)
    storage = LocalStorage(settings.data_dir / "storage")
    service = ArchiverService(settings, catalog, live, storage, follow_interval_s=3600.0)
    results: list[VodResult] = []
    try:
        catalog.create_channel(Channel(name="bench"))
        await service.start()
        for index, (label, length_s) in enumerate(lengths):
            broadcast_id = f"bench{index}-{new_id()}"  # a shared Redis may hold older runs
            broadcast = Broadcast(id=broadcast_id, channel="bench", node_id="bench",
                                  state=BroadcastState.LIVE, renditions=LADDER)
            catalog.save_broadcast(broadcast)
            await live.put_broadcast(broadcast)
            segments = await synthesize(live, broadcast_id, length_s)
            # While live, the service reads the logs as they grow (every 10 s); a real
            # broadcast appends a few segments per tick, the synthesized one all at once.
            if follow:
                await service.follow_now()
            ended = replace(broadcast, state=BroadcastState.ENDED)
            catalog.save_broadcast(ended)
            await live.remove_broadcast(broadcast_id)
            started = time.perf_counter()
            await live.publish(BROADCASTS_TOPIC, BroadcastEnded(broadcast_id, "bench"))
            if not await service.wait_vod(broadcast_id, 60.0):
                raise RuntimeError(f"no VOD for {label} within 60 s")
            seconds = time.perf_counter() - started
            if not storage.exists(master_key(broadcast_id)):
                raise RuntimeError("the master playlist is not in storage")
            results.append(VodResult(label, len(LADDER), segments, seconds))
            print(f"  {label:>6}: {segments:>7} segments -> VOD in {seconds * 1000:8.1f} ms",
                  file=sys.stderr)
            # Stop the background verification (the synthesized media does not exist).
            await service.stop()
            await live.drop_segment_log(broadcast_id)
            service = ArchiverService(settings, catalog, live, storage,
                                      follow_interval_s=3600.0)
            await service.start()
    finally:
        await service.stop()
        await live.close()
        catalog.close()
    return results


def make_clip(directory: Path, seconds: float, width: int, height: int) -> list[tuple[str, float]]:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "60",
         "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-f", "hls", "-hls_time", str(SEGMENT_S),
         "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
         "-hls_segment_filename", str(directory / "%d.m4s"), "-hls_playlist_type", "vod",
         str(directory / "index.m3u8")], check=True)
    segments: list[tuple[str, float]] = []
    duration = 0.0
    for line in (directory / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line and not line.startswith("#"):
            segments.append((line, duration))
    return segments


async def bench_export(settings: Settings, seconds: float, width: int,
                       height: int) -> ExportResult:
    from castway.live import open_live_state

    clip_dir = settings.data_dir / "clip"
    segments = make_clip(clip_dir, seconds, width, height)
    catalog = open_catalog(settings)
    live = open_live_state(settings)
    storage = LocalStorage(settings.data_dir / "storage")
    ctx = ArchiveContext(settings, catalog, live, storage)
    try:
        if catalog.get_channel("bench") is None:
            catalog.create_channel(Channel(name="bench"))
        rendition = Rendition("source", width, height, 30.0, None, "avc1.64001f,mp4a.40.2",
                              5_000_000)
        broadcast = Broadcast(id="export", channel="bench", node_id="bench",
                              state=BroadcastState.ENDED, renditions=(rendition,))
        catalog.save_broadcast(broadcast)
        init = init_key("export", "source", 0)
        storage.put(init, (clip_dir / "init.mp4").read_bytes())
        t = 0.0
        for msn, (name, duration) in enumerate(segments):
            data = (clip_dir / name).read_bytes()
            key = segment_key("export", "source", msn, "m4s")
            storage.put(key, data)
            await live.append_segment_log("export", "source", Segment(
                msn=msn, duration_s=duration, key=key, start_pts_s=t,
                program_date_time=datetime.now(UTC), init_key=init,
                size=len(data)))
            t += duration
        await make_vod(ctx, "export")
        started = time.perf_counter()
        await export_mp4(ctx, "export", workdir=settings.data_dir)
        elapsed = time.perf_counter() - started
    finally:
        await live.close()
        catalog.close()
    result = ExportResult(t, f"{width}x{height}", elapsed)
    print(f"  export: {t:.0f} s of {width}x{height} in {elapsed:.2f} s = "
          f"{result.x_realtime:.0f}x realtime", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench archive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1 min,1 h,24 h",
                        help="which broadcast lengths to time (of: 1 min, 1 h, 24 h)")
    parser.add_argument("--export-seconds", type=float, default=120.0,
                        help="length of the clip the MP4 export remuxes")
    parser.add_argument("--export-size", default="1280x720", help="WIDTHxHEIGHT of the clip")
    parser.add_argument("--redis-url", default=None,
                        help="live state in this Redis instead of in-process")
    parser.add_argument("--no-follow", action="store_true",
                        help="read the whole segment logs at the end event (as without the "
                             "live follower)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.lengths.split(",") if s.strip()]
    lengths = [(label, s) for label, s in LENGTHS if label in wanted]
    width, height = (int(v) for v in args.export_size.lower().split("x", 1))
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is required for the export benchmark", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="castway-bench-archive-"))
    try:
        settings = Settings(data_dir=workdir, redis_url=args.redis_url,
                            database_url=f"sqlite:///{workdir / 'bench.db'}",
                            target_segment_s=SEGMENT_S)
        print("end event -> playable VOD (4-rendition ladder, 2 s segments):",
              file=sys.stderr)
        vods = asyncio.run(bench_vod(settings, lengths, follow=not args.no_follow))
        print("MP4 export (remux of the source rendition):", file=sys.stderr)
        export = asyncio.run(bench_export(settings, args.export_seconds, width, height))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"vod": [asdict(v) for v in vods],
                          "export": {**asdict(export), "x_realtime": export.x_realtime}},
                         indent=2))
    else:
        print("| broadcast | segments (4 renditions) | end event -> playable VOD |")
        print("|---|---|---|")
        for v in vods:
            print(f"| {v.length} | {v.segments} | {v.seconds * 1000:.0f} ms |")
        print(f"\nMP4 export: {export.media_s:.0f} s of {export.resolution} remuxed in "
              f"{export.seconds:.2f} s = {export.x_realtime:.0f}x realtime")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
