"""``castway bench origin``: the origin beside nginx serving the same bytes statically.

1. GET throughput of a 2 s fMP4 segment and of the live media playlist, from the origin
   (uvicorn, one process, MemoryLiveState) and from nginx (one worker, sendfile, the same
   files on disk), with ``wrk`` (one thread, N connections); prints requests/s, p99
   latency and the origin/nginx ratio.
2. N concurrent blocked playlist reloads (``_HLS_msn``/``_HLS_part`` of the next part),
   all released by one part: the wake-up latency from the part's publication to each
   complete response, measured by a client in another process (CLOCK_MONOTONIC is
   shared), p50/p99/max over several rounds, plus the server-side histogram.

Media are made by the ffmpeg CLI (640x360, 0.5 s parts). Everything runs on loopback in a
temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.kit import free_port, wait_for_port
from castway.layout import InitName, MediaName, PartName, RenditionKey, SegmentName

BROADCAST_ID = "bench0001"
CHANNEL = "bench"
RENDITION = "360p"
PARTS_PER_SEGMENT = 4
MEDIA_TTL_S = 3600.0


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p99_ms: float
    transfer_per_s: str


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _make_parts(directory: Path, seconds: float) -> tuple[bytes, list[bytes], list[float]]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is required (apt-get install ffmpeg)")
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1200k",
         "-g", "15", "-keyint_min", "15", "-sc_threshold", "0", "-bf", "0",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
         "-f", "hls", "-hls_time", "0.5", "-hls_playlist_type", "vod",
         "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
         "-hls_segment_filename", str(directory / "p%d.m4s"), str(directory / "src.m3u8")],
        check=True)
    import m3u8

    playlist = m3u8.load(str(directory / "src.m3u8"))
    parts = [(directory / s.uri).read_bytes() for s in playlist.segments]
    durations = [float(s.duration) for s in playlist.segments]
    return (directory / "init.mp4").read_bytes(), parts, durations


class _Feeder:
    """Publishes parts into the live state the way the transcoder does."""

    def __init__(self, live: Any, init: bytes, parts: list[bytes],
                 durations: list[float]) -> None:
        self.live = live
        self.init = init
        self.data = parts
        self.durations = durations
        self.fed = 0
        self.next_msn = 0
        self.segments: list[Any] = []
        self.parts: list[Any] = []
        self.elapsed = 0.0
        self.t0 = datetime.now(UTC)

    @staticmethod
    def key(name: MediaName) -> str:
        return str(RenditionKey(BROADCAST_ID, RENDITION, name))

    async def start(self) -> None:
        from castway.model import Broadcast, Rendition

        await self.live.put_broadcast(Broadcast(
            id=BROADCAST_ID, channel=CHANNEL, node_id="bench",
            renditions=(Rendition(RENDITION, 640, 360, 30.0, 1200.0,
                                  "avc1.64001e,mp4a.40.2"),)))
        await self.live.put_media(self.key(InitName()), self.init, MEDIA_TTL_S)

    async def push_part(self) -> None:
        from castway.events.media import MediaUpdate, media_topic
        from castway.live.base import RenditionWindow
        from castway.model import Part, Segment

        index = len(self.parts)
        part = Part(self.next_msn, index, self.durations[self.fed], True,
                    self.key(PartName(self.next_msn, index)))
        await self.live.put_media(part.key, self.data[self.fed], MEDIA_TTL_S)
        self.fed += 1
        self.parts.append(part)
        if len(self.parts) == PARTS_PER_SEGMENT:
            data = b"".join(self.data[self.fed - PARTS_PER_SEGMENT:self.fed])
            duration = sum(p.duration_s for p in self.parts)
            segment = Segment(self.next_msn, duration, self.key(SegmentName(self.next_msn)),
                              self.elapsed, self.t0 + timedelta(seconds=self.elapsed),
                              init_key=self.key(InitName()), size=len(data),
                              parts=tuple(self.parts))
            await self.live.put_media(segment.key, data, MEDIA_TTL_S)
            self.segments.append(segment)
            self.elapsed += duration
            self.next_msn += 1
            self.parts = []
        window = RenditionWindow(
            segments=tuple(self.segments[-10:]), next_msn=self.next_msn,
            parts=tuple(self.parts),
            preload_hint=self.key(PartName(self.next_msn, len(self.parts))),
            target_duration_s=2.0, part_target_s=0.5, init_key=self.key(InitName()))
        await self.live.put_window(BROADCAST_ID, RENDITION, window)
        await self.live.publish(media_topic(BROADCAST_ID),
                                MediaUpdate(RENDITION, part.msn, part.index))

    @property
    def next_part(self) -> tuple[int, int]:
        return self.next_msn, len(self.parts)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; video/mp4 mp4; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ add_header Cache-Control "public, max-age=1"; etag on; }}
    }}
}}
"""


