"""``castway bench soak --minutes N``: the reliability soak.

A real ``castway serve`` (embedded mode) in its own data directory, real ffmpeg
publishers on several channels joining, reconnecting within the grace window and leaving,
hostile clients throughout (HTTP connections that never finish their headers, garbage
RTMP bytes, publishes with a wrong key, bad LL-HLS query values), and one fault every
minute in turn: a transcoder child SIGKILLed, ``castway serve`` stopped with SIGINT,
a burst of hostile clients, ``castway serve`` SIGKILLed (each stopped server is started
again at once on the same data directory, as a supervisor would).

At the end every broadcast the catalog knows must have a complete VOD covering what was
published to it (less a bounded tail per session: the keyframe the first segment waits
for and, after a SIGKILL, the segment in progress), no transcoder child may outlive its
server, and the server's RSS and open file descriptors must not grow over an
incarnation's life once its bounded caches are full (:func:`settled_growth`: the first
third of a life is the fill, the last third is compared with the middle one; a life
shorter than :data:`JUDGE_AFTER_S` is too short to judge). Faults of Redis, S3 and
PostgreSQL need the distributed mode; their tests are in ``tests/reliability`` and
``tests/archiver`` (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.kit import free_port, wait_for_port
from castway.pids import pid_alive

TARGET_SEGMENT_S = 1.0
GRACE_S = 3.0
FAULT_EVERY_S = 60.0
FAULTS = ("transcoder-kill", "serve-sigint", "hostile-burst", "serve-sigkill")
SESSION_TAIL_S = 2 * TARGET_SEGMENT_S + 1.0  # first keyframe wait + the segment in progress
# What a SIGKILL cuts: the publisher's packets still in the sockets (what the server had
# received is salvaged from its source journal at the next start).
KILL_TAIL_S = 0.5
# A crashed transcoder child's successor redoes what it had in progress from a replay
# (transcoder/replay.py): a crash costs nothing.
TRANSCODER_CRASH_S = 0.0
SAMPLE_EVERY_S = 5.0
# A serve process fills bounded holders for its first minutes: the live media (a TTL of
# about a minute, a byte budget), the replay buffers since each oldest open segment, the
# allocator's arenas and libav's pools at their high-water marks. Memory is judged on a
# life long enough for a third of it to cover that fill, and growth after it is growth.
JUDGE_AFTER_S = 9 * 60.0
# The most a settled quantity may grow from the middle third of a life to the last
# (medians: a hostile burst's held sockets, or one GC cycle, do not move them). Fixed
# before the 45-minute measurement (BENCHMARKS.md), not fitted to it.
FLAT_RSS = 1.05
FLAT_FDS = 1.10
SERIES_EVERY_S = 60.0  # the time series kept in the result (one sample a minute)


@dataclass
class Session:
    """One ffmpeg publisher run."""

    channel: str
    started: datetime
    ended: datetime | None = None
    cut_by_kill: bool = False
    transcoder_crashes: int = 0  # transcoder SIGKILLs while it ran (of any channel)
    # When the server it published to was stopped or killed: its connection ended then,
    # although ffmpeg is only seen gone at the next tick, after the server's restart.
    cut_at: datetime | None = None

    @property
    def published_until(self) -> datetime | None:
        if self.cut_at is not None and self.ended is not None:
            return min(self.cut_at, self.ended)
        return self.ended


@dataclass
class Incarnation:
    """One life of the ``castway serve`` process: samples of its RSS and fds."""

    pid: int
    started: float
    rss_kib: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    children_left: int = 0  # transcoder children alive 10 s after it stopped
    how_it_ended: str = ""
    # One a minute: seconds into the life, RSS, fds by kind, what the live state holds.
    series: list[dict[str, object]] = field(default_factory=list)


def _proc_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors by what they are: socket, pipe, anon_inode:..., or a file by its
    suffix (a leak shows as one kind that only grows)."""
    kinds: dict[str, int] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            kind = target.split(":", 1)[0]
        elif target.startswith("anon_inode:"):
            kind = target.strip("[]").replace("[", "")
        elif target.startswith("/dev/"):
            kind = "dev"
        else:
            kind = "file" + (Path(target).suffix or "")
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def _live_holdings(base: str) -> dict[str, float]:
    """``castway_live_*`` from the server's /metrics ({} if it does not answer)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        if line.startswith("castway_live_"):
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                found[name.removeprefix("castway_live_")] = float(value)
    return found


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]



class Server:
    """``castway serve`` as a subprocess on fixed ports, restartable on one data dir."""

    def __init__(self, data_dir: Path, log: Path, trace_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.log = log
        self.trace_dir = trace_dir
        self.rtmp_port, self.http_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnations: list[Incarnation] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
        env.update(CASTWAY_RECONNECT_GRACE_S=str(GRACE_S), CASTWAY_LOG_JSON="true",
                   CASTWAY_TARGET_SEGMENT_S=str(TARGET_SEGMENT_S),
                   CASTWAY_HEARTBEAT_TTL_S="10", CASTWAY_ARCHIVE_RECONCILE_INTERVAL_S="10")
        if self.trace_dir is not None:
            env["CASTWAY_DEBUG_TRACEMALLOC_DIR"] = str(self.trace_dir)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "launch.cli", "serve", "--data-dir",
                 str(self.data_dir), "--rtmp-port", str(self.rtmp_port), "--http-port",
                 str(self.http_port)], env=env, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL)
        wait_for_port(self.http_port, timeout_s=60)
        wait_for_port(self.rtmp_port, timeout_s=60)
        self.incarnations.append(Incarnation(self.proc.pid, time.monotonic()))

    def sample(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        rss, fds = _proc_rss_kib(self.proc.pid), _proc_fds(self.proc.pid)
        if rss is None or fds is None:
            return
        life = self.incarnations[-1]
        life.rss_kib.append(rss)
        life.fds.append(fds)
        age = time.monotonic() - life.started
        if not life.series or age >= float(str(life.series[-1]["t_s"])) + SERIES_EVERY_S:
            life.series.append({"t_s": round(age), "rss_mib": round(rss / 1024, 1),
                                "fds": fds, "fd_kinds": _fd_kinds(self.proc.pid),
                                "live": _live_holdings(self.base)})

    def stop(self, how: str) -> None:
        """``how``: "sigint" (graceful) or "sigkill"; waits, then checks its children."""
        proc = self.proc
        if proc is None:
            return
        children = _children(proc.pid)
        if how == "sigkill":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            how += " (killed after 60 s)"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_alive(c) for c in children):
            time.sleep(0.2)
        left = [c for c in children if pid_alive(c)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.incarnations[-1].children_left = len(left)
        self.incarnations[-1].how_it_ended = how
        self.proc = None

    def transcoders(self) -> list[int]:
        """The server's transcoder children (not multiprocessing's resource tracker)."""
        if self.proc is None:
            return []
        found = []
        for pid in _children(self.proc.pid):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    found.append(pid)
        return found

    def kill_a_transcoder(self) -> bool:
        transcoders = self.transcoders()
        if not transcoders:
            return False
        os.kill(random.choice(transcoders), signal.SIGKILL)
        return True


class Publishers:
    """One ffmpeg publisher at a time per channel, in sessions of random length."""

    def __init__(self, clip: Path, keys: dict[str, str], server: Server,
                 rng: random.Random) -> None:
        self.clip = clip
        self.keys = keys
        self.server = server
        self.rng = rng
        self.sessions: list[Session] = []
        self._running: dict[str, tuple[subprocess.Popen[bytes], Session, float]] = {}
        self._next_start: dict[str, float] = dict.fromkeys(keys, time.monotonic())

    def tick(self) -> None:
        now = time.monotonic()
        for channel, (proc, _session, until) in list(self._running.items()):
            if proc.poll() is not None or now >= until:
                self._end(channel)
                # Reconnect within the grace window (same broadcast), or leave for longer.
                gap = 1.0 if self.rng.random() < 0.4 else self.rng.uniform(GRACE_S + 2, 20)
                self._next_start[channel] = now + gap
        for channel in self.keys:
            if channel not in self._running and now >= self._next_start[channel]:
                self._start(channel, duration_s=self.rng.uniform(20, 90))

    def _start(self, channel: str, duration_s: float) -> None:
        url = f"rtmp://127.0.0.1:{self.server.rtmp_port}/live/{self.keys[channel]}"
        proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "quiet", "-re", "-stream_loop", "-1", "-i",
             str(self.clip), "-c", "copy", "-f", "flv", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        session = Session(channel, datetime.now(UTC))
        self.sessions.append(session)
        self._running[channel] = (proc, session, time.monotonic() + duration_s)

    def _end(self, channel: str) -> None:
        proc, session, _ = self._running.pop(channel)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        session.ended = datetime.now(UTC)

    def server_stopping(self, *, killed: bool) -> None:
        now = datetime.now(UTC)
        for _, session, _ in self._running.values():
            session.cut_at = now
            session.cut_by_kill = killed

    def transcoder_killed(self) -> None:
        for _, session, _ in self._running.values():
            session.transcoder_crashes += 1

    def stop_all(self) -> None:
        for channel in list(self._running):
            self._end(channel)


def hostile_clients(server: Server, rng: random.Random, count: int) -> int:
    """Misbehaving clients; returns how many were sent. Never waits on the server."""
    sent = 0
    for _ in range(count):
        kind = rng.choice(("slowloris", "rtmp-garbage", "bad-msn", "bad-key"))
        try:
            if kind == "slowloris":
                s = socket.create_connection(("127.0.0.1", server.http_port), timeout=2)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                threading.Timer(30.0, s.close).start()  # held open, never finished
            elif kind == "rtmp-garbage":
                with socket.create_connection(("127.0.0.1", server.rtmp_port), timeout=2) as s:
                    s.sendall(b"\x03" + rng.randbytes(1536) + rng.randbytes(rng.randint(1, 9000)))
            elif kind == "bad-msn":
                with socket.create_connection(("127.0.0.1", server.http_port), timeout=2) as s:
                    s.sendall("GET /hls/ch0/source/index.m3u8?_HLS_msn=\u00b2 HTTP/1.1\r\n"
                              "Host: x\r\nConnection: close\r\n\r\n".encode())
                    s.settimeout(5)
                    with contextlib.suppress(OSError):
                        s.recv(4096)
            else:
                subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "quiet", "-re", "-f",
                                  "lavfi", "-i", "testsrc2=size=160x90:rate=15", "-t", "3",
                                  "-f", "flv",
                                  f"rtmp://127.0.0.1:{server.rtmp_port}/live/cw_wrong-key"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            sent += 1
        except OSError:
            pass  # the server is between incarnations
    return sent


@dataclass
class BroadcastCheck:
    id: str
    channel: str
    state: str
    vod: str  # "complete", "pending", "missing"
    published_s: float
    vod_s: float
    allowed_short_s: float

    @property
    def short(self) -> bool:
        return self.vod_s < self.published_s - self.allowed_short_s


def check_broadcasts(data_dir: Path, sessions: list[Session]) -> list[BroadcastCheck]:
    from castway.catalog import open_catalog
    from castway.settings import Settings

    catalog = open_catalog(Settings(data_dir=data_dir))
    try:
        checks = []
        for b in sorted(catalog.list_broadcasts(limit=100_000), key=lambda b: b.started_at):
            vod = catalog.get_vod(b.id)
            end = b.ended_at or datetime.now(UTC)
            overlapping = [s for s in sessions if s.channel == b.channel
                           and (until := s.published_until) is not None
                           and s.started < end and until > b.started_at]
            published = sum((min(s.published_until or end, end)
                             - max(s.started, b.started_at)).total_seconds()
                            for s in overlapping)
            allowed = sum(SESSION_TAIL_S + (KILL_TAIL_S if s.cut_by_kill else 0.0)
                          + TRANSCODER_CRASH_S * s.transcoder_crashes for s in overlapping)
            checks.append(BroadcastCheck(
                b.id, b.channel, b.state.value, vod.state.value if vod else "missing",
                round(max(0.0, published), 1), round(vod.duration_s if vod else 0.0, 1),
                round(allowed, 1)))
        return checks
    finally:
        catalog.close()


@dataclass
class SoakResult:
    minutes: float
    channels: int
    seed: int
    sessions: int
    broadcasts: int
    vods_missing: int
    vods_short: int
    faults: list[dict[str, object]]
    hostile_clients: int
    children_left: int
    incarnations: list[dict[str, object]]
    problems: list[dict[str, object]]
    checks: list[dict[str, object]]  # every broadcast: published vs VOD seconds
    # With --trace-memory: the longest life's Python heap over time, and the lines whose
    # allocations grew most from a third into it to its end.
    heap: dict[str, object] | None = None

    @property
    def ok(self) -> bool:
        return (self.vods_missing == 0 and self.vods_short == 0 and self.children_left == 0
                and all(i["memory"] != "grows" for i in self.incarnations))


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2])


@dataclass(frozen=True, slots=True)
class Growth:
    """How a quantity sampled every :data:`SAMPLE_EVERY_S` moved over one life."""

    first_third: float  # medians of each third
    middle_third: float
    last_third: float
    slope_per_h: float  # least squares over the last half, units per hour

    @property
    def settled(self) -> float:
        """Last third over the middle third: growth once the bounded caches are full."""
        return self.last_third / max(1.0, self.middle_third)


def settled_growth(samples: list[int]) -> Growth | None:
    """The quantity's growth after its fill (None: a life shorter than
    :data:`JUDGE_AFTER_S` is too short to tell a fill from a leak)."""
    if len(samples) * SAMPLE_EVERY_S < JUDGE_AFTER_S:
        return None
    third = len(samples) // 3
    half = samples[len(samples) // 2:]
    xs = [i * SAMPLE_EVERY_S / 3600 for i in range(len(half))]
    mean_x, mean_y = sum(xs) / len(xs), sum(half) / len(half)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, half, strict=True))
             / sum((x - mean_x) ** 2 for x in xs))
    return Growth(_median(samples[:third]), _median(samples[third:2 * third]),
                  _median(samples[2 * third:]), slope)


def judge(life: Incarnation) -> dict[str, object]:
    """One life's memory figures and verdict: "flat", "grows" or "too short"."""
    rss, fds = settled_growth(life.rss_kib), settled_growth(life.fds)
    figures: dict[str, object] = {
        "pid": life.pid, "ended": life.how_it_ended,
        "seconds": len(life.rss_kib) * SAMPLE_EVERY_S,
        "rss_mib_first": round(life.rss_kib[0] / 1024, 1),
        "rss_mib_max": round(max(life.rss_kib) / 1024, 1),
        "fds_first": life.fds[0], "fds_max": max(life.fds)}
    if rss is None or fds is None:
        return {**figures, "memory": "too short"}
    grows = rss.settled > FLAT_RSS or fds.settled > FLAT_FDS
    return {**figures, "memory": "grows" if grows else "flat",
            "rss_mib_thirds": [round(v / 1024, 1) for v in
                               (rss.first_third, rss.middle_third, rss.last_third)],
            "rss_growth": round(rss.settled, 3),
            "rss_mib_per_h_last_half": round(rss.slope_per_h / 1024, 1),
            "fds_thirds": [fds.first_third, fds.middle_third, fds.last_third],
            "fds_growth": round(fds.settled, 3),
            "fds_per_h_last_half": round(fds.slope_per_h, 1),
            "series": life.series}


