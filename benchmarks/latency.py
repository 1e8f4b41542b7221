"""``castway bench latency``: from RTMP publish to the part/segment being fetchable at the
origin, castway LL-HLS and standard HLS beside nginx-rtmp's HLS, on the same source.

Method:

1. A 720p30 H.264/AAC clip (keyframe every second, no B-frames) is made with the ffmpeg
   CLI. ``castway serve`` runs in a child process on free ports with a temporary data
   directory; nginx-rtmp runs beside it (the shared folder's ``peers/nginx-rtmp.sh``: 1 s
   fragments; override with ``--nginx-script``).
2. One ``ffmpeg -re`` process publishes the clip to both servers at once (the tee muxer,
   stream copy). ``t0`` is the monotonic clock read just before that process is spawned,
   so process start-up and the RTMP handshakes count as lag (the figures are an upper
   bound by those few tens of milliseconds).
3. Three pollers record, on the same clock, when each part/segment is first listed by a
   playlist (the origin serves what its playlists list; nginx writes its playlist after
   the fragment file):
   - castway LL-HLS: blocking reloads of the source rendition's media playlist with
     ``_HLS_msn``/``_HLS_part`` of the next part, as an LL-HLS player does;
   - castway standard HLS: ``?ll=0`` polled every ``--poll-ms``;
   - nginx: its ``/hls/KEY.m3u8`` polled every ``--poll-ms``.
4. A part's or segment's media end time is the sum of the EXTINF (and EXT-X-PART
   DURATION) values before and including it, from media sequence 0; edge lag is
   ``listed_at - (t0 + media end)``. Items ending in the first ``--warmup`` seconds
   (transcoder start-up) are left out of the statistics, and so is each server's final
   segment (closed when the publisher leaves, not by the next keyframe).

Reported: p50/p95/max edge lag per server and mode, castway's PART-HOLD-BACK, and the
latency a player at the recommended distance from the live edge sees: edge lag +
PART-HOLD-BACK (LL-HLS; target <= 2 s), edge lag + HOLD-BACK (castway standard HLS; 3
target durations when the playlist gives none) and edge lag + 3 x EXT-X-TARGETDURATION
(nginx, the RFC 8216 player rule). Every process is stopped and the temporary directory
removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.kit import NGINX_RTMP, free_port, peer_script

NGINX_SCRIPT = peer_script(NGINX_RTMP)
NGINX_KEY = "latency"
CHANNEL = "default"
RENDITION = "source"
LL_TARGET_S = 2.0
PLAYER_TARGET_S = 2.5  # median latency a real player reaches (issue 18)


class LatencyBenchError(Exception):
    """A server or tool the benchmark needs did not start or misbehaved."""


@dataclass
class Timeline:
    """What one poller saw: when each segment / part was first listed, and durations."""

    name: str
    segments: dict[int, float] = field(default_factory=dict)  # msn -> duration
    segment_seen: dict[int, float] = field(default_factory=dict)  # msn -> monotonic time
    parts: dict[tuple[int, int], float] = field(default_factory=dict)  # -> duration
    part_seen: dict[tuple[int, int], float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # last playlist's header tags
    requests: int = 0

    def record(self, text: str, now: float) -> tuple[int, int] | None:
        """Fold one media playlist into the timeline; returns the next part to ask for
        (msn, part index) as an LL-HLS client would."""
        msn = 0
        part_index = 0
        extinf: float | None = None
        last_part: tuple[int, int] | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                msn = int(line.split(":", 1)[1])
            elif line.startswith(("#EXT-X-TARGETDURATION:", "#EXT-X-SERVER-CONTROL:",
                                  "#EXT-X-PART-INF:")):
                tag, value = line.split(":", 1)
                self.tags[tag] = value
            elif line.startswith("#EXT-X-PART:"):
                attrs = _attributes(line.split(":", 1)[1])
                key = (msn, part_index)
                self.parts.setdefault(key, float(attrs["DURATION"]))
                self.part_seen.setdefault(key, now)
                last_part = key
                part_index += 1
            elif line.startswith("#EXTINF:"):
                extinf = float(line.split(":", 1)[1].split(",", 1)[0])
            elif line and not line.startswith("#") and extinf is not None:
                self.segments.setdefault(msn, extinf)
                self.segment_seen.setdefault(msn, now)
                msn += 1
                part_index = 0
                extinf = None
        if last_part is not None and last_part[0] == msn:  # a segment in progress
            return msn, last_part[1] + 1
        return msn, 0

    def edge_lags(self, t0: float, warmup_s: float) -> tuple[list[float], list[float]]:
        """(segment lags, part lags) in seconds, for items ending after ``warmup_s``."""
        starts: dict[int, float] = {}
        position = 0.0
        for msn in range(0, max(self.segments, default=-1) + 1):
            starts[msn] = position
            if msn not in self.segments:
                break  # a gap (never seen): later media times are unknown
            position += self.segments[msn]
        segment_lags = []
        final = max(self.segment_seen, default=-1)
        for msn, seen in self.segment_seen.items():
            # the final segment is closed by the publisher leaving, not by a keyframe
            if msn in starts and msn in self.segments and msn != final:
                end = starts[msn] + self.segments[msn]
                if end > warmup_s:
                    segment_lags.append(seen - (t0 + end))
        part_lags = []
        for (msn, index), seen in self.part_seen.items():
            if msn not in starts:
                continue
            before = [self.parts.get((msn, i)) for i in range(index + 1)]
            if any(d is None for d in before):
                continue
            end = starts[msn] + sum(d for d in before if d is not None)
            if end > warmup_s:
                part_lags.append(seen - (t0 + end))
        return sorted(segment_lags), sorted(part_lags)


def _attributes(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip('"')
            for m in re.finditer(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', text)}


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, int(round(q / 100 * len(values) + 0.5)) - 1))
    return values[rank]


async def _wait_for_port(port: int, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise LatencyBenchError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def make_clip(path: Path, *, seconds: float, width: int, height: int, fps: int) -> Path:
    ffmpeg = _tool("ffmpeg")
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", f"{seconds}", "-c:v", "libx264", "-preset", "veryfast",
           "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-g", str(fps),
           "-keyint_min", str(fps), "-sc_threshold", "0", "-bf", "0",
           "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        raise LatencyBenchError(f"ffmpeg could not make the clip: {result.stderr.strip()}")
    return path


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LatencyBenchError(f"{name} is not installed")
    return path


@dataclass
class Castway:
    process: asyncio.subprocess.Process
    http_port: int
    rtmp_port: int
    stream_key: str
    drain: asyncio.Task[None]


@contextlib.asynccontextmanager
async def run_castway(workdir: Path) -> AsyncIterator[Castway]:
    """``castway serve`` in a child process; stopped with SIGINT (killed if it hangs)."""
    rtmp_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env["CASTWAY_RECONNECT_GRACE_S"] = "1"
    log = (workdir / "castway.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launch.cli", "serve", "--data-dir", str(workdir / "castway"),
        "--rtmp-port", str(rtmp_port), "--http-port", str(http_port),
        stdout=asyncio.subprocess.PIPE, stderr=log, env=env)
    drain: asyncio.Task[None] | None = None
    try:
        assert process.stdout is not None
        banner = []
        while True:  # the banner is printed once everything listens
            line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode()
            if not line:
                raise LatencyBenchError(f"castway serve exited; see {workdir}/castway.log")
            banner.append(line)
            if line.startswith("Stop with"):
                break
        match = re.search(r"Stream Key:\s+(cw_\S+)", "".join(banner))
        if match is None:
            raise LatencyBenchError("castway serve printed no stream key")

        async def drain_stdout(stream: asyncio.StreamReader) -> None:
            while await stream.read(65536):
                pass

        drain = asyncio.create_task(drain_stdout(process.stdout))
        yield Castway(process, http_port, rtmp_port, match.group(1), drain)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        log.close()


@contextlib.asynccontextmanager
async def run_nginx(workdir: Path, script: Path) -> AsyncIterator[tuple[int, int]]:
    """nginx-rtmp from the peer script; yields (rtmp port, http port)."""
    rtmp_port, http_port = free_port(), free_port()
    directory = workdir / "nginx"
    result = await asyncio.to_thread(
        subprocess.run, ["sh", str(script), str(rtmp_port), str(http_port), str(directory)],
        capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise LatencyBenchError(f"nginx-rtmp did not start: {result.stderr.strip()}")
    pid_file = directory / "nginx.pid"
    try:
        await _wait_for_port(http_port, 15)
        yield rtmp_port, http_port
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):  # nginx removes its pid file once it has exited
                if not pid_file.exists():
                    break
                await asyncio.sleep(0.05)


async def poll_ll(client: httpx.AsyncClient, url: str, timeline: Timeline,
                  stop: asyncio.Event) -> None:
    """LL-HLS blocking reloads for the next part, as a low-latency player does."""
    next_part: tuple[int, int] | None = None
    while not stop.is_set():
        params = {} if next_part is None else {"_HLS_msn": str(next_part[0]),
                                               "_HLS_part": str(next_part[1])}
        try:
            response = await client.get(url, params=params, timeout=15)
        except httpx.TimeoutException:
            continue
        timeline.requests += 1
        now = time.monotonic()
        if response.status_code == 200:
            next_part = timeline.record(response.text, now)
            if next_part is not None and not timeline.parts and not params:
                next_part = None  # no LL-HLS parts: do not block on a part index
                await asyncio.sleep(0.05)
        else:
            next_part = None
            await asyncio.sleep(0.05)


async def poll_plain(client: httpx.AsyncClient, url: str, timeline: Timeline,
                     stop: asyncio.Event, interval_s: float) -> None:
    """A playlist fetched every ``interval_s``."""
    while not stop.is_set():
        with contextlib.suppress(httpx.TransportError):
            response = await client.get(url, timeout=5)
            timeline.requests += 1
            if response.status_code == 200:
                timeline.record(response.text, time.monotonic())
        await asyncio.sleep(interval_s)


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    clip = await asyncio.to_thread(make_clip, workdir / "clip.flv", seconds=args.seconds,
                                   width=args.width, height=args.height, fps=args.fps)
    ffmpeg = _tool("ffmpeg")
    timelines = {"castway-llhls": Timeline("castway-llhls"),
                 "castway-hls": Timeline("castway-hls")}
    use_nginx = not args.no_nginx
    if use_nginx:
        timelines["nginx-rtmp"] = Timeline("nginx-rtmp")
    async with contextlib.AsyncExitStack() as stack:
        castway = await stack.enter_async_context(run_castway(workdir))
        targets = [f"rtmp://127.0.0.1:{castway.rtmp_port}/live/{castway.stream_key}"]
        nginx_http = 0
        if use_nginx:
            nginx_rtmp, nginx_http = await stack.enter_async_context(
                run_nginx(workdir, Path(args.nginx_script)))
            targets.append(f"rtmp://127.0.0.1:{nginx_rtmp}/live/{NGINX_KEY}")
        client = await stack.enter_async_context(httpx.AsyncClient(
            limits=httpx.Limits(max_connections=20)))
        base = f"http://127.0.0.1:{castway.http_port}/hls/{CHANNEL}/{RENDITION}/index.m3u8"
        stop = asyncio.Event()
        interval = args.poll_ms / 1000
        pollers = [asyncio.create_task(poll_ll(client, base, timelines["castway-llhls"],
                                               stop)),
                   asyncio.create_task(poll_plain(client, f"{base}?ll=0",
                                                  timelines["castway-hls"], stop, interval))]
        if use_nginx:
            pollers.append(asyncio.create_task(poll_plain(
                client, f"http://127.0.0.1:{nginx_http}/hls/{NGINX_KEY}.m3u8",
                timelines["nginx-rtmp"], stop, interval)))
        tee = "|".join(f"[f=flv:onfail=ignore]{t}" for t in targets)
        t0 = time.monotonic()
        publisher = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-map", "0",
            "-c", "copy", "-f", "tee", tee,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, stderr = await asyncio.wait_for(publisher.communicate(), args.seconds + 60)
            if publisher.returncode != 0:
                raise LatencyBenchError(f"publisher failed: {stderr.decode().strip()}")
            # let the last segments close (castway ends the broadcast after the grace)
            await asyncio.sleep(3.0)
        finally:
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()
            stop.set()
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
    return _report(timelines, t0, args.warmup)


def _report(timelines: dict[str, Timeline], t0: float, warmup_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, timeline in timelines.items():
        segment_lags, part_lags = timeline.edge_lags(t0, warmup_s)
        tags = timeline.tags
        target = float(tags.get("#EXT-X-TARGETDURATION", "nan"))
        control = _attributes(tags.get("#EXT-X-SERVER-CONTROL", ""))
        entry: dict[str, Any] = {
            "requests": timeline.requests,
            "segments": len(segment_lags),
            "segment_edge_lag_p50_s": _percentile(segment_lags, 50),
            "segment_edge_lag_p95_s": _percentile(segment_lags, 95),
            "segment_edge_lag_max_s": segment_lags[-1] if segment_lags else float("nan"),
            "target_duration_s": target,
        }
        if name == "castway-llhls":
            hold_back = float(control.get("PART-HOLD-BACK", "nan"))
            entry.update({
                "parts": len(part_lags),
                "part_edge_lag_p50_s": _percentile(part_lags, 50),
                "part_edge_lag_p95_s": _percentile(part_lags, 95),
                "part_edge_lag_max_s": part_lags[-1] if part_lags else float("nan"),
                "part_hold_back_s": hold_back,
            })
            entry["player_latency_p50_s"] = entry["part_edge_lag_p50_s"] + hold_back
            entry["player_latency_p95_s"] = entry["part_edge_lag_p95_s"] + hold_back
            entry["target_s"] = LL_TARGET_S
            entry["meets_target_p50"] = entry["player_latency_p50_s"] <= LL_TARGET_S
            entry["meets_target_p95"] = entry["player_latency_p95_s"] <= LL_TARGET_S
        else:
            hold_back = float(control.get("HOLD-BACK", 3 * target))
            entry["hold_back_s"] = hold_back
            entry["player_latency_p50_s"] = entry["segment_edge_lag_p50_s"] + hold_back
            entry["player_latency_p95_s"] = entry["segment_edge_lag_p95_s"] + hold_back
        out[name] = entry
    return out


async def _until_served(url: str, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise LatencyBenchError(f"{url} was not served within {timeout_s:g} s")


async def measure_players(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Each player in turn, ``--player-seconds`` each, on the live LL-HLS ladder of one
    looping publisher (``benchmarks.players``)."""
    from benchmarks.browser import launch_browser
    from benchmarks.players import PlayerPage, installed, serve_pages

    names = [p.strip() for p in args.players.split(",") if p.strip()]
    missing = [p for p in names if not installed(p)]
    if missing:
        raise LatencyBenchError(f"not installed: {', '.join(missing)} (sh web/install.sh)")
    clip = await asyncio.to_thread(make_clip, workdir / "clip.flv", seconds=10.0,
                                   width=args.width, height=args.height, fps=args.fps)
    ffmpeg = _tool("ffmpeg")
    out: dict[str, Any] = {}
    traces: dict[str, list[dict[str, Any]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        castway = await stack.enter_async_context(run_castway(workdir))
        origin = f"http://127.0.0.1:{castway.http_port}"
        pages = await stack.enter_async_context(serve_pages(origin))
        browser = await stack.enter_async_context(
            launch_browser(_tool("chromium"), workdir))
        publisher = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(clip), "-c", "copy", "-f", "flv",
            f"rtmp://127.0.0.1:{castway.rtmp_port}/live/{castway.stream_key}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            query = "" if args.player_mode == "ll" else "?ll=0"
            master = f"{origin}/hls/{CHANNEL}/master.m3u8{query}"
            # Viewers of a live channel: each player opens once the master is out. (The
            # first seconds of a broadcast are a case of their own: tests/test_players.py
            # and the watch page's retry.)
            await _until_served(master, timeout_s=60)
            for name in names:
                page = await PlayerPage.open(browser, pages, name,
                                             f"{origin}/hls/{CHANNEL}/master.m3u8{query}")
                try:
                    await page.wait_for("state.playing", 90)
                    await asyncio.sleep(args.player_seconds)
                    played = await page.playback(settle_s=args.player_settle)
                    if args.player_trace:
                        events = (await page.state()).get("events", [])
                        fetches = await page.page.evaluate(
                            "performance.getEntriesByType('resource').map(e => ({what: "
                            "'fetch', url: e.name, at: performance.timeOrigin + e.startTime,"
                            " done: performance.timeOrigin + e.responseEnd}))")
                        traces[name] = sorted(
                            ({**e, "at": e["at"] - page.started_at_ms,
                              **({"done": e["done"] - page.started_at_ms}
                                 if "done" in e else {})}
                             for e in events + fetches), key=lambda e: float(e["at"]))
                finally:
                    await page.close()
                out[name] = {
                    "samples": len(played.latencies),
                    "latency_p50_s": played.median_latency_s,
                    "latency_p95_s": played.latency_percentile(95),
                    "latency_min_s": min(played.latencies, default=float("nan")),
                    "latency_max_s": max(played.latencies, default=float("nan")),
                    "estimate_p50_s": (statistics.median(played.estimates)
                                       if played.estimates else float("nan")),
                    "stalls": played.stalls, "startup_s": played.startup_s,
                    "errors": list(played.errors), "warnings": list(played.warnings),
                    "target_s": PLAYER_TARGET_S,
                    "meets_target": (played.median_latency_s <= PLAYER_TARGET_S
                                     and played.stalls == 0 and not played.errors),
                }
        finally:
            if publisher.returncode is None:
                publisher.kill()
            await publisher.wait()
    if args.player_trace:
        Path(args.player_trace).write_text(json.dumps(traces, indent=1))
    return out


def _print_players(report: dict[str, Any], args: argparse.Namespace) -> None:
    mode = "LL-HLS" if args.player_mode == "ll" else "standard HLS (?ll=0)"
    print(f"castway bench latency --players: {args.width}x{args.height}p{args.fps} looped "
          f"with ffmpeg -re; each player {args.player_seconds:g} s on the live {mode} "
          f"ladder, a page of another origin, headless Chromium; latency = wall clock - "
          f"PROGRAM-DATE-TIME of the playing position, from {args.player_settle:g} s "
          "after the first frame")
    for name, e in report.items():
        verdict = "meets" if e["meets_target"] else "misses"
        print(f"{name:8} latency p50 {e['latency_p50_s']:.2f} s p95 {e['latency_p95_s']:.2f} s"
              f" (min {e['latency_min_s']:.2f} max {e['latency_max_s']:.2f}, n={e['samples']});"
              f" player's estimate p50 {e['estimate_p50_s']:.2f} s; stalls {e['stalls']};"
              f" start {e['startup_s']:.2f} s; errors {len(e['errors'])}"
              f" -> {verdict} {e['target_s']:g} s with no stall")
        for text in e["errors"][:3] + e["warnings"][:3]:
            print(f"{'':8} {text}")


def _print(report: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"castway bench latency: {args.seconds:g} s of {args.width}x{args.height}p"
          f"{args.fps} published with ffmpeg -re to each server; warm-up {args.warmup:g} s "
          "left out")
    for name, e in report.items():
        line = (f"{name:14} segments: edge lag p50 {e['segment_edge_lag_p50_s']:.3f} s "
                f"p95 {e['segment_edge_lag_p95_s']:.3f} s (n={e['segments']}, "
                f"target duration {e['target_duration_s']:g} s)")
        print(line)
        if "parts" in e:
            print(f"{'':14} parts:    edge lag p50 {e['part_edge_lag_p50_s']:.3f} s "
                  f"p95 {e['part_edge_lag_p95_s']:.3f} s max {e['part_edge_lag_max_s']:.3f} s "
                  f"(n={e['parts']}); PART-HOLD-BACK {e['part_hold_back_s']:g} s")
            verdict = "meets" if e["meets_target_p95"] else (
                "meets at p50, not p95" if e["meets_target_p50"] else "misses")
            print(f"{'':14} player latency (part edge lag + PART-HOLD-BACK): p50 "
                  f"{e['player_latency_p50_s']:.3f} s p95 {e['player_latency_p95_s']:.3f} s"
                  f" -> {verdict} the {e['target_s']:g} s target")
        else:
            print(f"{'':14} player latency (segment edge lag + hold-back "
                  f"{e['hold_back_s']:g} s): p50 {e['player_latency_p50_s']:.3f} s "
                  f"p95 {e['player_latency_p95_s']:.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="media published")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="leave out items ending in the first N s of media")
    parser.add_argument("--poll-ms", type=float, default=50.0,
                        help="polling interval of the standard HLS pollers")
    parser.add_argument("--no-nginx", action="store_true", help="castway only")
    parser.add_argument("--nginx-script", default=str(NGINX_SCRIPT or ""))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--players", default="",
                        help="instead: real players in headless Chromium, comma-separated "
                        "(hls.js,shaka,videojs), each on castway's live ladder")
    parser.add_argument("--player-mode", choices=("ll", "standard"), default="ll",
                        help="the ladder the players get: LL-HLS, or ?ll=0")
    parser.add_argument("--player-seconds", type=float, default=20.0,
                        help="how long each player plays")
    parser.add_argument("--player-trace", default="",
                        help="write what each player did and when (hls.js: playlists, "
                        "fragments, switches, latency) to this JSON file")
    parser.add_argument("--player-settle", type=float, default=0.0,
                        help="leave out the first N s after each player's first frame")
    args = parser.parse_args(argv)
    if args.players:
        with tempfile.TemporaryDirectory(prefix="castway-latency-") as tmp:
            try:
                report = asyncio.run(measure_players(args, Path(tmp)))
            except LatencyBenchError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_players(report, args)
        return 0
    if not args.no_nginx and not (args.nginx_script and Path(args.nginx_script).exists()):
        print(f"error: {args.nginx_script} not found (use --no-nginx)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="castway-latency-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers (another user when run as root) read it
        try:
            report = asyncio.run(measure(args, Path(tmp)))
        except LatencyBenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
