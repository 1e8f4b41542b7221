"""``castway bench ingest``: N concurrent ~6 Mbps publishers against castway's RTMP
ingest (transcoder off) and, side by side, nginx-rtmp.

Each publisher is an ffmpeg CLI process (``-re -stream_loop -1 -t DURATION -c copy``
of a generated clip). The server runs in its own process; we read its CPU seconds
from /proc/PID/stat before and after. Bytes lost compares what the clients wrote (FLV
bytes, from ffmpeg's ``-progress``) with what castway's handler received (payload plus
the FLV tag overhead it stands for); for nginx only CPU is compared. nginx-rtmp is
started with the shared folder's peers/nginx-rtmp.sh, which also turns HLS on (nginx does
more work than castway's ingest with the transcoder off; noted in the output).

On a small machine the ffmpeg clients themselves use a lot of CPU: keep durations short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.kit import NGINX_RTMP, free_port, peer_script
from benchmarks.kit import wait_for_port as wait_port
from castway.media import MediaPacket
from ingest.publish import PublishRequest

NGINX_PEER_SCRIPT = peer_script(NGINX_RTMP)
CLK_TCK = os.sysconf("SC_CLK_TCK")
# FLV tag overhead per media message: 11-byte tag header + 4-byte back pointer, plus the
# codec header inside the body that MediaPacket.payload no longer has.
_TAG_OVERHEAD = 15
_BODY_HEADER = {"video": 5, "audio": 2}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def make_clip(path: Path, *, seconds: float = 4.0, bitrate: str = "6M") -> Path:
    """A ~6 Mbps 1280x720p30 H.264 + AAC FLV clip (noise keeps the bitrate up)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30,noise=alls=30:allf=t",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "60",
         "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", str(path)], check=True)
    return path


# --- the castway server process -------------------------------------------------------

class _CountingSession:
    def __init__(self, totals: dict[str, int]) -> None:
        self.totals = totals

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        pass

    async def on_packet(self, packet: MediaPacket) -> None:
        kind = packet.kind.value
        self.totals["bytes"] += len(packet.payload) + _BODY_HEADER[kind] + _TAG_OVERHEAD
        self.totals["packets"] += 1

    async def on_close(self, reason: str) -> None:
        self.totals["closed"] += 1


class _CountingHandler:
    def __init__(self) -> None:
        self.totals = {"bytes": 0, "packets": 0, "publishes": 0, "closed": 0}

    async def on_publish(self, request: PublishRequest) -> _CountingSession:
        self.totals["publishes"] += 1
        return _CountingSession(self.totals)


async def _serve(port: int, stats_file: Path) -> None:
    from castway.settings import Settings
    from ingest.server import IngestServer

    handler = _CountingHandler()
    settings = Settings(host="127.0.0.1", rtmp_port=port, max_connections_per_ip=10_000,
                        transcode=False)
    server = IngestServer(settings, handler)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()
    stats_file.write_text(json.dumps(handler.totals))


# --- one run ---------------------------------------------------------------------------

@dataclass
class RunResult:
    server: str
    publishers: int
    duration_s: float
    cpu_s: float
    clients_ok: int
    sent_bytes: int
    received_bytes: int | None

    @property
    def cpu_per_publisher(self) -> float:
        return self.cpu_s / self.publishers

    @property
    def loss_pct(self) -> float | None:
        if self.received_bytes is None or self.sent_bytes == 0:
            return None
        return max(0.0, 100.0 * (1 - self.received_bytes / self.sent_bytes))


