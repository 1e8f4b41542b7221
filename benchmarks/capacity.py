"""``castway bench capacity``: how many broadcasts one node takes, and whether it keeps them.

Publishers of mixed sources (ffmpeg's lavfi testsrc2 at 1080p60, 1080p30 and 720p30, in
that rotation, each looped from a clip with ``-re -c copy``) join one ``castway serve``
node one by one, ``--settle`` seconds apart, until the node refuses a publish or gives one
a reduced ladder (``CASTWAY_ADMISSION=reduce``, the default), or until its slots are
gone (``slots``: the fixed 8 slots before cost admission, for comparison). Then, over a
``--window`` of steady state, it reads each admitted broadcast's stats from the API
(ladder, frames dropped in the window, estimated and measured cost) and the CPU the node's
process tree used, as a share of the machine's cores.

A source named with ``+tracks`` (``1080p30+tracks``) is an encoder that sends its own
ladder (E-RTMP v2 multitrack, OBS Multitrack Video): the tracks castway's
``/api/v1/encoder-configuration`` asks an NVIDIA streamer at that size for, keyframes
aligned, published by FFmpeg 8's muxer (benchmarks.pyav_publish); castway packages them
and encodes nothing. ``--sources`` picks the rotation.

The node calibrates first (``castway calibrate`` into its data directory), as a node
would once. Prints one JSON object; ``--modes`` picks the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from benchmarks.kit import ClipTrack, free_ports, multitrack_clip_command, wait_for_port
from castway.encoder_ladder import NVIDIA, ClientAsk, plan_encoder_ladder

#: (name, width, height, fps, video kbit/s): what a publisher might send.
SOURCES = (("1080p60", 1920, 1080, 60, 6000), ("1080p30", 1920, 1080, 30, 4500),
           ("720p30", 1280, 720, 30, 3000))
TRACKS = "+tracks"  # the suffix of an encoder-sent ladder's source name
TOKEN = "bench-capacity-admin-token"
CLIP_S = 10


@dataclass
class Admitted:
    channel: str
    source: str
    broadcast_id: str = ""
    ladder: str = ""
    reduced: bool = False
    dropped_in_window: float = 0.0
    lag_s: float = 0.0
    cost_estimate: float = 0.0
    cost_measured: float = 0.0
    cost_error: float = 0.0


@dataclass
class Run:
    mode: str
    stopped_by: str = ""
    admitted: list[Admitted] = field(default_factory=list)
    node_cpu_share: float = 0.0  # the node's process tree, of all cores, over the window
    machine_cpu_share: float = 0.0  # everything on the machine (shared with other work)
    window_s: float = 0.0
    node_cost_capacity: float = 0.0
    node_cost_used: float = 0.0

    @property
    def all_zero_dropped(self) -> bool:
        return all(a.dropped_in_window == 0 for a in self.admitted)


def make_clip(path: Path, width: int, height: int, fps: int, kbps: int) -> Path:
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(CLIP_S), "-c:v", "libx264", "-preset", "ultrafast",
             "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k",
             "-g", str(2 * fps), "-keyint_min", str(2 * fps), "-sc_threshold", "0",
             "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
             str(path)], check=True)
    return path


def make_tracks_clip(path: Path, width: int, height: int, fps: int) -> Path:
    """The ladder the encoder-configuration endpoint asks an NVIDIA streamer at this
    output for, one H.264 stream per track (the first is track 0), keyframes every
    ``keyint_sec`` on all of them, and AAC."""
    if path.exists():
        return path
    plan = plan_encoder_ladder(ClientAsk(width, height, Fraction(fps), (NVIDIA,)),
                               keyint_s=2, max_tracks=9)
    tracks = [ClipTrack(t.width, t.height, round(plan.keyint_s * float(t.fps)), t.fps,
                        t.bitrate_kbps) for t in plan.tracks]
    cmd = multitrack_clip_command(
        "ffmpeg", path, tracks, fps=fps, seconds=CLIP_S,
        video_args=("-c:v", "libx264", "-preset", "ultrafast", "-sc_threshold", "0",
                    "-bf", "0", "-pix_fmt", "yuv420p"),
        audio_args=("-c:a", "aac", "-b:a", "128k"))
    subprocess.run(cmd, check=True)
    return path


def publisher(clip: Path, url: str, multitrack: bool) -> subprocess.Popen[bytes]:
    """A looping real-time publisher: the ffmpeg CLI, or for an encoder-sent ladder
    PyAV's FFmpeg 8 (Debian's ffmpeg 5.1 has no multitrack FLV)."""
    if multitrack:
        cmd = [sys.executable, "-m", "benchmarks.pyav_publish", str(clip), url,
               "--realtime", "--loop"]
    else:
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
               "-i", str(clip), "-c", "copy", "-f", "flv", url]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _tree(pid: int) -> list[int]:
    out = [pid]
    for p in out:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out.extend(int(c) for c in children)
    return out


def _proc_cpu(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeCpu:
    """CPU-seconds of a process tree, children that exited meanwhile included (their
    time lands in the parent's cutime/cstime only when reaped, so live ones are summed
    and each pid's last reading kept)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.last: dict[int, float] = {}

    def read(self) -> float:
        for pid in _tree(self.root):
            self.last[pid] = max(self.last.get(pid, 0.0), _proc_cpu(pid))
        return sum(self.last.values())


def _machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


class Node:
    def __init__(self, workdir: Path, mode: str, calibration: Path) -> None:
        self.data_dir = workdir / f"data-{mode}"
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a fresh node each run
        self.data_dir.mkdir(parents=True)
        (self.data_dir / "calibration.json").write_bytes(calibration.read_bytes())
        self.rtmp_port, self.http_port = free_ports(2)
        self.mode = mode
        self.log = workdir / f"serve-{mode}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
        env.update(CASTWAY_ADMIN_TOKEN=TOKEN, CASTWAY_ADMISSION=self.mode,
                   CASTWAY_LOG_JSON="true")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "launch.cli", "serve", "--data-dir",
                 str(self.data_dir), "--rtmp-port", str(self.rtmp_port), "--http-port",
                 str(self.http_port)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env=env)
        wait_for_port(self.http_port, timeout_s=60, proc=self.proc)
        wait_for_port(self.rtmp_port, timeout_s=60, proc=self.proc)

    def create_channel(self, name: str) -> str:
        created = self.api("POST", "/api/v1/channels", {"name": name})
        return str(created["stream_key"]["stream_key"])

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def live(self) -> dict[str, dict[str, Any]]:
        """channel -> its live broadcast (with stats)."""
        return {b["channel"]: b for b in self.api("GET", "/api/v1/broadcasts?state=live")}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_mode(mode: str, workdir: Path, clips: dict[str, Path], calibration: Path, *,
             sources: list[str], max_publishers: int, settle_s: float,
             window_s: float) -> Run:
    node = Node(workdir, mode, calibration)
    node.start()
    assert node.proc is not None
    result = Run(mode)
    publishers: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(max_publishers):
            name = sources[i % len(sources)]
            channel = f"ch{i}"
            key = node.create_channel(channel)
            url = f"rtmp://127.0.0.1:{node.rtmp_port}/live/{key}"
            proc = publisher(clips[name], url, name.endswith(TRACKS))
            publishers.append(proc)
            broadcast = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                broadcast = node.live().get(channel)
                if broadcast is not None and broadcast["stats"].get("ladder"):
                    break
                time.sleep(0.5)
            if proc.poll() is not None or broadcast is None:
                result.stopped_by = f"publish {i + 1} ({name}) refused"
                print(f"{mode}: {result.stopped_by}", file=sys.stderr, flush=True)
                break
            admitted = Admitted(channel, name, broadcast["id"],
                                str(broadcast["stats"]["ladder"]),
                                bool(broadcast["stats"].get("ladder_reduced")))
            result.admitted.append(admitted)
            print(f"{mode}: publish {i + 1} ({name}) admitted with {admitted.ladder}"
                  f"{' (reduced)' if admitted.reduced else ''}", file=sys.stderr, flush=True)
            if admitted.reduced and mode == "reduce":
                result.stopped_by = f"publish {i + 1} ({name}) reduced to {admitted.ladder}"
                break
            time.sleep(settle_s)
        else:
            result.stopped_by = f"{max_publishers} publishers"
        # Steady state: the last join settled, every measured cost in.
        time.sleep(settle_s)
        before = node.live()
        tree = TreeCpu(node.proc.pid)
        cpu0, (busy0, total0) = tree.read(), _machine_busy()
        t0 = time.monotonic()
        while time.monotonic() - t0 < window_s:
            time.sleep(1.0)
            tree.read()
        cpu1, (busy1, total1) = tree.read(), _machine_busy()
        result.window_s = round(time.monotonic() - t0, 1)
        after = node.live()
        cores = os.cpu_count() or 1
        result.node_cpu_share = round((cpu1 - cpu0) / result.window_s / cores, 3)
        result.machine_cpu_share = round((busy1 - busy0) / max(total1 - total0, 1.0), 3)
        for a in result.admitted:
            b0, b1 = before.get(a.channel), after.get(a.channel)
            if b0 is None or b1 is None:
                a.dropped_in_window = float("nan")
                continue
            stats = b1["stats"]
            a.dropped_in_window = float(stats.get("dropped", 0)) - float(
                b0["stats"].get("dropped", 0))
            a.lag_s = float(stats.get("transcoder_lag_s", 0))
            a.cost_estimate = float(stats.get("cost_estimate", 0))
            a.cost_measured = float(stats.get("cost_measured", 0))
            a.cost_error = float(stats.get("cost_error", 0))
        nodes = node.api("GET", "/api/v1/nodes")
        if nodes:
            result.node_cost_capacity = float(nodes[0]["cost_capacity"])
            result.node_cost_used = float(nodes[0]["cost_used"])
    finally:
        for proc in publishers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        node.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="reduce,slots",
                        help="comma-separated runs: reduce, refuse, slots")
    parser.add_argument("--sources", default=",".join(s[0] for s in SOURCES),
                        help="the publishers' sources, in rotation: "
                             f"{', '.join(s[0] for s in SOURCES)}, each also with {TRACKS}")
    parser.add_argument("--max-publishers", type=int, default=8)
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds between joins (and before the window)")
    parser.add_argument("--window", type=float, default=20.0,
                        help="seconds of steady state measured")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="a calibration file to use instead of calibrating first")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="castway-bench-capacity-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sources = args.sources.split(",")
        known = {s[0]: s for s in SOURCES}
        clips: dict[str, Path] = {}
        for name in sources:
            base = name.removesuffix(TRACKS)
            if base not in known:
                parser.error(f"unknown source {name}")
            _, w, h, fps, kbps = known[base]
            clips[name] = (make_tracks_clip(workdir / f"{base}-tracks.mkv", w, h, fps)
                           if name.endswith(TRACKS)
                           else make_clip(workdir / f"{name}.flv", w, h, fps, kbps))
        calibration = args.calibration
        if calibration is None:
            calibration = workdir / "calibration.json"
            subprocess.run([sys.executable, "-m", "launch.cli", "calibrate", "--data-dir",
                            str(workdir)], check=True, stdout=subprocess.DEVNULL)
        runs = [run_mode(mode, workdir, clips, calibration, sources=sources,
                         max_publishers=args.max_publishers,
                         settle_s=args.settle, window_s=args.window)
                for mode in args.modes.split(",")]
        out = {"cores": os.cpu_count(),
               "calibration": json.loads(calibration.read_text()),
               "runs": [{**asdict(r), "all_zero_dropped": r.all_zero_dropped} for r in runs]}
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