def heap_growth(trace_dir: Path, pid: int) -> dict[str, object] | None:
    """One life's heap snapshots (castway/memtrace.py): traced KiB over time, and the
    top growth from the snapshot a third into the life to the last."""
    from castway.memtrace import growth, heap_kib

    snapshots = sorted(trace_dir.glob(f"heap-{pid}-*.tracemalloc"))
    if len(snapshots) < 3:
        return None
    start = snapshots[len(snapshots) // 3]
    return {"pid": pid,
            "traced_kib": [[round(int(p.stem.rsplit("-", 1)[1]) / 1000), heap_kib(p)]
                           for p in snapshots],
            "from_s": round(int(start.stem.rsplit("-", 1)[1]) / 1000),
            "top_growth": [asdict(g) for g in growth(start, snapshots[-1])]}


def run(minutes: float, channels: int, seed: int, workdir: Path,
        faults_to_inject: tuple[str, ...] = FAULTS,
        trace_dir: Path | None = None) -> SoakResult:
    rng = random.Random(seed)
    data_dir = workdir / "data"
    clip = workdir / "clip.flv"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000", "-t", "10", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "30", "-keyint_min", "30", "-bf", "0",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(clip)], check=True)
    keys: dict[str, str] = {}
    for i in range(channels):
        created = subprocess.run([sys.executable, "-m", "launch.cli", "channels", "create",
                                  f"ch{i}", "--json", "--data-dir", str(data_dir)],
                                 capture_output=True, text=True, check=True)
        keys[f"ch{i}"] = json.loads(created.stdout)["stream_key"]
    server = Server(data_dir, workdir / "serve.log", trace_dir)
    server.start()
    publishers = Publishers(clip, keys, server, rng)
    faults: list[dict[str, object]] = []
    hostile = 0
    started = time.monotonic()
    next_fault = started + FAULT_EVERY_S
    next_sample = started
    next_hostile = started
    try:
        while time.monotonic() - started < minutes * 60:
            publishers.tick()
            now = time.monotonic()
            if now >= next_sample:
                server.sample()
                next_sample = now + SAMPLE_EVERY_S
            if now >= next_hostile:
                hostile += hostile_clients(server, rng, 2)
                next_hostile = now + 5.0
            if now >= next_fault:
                kind = faults_to_inject[len(faults) % len(faults_to_inject)]
                at = round(now - started, 1)
                if kind == "transcoder-kill":
                    done = server.kill_a_transcoder()
                    if done:
                        publishers.transcoder_killed()
                elif kind == "hostile-burst":
                    hostile += hostile_clients(server, rng, 200)
                    done = True
                else:
                    publishers.server_stopping(killed=kind == "serve-sigkill")
                    server.stop("sigkill" if kind == "serve-sigkill" else "sigint")
                    server.start()
                    done = True
                faults.append({"at_s": at, "fault": kind, "injected": done})
                next_fault = now + FAULT_EVERY_S
            time.sleep(0.5)
    finally:
        publishers.stop_all()
        server.stop("sigint")
    # A last start: its sweep finishes whatever the last stop left (it should be nothing).
    server.start()
    deadline = time.monotonic() + 120
    checks = check_broadcasts(data_dir, publishers.sessions)
    while time.monotonic() < deadline and any(c.vod != "complete" for c in checks
                                              if c.published_s > 0):
        time.sleep(2)
        checks = check_broadcasts(data_dir, publishers.sessions)
    server.stop("sigint")
    with_media = [c for c in checks if c.published_s > 0]
    missing = [c for c in with_media if c.vod != "complete"]
    short = [c for c in with_media if c.vod == "complete" and c.short]
    lives = [i for i in server.incarnations if i.rss_kib]
    return SoakResult(
        minutes=minutes, channels=channels, seed=seed, sessions=len(publishers.sessions),
        broadcasts=len(with_media), vods_missing=len(missing), vods_short=len(short),
        faults=faults, hostile_clients=hostile,
        children_left=sum(i.children_left for i in server.incarnations),
        incarnations=[judge(i) for i in lives],
        problems=[asdict(c) for c in missing + short],
        checks=[asdict(c) for c in checks],
        heap=heap_growth(trace_dir, max(lives, key=lambda i: len(i.rss_kib)).pid)
        if trace_dir is not None and lives else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="the faults injected in turn, one a minute (default: all of "
                             "them; without the serve-* ones a single server runs the "
                             "whole soak, for its RSS and descriptors over time)")
    parser.add_argument("--trace-memory", type=Path, metavar="DIR",
                        help="the server traces Python allocations and writes heap "
                             "snapshots to DIR (CASTWAY_DEBUG_TRACEMALLOC_DIR): the result "
                             "names the lines that grew (slower, and more memory)")
    args = parser.parse_args(argv)
    chosen = tuple(f for f in args.faults.split(",") if f)
    if not chosen or set(chosen) - set(FAULTS):
        parser.error(f"--faults: a comma-separated list of {', '.join(FAULTS)}")
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is required for the soak", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="castway-soak-"))
    try:
        result = run(args.minutes, args.channels, args.seed, workdir, chosen,
                     args.trace_memory.resolve() if args.trace_memory else None)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(f"soak {args.minutes:g} min, {args.channels} channels, seed {args.seed}: "
              f"{result.sessions} publisher sessions, {result.broadcasts} broadcasts, "
              f"{len(result.faults)} faults, {result.hostile_clients} hostile clients")
        print(f"VODs missing {result.vods_missing}, short {result.vods_short}, "
              f"transcoder children left behind {result.children_left}")
        for life in result.incarnations:
            print(f"  serve pid {life['pid']} ({life['seconds']} s, ended {life['ended']}): "
                  f"RSS {life['rss_mib_first']} -> max {life['rss_mib_max']} MiB, fds "
                  f"{life['fds_first']} -> max {life['fds_max']}: memory {life['memory']}")
            if life["memory"] != "too short":
                print(f"    medians of each third: RSS {life['rss_mib_thirds']} MiB "
                      f"(last/middle x{life['rss_growth']}, last half "
                      f"{life['rss_mib_per_h_last_half']} MiB/h), fds {life['fds_thirds']} "
                      f"(x{life['fds_growth']}, {life['fds_per_h_last_half']}/h)")
        if result.heap is not None:
            print(f"  Python heap of pid {result.heap['pid']} (traced KiB at seconds): "
                  f"{result.heap['traced_kib']}")
            print(f"  grew most from {result.heap['from_s']} s to the end:")
            for site in result.heap["top_growth"]:  # type: ignore[attr-defined]
                print(f"    {site}")
        for problem in result.problems:
            print(f"  PROBLEM {problem}")
        print("PASS" if result.ok else "FAIL")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