def _wrk(url: str, *, seconds: float, connections: int) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is required (apt-get install wrk)")
    duration = f"-d{max(1, round(seconds))}s"
    out = subprocess.run([wrk, "-t1", f"-c{connections}", duration, "--latency", url],
                         check=True, capture_output=True, text=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    transfer = re.search(r"Transfer/sec:\s+(\S+)", out)
    if rps is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx is not None:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses under load")
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * scale,
                     transfer.group(1) if transfer else "?")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _bench(args: argparse.Namespace) -> int:
    import uvicorn
    from prometheus_client import CollectorRegistry

    from castway.catalog import open_catalog
    from castway.live.memory import MemoryLiveState
    from castway.settings import Settings
    from castway.storage.local import LocalStorage
    from origin.app import create_app

    _raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix="castway-bench-origin-"))
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user
    nginx: subprocess.Popen[bytes] | None = None
    server: uvicorn.Server | None = None
    serve_task: asyncio.Task[None] | None = None
    catalog = None
    try:
        print("making media with ffmpeg (640x360, 0.5 s parts)...", flush=True)
        init, parts, durations = _make_parts(tmp, seconds=args.media_seconds)
        settings = Settings(data_dir=tmp / "data", admin_token="bench", host="127.0.0.1")
        catalog = open_catalog(settings)
        live = MemoryLiveState()
        storage = LocalStorage(tmp / "storage")
        registry = CollectorRegistry()
        app = create_app(settings, catalog=catalog, live=live, storage=storage,
                         registry=registry)
        feeder = _Feeder(live, init, parts, durations)
        await feeder.start()
        for _ in range(3 * PARTS_PER_SEGMENT):
            await feeder.push_part()

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False,
                                               backlog=4096))
        serve_task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        origin = f"http://127.0.0.1:{port}"
        segment_path = f"/hls/b/{BROADCAST_ID}/{RENDITION}/1.m4s"
        playlist_path = f"/hls/{CHANNEL}/{RENDITION}/index.m3u8"

        # nginx serves the same bytes from disk.
        root = tmp / "www"
        segment_file = root / segment_path.lstrip("/")
        segment_file.parent.mkdir(parents=True)
        segment_file.write_bytes(await live.get_media(feeder.key(SegmentName(1))) or b"")
        playlist_file = root / playlist_path.lstrip("/")
        playlist_file.parent.mkdir(parents=True)
        import httpx

        async with httpx.AsyncClient(base_url=origin) as client:
            playlist_file.write_text((await client.get(playlist_path)).text)
        nginx_port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port, root=root))
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        nginx = subprocess.Popen([nginx_bin, "-c", str(conf), "-p", str(tmp), "-e",
                                  str(tmp / "nginx-error.log")])
        await asyncio.to_thread(wait_for_port, nginx_port)
        static = f"http://127.0.0.1:{nginx_port}"

        results: dict[str, Any] = {"segment_bytes": segment_file.stat().st_size,
                                   "connections": args.connections}
        print(f"\nGET throughput, wrk -t1 -c{args.connections} -d{round(args.seconds)}s "
              f"(segment {segment_file.stat().st_size} bytes)")
        print(f"{'':28}{'origin req/s':>14}{'nginx req/s':>14}{'ratio':>8}"
              f"{'origin p99':>12}{'nginx p99':>11}")
        for label, path in (("segment (2 s fMP4)", segment_path),
                            ("live playlist", playlist_path)):
            mine = await asyncio.to_thread(_wrk, origin + path, seconds=args.seconds,
                                           connections=args.connections)
            theirs = await asyncio.to_thread(_wrk, static + path, seconds=args.seconds,
                                             connections=args.connections)
            ratio = mine.requests_per_s / theirs.requests_per_s
            print(f"{label:28}{mine.requests_per_s:>14.0f}{theirs.requests_per_s:>14.0f}"
                  f"{ratio:>8.2f}{mine.p99_ms:>10.1f}ms{theirs.p99_ms:>9.1f}ms")
            results[label] = {"origin_rps": mine.requests_per_s,
                              "nginx_rps": theirs.requests_per_s, "ratio": ratio,
                              "origin_p99_ms": mine.p99_ms, "nginx_p99_ms": theirs.p99_ms}

        # Blocked reloads, released by one part each round: one alone, then N at once.
        notifier = app.state.origin.notifier
        metrics = app.state.origin.metrics
        print("\nblocked reloads released by one part (client-observed, part published "
              "-> response complete):")
        for count, rounds in ((1, args.single_rounds), (args.blocked, args.rounds)):
            if feeder.fed + rounds > len(feeder.data):
                raise SystemExit("not enough media for the rounds: raise --media-seconds")
            before_sum = metrics.wakeup_seconds._sum.get()
            before_n = sum(b.get() for b in metrics.wakeup_seconds._buckets)
            latencies = await _blocked_rounds(feeder, notifier, port, playlist_path,
                                              count, rounds)
            server_sum = metrics.wakeup_seconds._sum.get() - before_sum
            server_n = sum(b.get() for b in metrics.wakeup_seconds._buckets) - before_n
            p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
            side = (f", server side event -> handler resumes mean "
                    f"{server_sum / server_n * 1000:.2f} ms" if server_n else "")
            print(f"  {count:>5} concurrent x {rounds} rounds: p50 {p50 * 1000:.1f} ms  "
                  f"p99 {p99 * 1000:.1f} ms  max {max(latencies) * 1000:.1f} ms{side}")
            results[f"blocked_{count}"] = {"count": count, "rounds": rounds,
                                           "p50_ms": p50 * 1000, "p99_ms": p99 * 1000,
                                           "max_ms": max(latencies) * 1000}
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        if server is not None and serve_task is not None:
            server.should_exit = True
            await serve_task
        if catalog is not None:
            catalog.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def _blocked_rounds(feeder: _Feeder, notifier: Any, port: int, playlist_path: str,
                          count: int, rounds: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(rounds):
        msn, part = feeder.next_part
        url = f"{playlist_path}?_HLS_msn={msn}&_HLS_part={part}"
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.origin", "_blocked", "--port", str(port),
            "--path", url, "--count", str(count), stdout=asyncio.subprocess.PIPE)
        deadline = time.monotonic() + 60
        while notifier.waiting < count:
            if time.monotonic() > deadline or child.returncode is not None:
                raise RuntimeError(f"only {notifier.waiting} requests blocked")
            await asyncio.sleep(0.01)
        released = time.monotonic()
        await feeder.push_part()
        out, _ = await child.communicate()
        report = json.loads(out)
        if report["errors"]:
            raise RuntimeError(f"blocked reloads failed: {report['errors'][:5]}")
        latencies += [t - released for t in report["done"]]
    return latencies


async def _blocked_clients(port: int, path: str, count: int) -> dict[str, Any]:
    """Open ``count`` connections, send one blocking reload on each, and note when each
    complete response arrived (time.monotonic, comparable with the parent's)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               "Accept-Encoding: identity\r\n\r\n").encode()
    done: list[float] = []
    errors: list[str] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read()
            done.append(time.monotonic())
            status = data.split(b"\r\n", 1)[0]
            if b" 200 " not in status:
                errors.append(status.decode(errors="replace"))
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return {"done": done, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench origin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    hidden = sub.add_parser("_blocked", help=argparse.SUPPRESS)
    hidden.add_argument("--port", type=int, required=True)
    hidden.add_argument("--path", required=True)
    hidden.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--blocked", type=int, default=1000,
                        help="concurrent blocked reloads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of N blocked reloads")
    parser.add_argument("--single-rounds", type=int, default=20,
                        help="rounds of a single blocked reload")
    parser.add_argument("--media-seconds", type=float, default=24.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.mode == "_blocked":
        _raise_fd_limit()
        report = asyncio.run(_blocked_clients(args.port, args.path, args.count))
        sys.stdout.write(json.dumps(report))
        return 0
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(_bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