def _run_clients(n: int, url_for: list[str], clip: Path, duration: float,
                 workdir: Path) -> tuple[int, int]:
    procs = []
    for i in range(n):
        progress = workdir / f"progress-{i}.txt"
        procs.append((subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(clip), "-t", str(duration), "-c", "copy", "-f", "flv",
             "-progress", str(progress), url_for[i]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), progress))
    ok = 0
    sent = 0
    for proc, progress in procs:
        try:
            rc = proc.wait(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        ok += rc == 0
        sizes = [line.split("=", 1)[1] for line in progress.read_text().splitlines()
                 if line.startswith("total_size=")] if progress.exists() else []
        if sizes and sizes[-1].strip().isdigit():
            sent += int(sizes[-1])
    return ok, sent


def run_castway(n: int, clip: Path, duration: float, workdir: Path) -> RunResult:
    port = free_port()
    stats_file = workdir / f"castway-{n}.json"
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.ingest", "--serve", str(port),
                               "--stats-file", str(stats_file)])
    try:
        wait_port(port)
        cpu0 = cpu_seconds(server.pid)
        ok, sent = _run_clients(n, [f"rtmp://127.0.0.1:{port}/live/bench{i}" for i in range(n)],
                                clip, duration, workdir)
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    totals = json.loads(stats_file.read_text())
    return RunResult("castway", n, duration, cpu, ok, sent, int(totals["bytes"]))


def run_nginx(n: int, clip: Path, duration: float, workdir: Path) -> RunResult:
    port, http = free_port(), free_port()
    ndir = workdir / f"nginx-{n}"
    assert NGINX_PEER_SCRIPT is not None
    subprocess.run(["bash", str(NGINX_PEER_SCRIPT), str(port), str(http), str(ndir)],
                   check=True, stdout=subprocess.DEVNULL)
    master = int((ndir / "nginx.pid").read_text())
    try:
        wait_port(port)
        workers = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()]
        pids = [master, *workers]
        cpu0 = sum(cpu_seconds(p) for p in pids)
        ok, sent = _run_clients(n, [f"rtmp://127.0.0.1:{port}/live/bench{i}" for i in range(n)],
                                clip, duration, workdir)
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    finally:
        os.kill(master, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{master}").exists():
                break
            time.sleep(0.05)
    return RunResult("nginx-rtmp", n, duration, cpu, ok, sent, None)


def format_table(results: list[RunResult]) -> str:
    lines = [f"{'server':<11} {'pubs':>5} {'ok':>5} {'CPU s':>8} {'CPU s/pub':>10} "
             f"{'CPU %/pub':>10} {'sent MB':>9} {'lost %':>7} {'castway/nginx':>14}"]
    nginx = {r.publishers: r for r in results if r.server == "nginx-rtmp"}
    for r in results:
        ratio = ""
        peer = nginx.get(r.publishers)
        if r.server == "castway" and peer is not None and peer.cpu_s > 0:
            ratio = f"{r.cpu_s / peer.cpu_s:.2f}x"
        loss = f"{r.loss_pct:.3f}" if r.loss_pct is not None else "-"
        lines.append(f"{r.server:<11} {r.publishers:>5} {r.clients_ok:>5} {r.cpu_s:>8.2f} "
                     f"{r.cpu_per_publisher:>10.3f} "
                     f"{100 * r.cpu_per_publisher / r.duration_s:>10.2f} "
                     f"{r.sent_bytes / 1e6:>9.1f} {loss:>7} {ratio:>14}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publishers", default="10,50,100",
                        help="comma-separated publisher counts (default 10,50,100)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds each publisher streams (default 20)")
    parser.add_argument("--bitrate", default="6M", help="video bitrate of the clip")
    parser.add_argument("--no-nginx", action="store_true", help="skip nginx-rtmp")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stats-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve is not None:
        asyncio.run(_serve(args.serve, args.stats_file))
        return 0
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is required", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.publishers.split(",") if c.strip()]
    with_nginx = not args.no_nginx and NGINX_PEER_SCRIPT is not None
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp:
        workdir = Path(tmp)
        clip = make_clip(workdir / "clip.flv", bitrate=args.bitrate)
        print(f"clip: {clip.stat().st_size * 8 / 4 / 1e6:.1f} Mbit/s, "
              f"{args.duration:.0f} s per publisher, cores: {os.cpu_count()}", flush=True)
        for n in counts:
            results.append(run_castway(n, clip, args.duration, workdir))
            print(format_table(results[-1:]).splitlines()[1], flush=True)
            if with_nginx:
                results.append(run_nginx(n, clip, args.duration, workdir))
                print(format_table(results[-1:]).splitlines()[1], flush=True)
    print()
    print(format_table(results))
    if with_nginx:
        print("nginx-rtmp runs with HLS on (the peer script's config): it does more work "
              "per publisher than castway's ingest with the transcoder off.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
