"""``castway bench edge``: what relaying through ``castway edge`` costs, beside nginx-rtmp
relaying the same publishers with ``push`` (the reference a user would pick instead).

One run, on loopback, two phases one after the other (never both loaded at once):

- **castway**: redis-server, one ``castway ingest`` node (``CASTWAY_TRANSCODE=false``: it
  takes the broadcasts and drops the media, so the receiving end costs little) and one
  ``castway edge``. Every publisher has its own channel and stream key in a SQLite
  catalog shared by file; the edge checks it and relays the broadcast to the node.
- **nginx-rtmp**: Debian's nginx with libnginx-mod-rtmp, one worker, an application
  that ``push``-es every stream to the same ingest node (the shared peer script serves
  HLS and has no ``push``, so the bench writes its own config).

In each phase:

1. **Baseline**: the relay's CPU and RSS with nothing published.
2. **Idle delay**: two probe publishers of the bench's own (castway's RTMP client,
   :class:`~ingest.protocol.client.PublisherSession`) send the clip's real FLV tags at
   their own pace, each video frame marked with a sequence number (an H.264 SEI
   user-data NAL unit appended to it: valid H.264, untouched by a relay). One goes
   through the relay, one straight to an RTMP server in the bench process
   (:class:`~ingest.server.IngestServer` with a handler that notes when each frame
   arrives). For castway that server heartbeats as an active transcoding node of the
   edge's own version (the ingest node runs another) while the probe's relay is placed,
   so the edge picks it, and as draining after, so the loaded publishers go to the
   ingest node. Delay of a frame
   = arrival - send, both on the bench's monotonic clock; **added** = the relayed
   probe's median (p95, max) minus the direct one's, over the same seconds.
3. **Load**: N ``ffmpeg -re -stream_loop -1 -c copy`` publishers of the clip (720p30
   H.264 at a constant ~3 Mbit/s with AAC, made once with lavfi testsrc2/sine). Once
   the ingest node's heartbeat counts N broadcasts, and after a warm-up, the relay's
   CPU (/proc/PID/stat utime+stime) and RSS are taken over the window; the probes run
   on, so that window also gives the loaded delay. The probe through the relay is one
   more publisher of the same clip: per-publisher figures divide by N + 1, after the
   baseline is taken off.

Every process is stopped and the temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.kit import free_ports, wait_for_port
from castway.bootstrap import create_channel_with_key
from castway.catalog import open_catalog
from castway.live import open_live_state
from castway.live.base import LiveState
from castway.media import MediaKind, MediaPacket
from castway.model import Node, NodeState, NodeTier
from castway.settings import Settings
from ingest.protocol.client import PublisherSession, PublishStarted, Refused
from ingest.publish import PublishRequest, PublishSession, Rejection
from ingest.server import IngestServer

#: The edge's and the bench's probe node's version; the ingest node runs another, so the
#: edge (same version first, whichever node it packs or spreads to) relays the probe to
#: the bench's node while it is active, and the load to the ingest node once it drains.
VERSION = "bench"
INGEST_VERSION = "bench-node"
INGEST_ID = "bench-ingest"
PROBE_NODE_ID = "bench-probe"
HEARTBEAT_TTL_S = 3.0
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
#: Marks a probe's video frame: an SEI user_data_unregistered NAL unit (H.264 7.3.2.3,
#: D.1.7) with this UUID and the frame's sequence number as 16 decimal digits (no zero
#: bytes, so no emulation prevention is needed).
PROBE_UUID = bytes.fromhex("c4577a7e11ed4e8a9b1ab3e5c4577a7e")
_SEI_BODY = 1 + 1 + 1 + 16 + 16 + 1  # NAL header, type, size, UUID, digits, trailing bits
MARK_SIZE = 4 + _SEI_BODY
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class EdgeBenchError(Exception):
    """A server or tool the benchmark needs did not start or misbehaved."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EdgeBenchError(f"{name} is not installed")
    return path


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the clip and its tags ---------------------------------------------------------------

def make_clip(path: Path, *, seconds: float, kbps: int, fps: int = 30) -> float:
    """A 1280x720 H.264 at ``fps`` (constant ``kbps``, x264 filler data where the
    pattern is too easy, a keyframe every 2 s) + AAC FLV file; returns its measured
    Mbit/s. The relay's cost follows its message rate (frames and audio packets a
    second) far more than its bit rate."""
    cmd = [_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={fps}",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", f"{seconds}", "-c:v", "libx264", "-preset", "veryfast",
           "-tune", "zerolatency", "-pix_fmt", "yuv420p",
           "-g", f"{2 * fps}", "-keyint_min", f"{2 * fps}",
           "-sc_threshold", "0", "-bf", "0", "-b:v", f"{kbps}k", "-minrate", f"{kbps}k",
           "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k", "-x264-params", "nal-hrd=cbr",
           "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise EdgeBenchError(f"ffmpeg could not make the clip: {result.stderr.strip()}")
    return path.stat().st_size * 8 / seconds / 1e6


@dataclass(frozen=True, slots=True)
class Tag:
    """One FLV audio or video tag of the clip (FLV spec E.4.1)."""

    kind: MediaKind
    timestamp_ms: int
    body: bytes

    @property
    def is_config(self) -> bool:
        # AVC sequence header (AVCPacketType 0) or AAC sequence header (AACPacketType 0)
        return len(self.body) > 1 and self.body[1] == 0


def read_flv_tags(data: bytes) -> list[Tag]:
    """The audio and video tags of an FLV file (script data and the AVC end of sequence
    that ends ffmpeg's files left out: the probe loops them)."""
    if data[:3] != b"FLV" or len(data) < 9:
        raise EdgeBenchError("not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4  # header, PreviousTagSize0
    tags: list[Tag] = []
    while pos + 11 <= len(data):
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        body = data[pos + 11:pos + 11 + size]
        pos += 11 + size + 4
        if len(body) < size:
            break
        if tag_type == 8:
            tags.append(Tag(MediaKind.AUDIO, ts, body))
        elif tag_type == 9 and body[1:2] != b"\x02":  # not the AVC end of sequence
            tags.append(Tag(MediaKind.VIDEO, ts, body))
    return tags


def mark(body: bytes, seq: int) -> bytes:
    """A video tag body with the probe's SEI NAL unit (4-byte length prefixed, as in the
    AVCC payload) appended."""
    sei = bytes((0x06, 0x05, 32)) + PROBE_UUID + b"%016d" % seq + b"\x80"
    return body + len(sei).to_bytes(4, "big") + sei


def read_mark(payload: bytes) -> int | None:
    """The sequence number :func:`mark` put at the end of ``payload``, if any."""
    tail = payload[-MARK_SIZE:]
    if len(tail) != MARK_SIZE or tail[4:7] != b"\x06\x05\x20" or tail[7:23] != PROBE_UUID:
        return None
    digits = tail[23:39]
    return int(digits) if digits.isdigit() else None


# --- /proc ---------------------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    """utime + stime of ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    cpu_s: float
    rss: int

    @classmethod
    def of(cls, pid: int) -> Sample:
        return cls(time.monotonic(), cpu_s(pid), rss_bytes(pid))


def cpu_rate(a: Sample, b: Sample) -> float:
    """CPU-seconds per second (a share of one core) between two samples."""
    return (b.cpu_s - a.cpu_s) / max(b.at - a.at, 1e-9)


# --- probes --------------------------------------------------------------------------------

@dataclass
class Arrivals:
    """When each marked video frame arrived, per stream key."""

    by_key: dict[str, dict[int, float]] = field(default_factory=dict)


class _RecordingSession:
    def __init__(self, arrivals: dict[int, float]) -> None:
        self.arrivals = arrivals

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        return None

    async def on_packet(self, packet: MediaPacket) -> None:
        now = time.monotonic()
        if packet.kind is MediaKind.VIDEO and not packet.is_config:
            seq = read_mark(packet.payload)
            if seq is not None:
                self.arrivals.setdefault(seq, now)

    async def on_close(self, reason: str) -> None:
        return None


class RecordingHandler:
    """Takes every publish and notes when each marked frame arrives."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection:
        return _RecordingSession(self.arrivals.by_key.setdefault(request.stream_key, {}))


class Probe:
    """A publisher of the clip's tags at their own pace, noting when it writes each
    marked video frame."""

    def __init__(self, name: str, port: int, app: str, key: str, tags: list[Tag]) -> None:
        self.name = name
        self.port = port
        self.key = key
        self.tags = tags
        self.session = PublisherSession(tc_url=f"rtmp://127.0.0.1:{port}/{app}", app=app,
                                        stream_name=key)
        self.sent: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None
        self.error: str | None = None
        self.started = asyncio.Event()

    async def run(self) -> None:
        try:
            await self._run()
        except (OSError, EdgeBenchError) as exc:
            self.error = str(exc) or type(exc).__name__
            self.started.set()

    async def _run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(self.session.data_to_send())
            while not self.started.is_set():
                data = await reader.read(65536)
                if not data:
                    raise EdgeBenchError(f"{self.name}: closed before publishing")
                for event in self.session.receive_data(data):
                    if isinstance(event, Refused):
                        raise EdgeBenchError(f"{self.name}: refused: {event.code}")
                    if isinstance(event, PublishStarted):
                        self.started.set()
                writer.write(self.session.data_to_send())
            listener = asyncio.create_task(self._listen(reader, writer))
            try:
                await self._send(writer)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _listen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.session.receive_data(data)
            if out := self.session.data_to_send():  # acknowledgements, pongs
                writer.write(out)

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        loop_ms = self.tags[-1].timestamp_ms + 33
        start = time.monotonic()
        seq = 0
        for loop in range(1_000_000):
            for tag in self.tags:
                if tag.is_config and loop:
                    continue
                ts = loop * loop_ms + tag.timestamp_ms
                delay = start + ts / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = tag.body
                marked = tag.kind is MediaKind.VIDEO and not tag.is_config
                if marked:
                    seq += 1
                    body = mark(body, seq)
                self.session.send_media(tag.kind, ts, body)
                if marked:
                    self.sent[seq] = time.monotonic()
                writer.write(self.session.data_to_send())
                await writer.drain()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"probe-{self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def delays_ms(probe: Probe, arrivals: dict[int, float], window: tuple[float, float]
              ) -> tuple[list[float], int]:
    """(arrival - send in ms of the frames sent in ``window``, how many never came)."""
    lo, hi = window
    out: list[float] = []
    lost = 0
    for seq, sent in probe.sent.items():
        if lo <= sent < hi:
            arrived = arrivals.get(seq)
            if arrived is None:
                lost += 1
            else:
                out.append((arrived - sent) * 1000)
    return out, lost


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"frames": 0}
    p95 = statistics.quantiles(values, n=20)[18] if len(values) >= 2 else values[0]
    return {"frames": len(values), "median_ms": round(statistics.median(values), 3),
            "p95_ms": round(p95, 3), "max_ms": round(max(values), 3)}


def delay_report(relayed: Probe, direct: Probe, arrivals: Arrivals,
                 window: tuple[float, float]) -> dict[str, Any]:
    via, via_lost = delays_ms(relayed, arrivals.by_key.get(relayed.key, {}), window)
    straight, straight_lost = delays_ms(direct, arrivals.by_key.get(direct.key, {}), window)
    a, b = summary(via), summary(straight)
    report: dict[str, Any] = {"relayed": {**a, "lost": via_lost},
                              "direct": {**b, "lost": straight_lost}}
    if via and straight:
        report["added"] = {k: round(float(a[k]) - float(b[k]), 3)
                           for k in ("median_ms", "p95_ms", "max_ms")}
    return report


# --- processes -----------------------------------------------------------------------------

def _stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [_tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--logfile",
         str(workdir / "redis.log")], stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=process)
        deadline = time.monotonic() + 15
        while True:  # accepting is not ready: a starting server may answer -LOADING
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise EdgeBenchError("redis-server never answered PING")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


def castway_env(workdir: Path, redis_url: str, name: str, version: str,
                publishers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    # Every publisher comes from 127.0.0.1 and all connect at once: the per-address and
    # pre-authentication caps (DoS limits) would refuse some of them.
    room = str(4 * publishers + 16)
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               CASTWAY_TRANSCODE="false", CASTWAY_REDIS_URL=redis_url,
               CASTWAY_DATABASE_URL=f"sqlite:///{workdir / 'catalog.db'}",
               CASTWAY_STORAGE_URL=str(workdir / "storage"),
               CASTWAY_DATA_DIR=str(workdir / f"{name}-data"), CASTWAY_NODE_ID=name,
               CASTWAY_IMAGE_VERSION=version, CASTWAY_HOST="127.0.0.1",
               CASTWAY_RTMP_PORT="0", CASTWAY_HTTP_PORT="0",
               CASTWAY_HEARTBEAT_TTL_S=str(HEARTBEAT_TTL_S), CASTWAY_RECONNECT_GRACE_S="1",
               CASTWAY_NODE_CAPACITY=room, CASTWAY_EDGE_CAPACITY=room,
               CASTWAY_MAX_CONNECTIONS_PER_IP=room, CASTWAY_RTMP_MAX_PREAUTH_CONNECTIONS=room,
               CASTWAY_LOG_JSON="true")
    return env


def start_castway(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "launch.cli", command], env=env,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)


async def wait_node(live: LiveState, node_id: str, process: subprocess.Popen[bytes],
                    log: Path, *, broadcasts: int = 0, timeout_s: float = 60.0) -> Node:
    """The node's heartbeat, once it is active with at least ``broadcasts``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise EdgeBenchError(f"{node_id} exited ({process.returncode}); see {log}")
        for node in await live.list_nodes():
            if node.id == node_id and node.state == NodeState.ACTIVE \
                    and node.active_broadcasts >= broadcasts:
                return node
        if time.monotonic() > deadline:
            raise EdgeBenchError(f"{node_id} never heartbeat {broadcasts} broadcasts; "
                                 f"see {log}")
        await asyncio.sleep(0.2)


async def until_arriving(arrivals: Arrivals, key: str, what: str,
                         timeout_s: float = 30.0) -> None:
    """Wait until frames of ``key`` arrive at the bench's server (nginx-rtmp starts its
    push a moment after the publish)."""
    deadline = time.monotonic() + timeout_s
    while not arrivals.by_key.get(key):
        if time.monotonic() > deadline:
            raise EdgeBenchError(f"no frame came through the {what} in {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


class ProbeNode:
    """The bench's RTMP server, heartbeating as a transcoding node while ``active``."""

    def __init__(self, live: LiveState, address: str) -> None:
        self.live = live
        self.address = address
        self.state = NodeState.DRAINING
        self._task: asyncio.Task[None] | None = None

    def node(self) -> Node:
        return Node(id=PROBE_NODE_ID, image_version=VERSION, address=self.address,
                    state=self.state, capacity=1000,
                    tier=NodeTier.TRANSCODE)

    async def set_state(self, state: NodeState) -> None:
        self.state = state
        await self.live.heartbeat(self.node(), HEARTBEAT_TTL_S)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_TTL_S / 4)
            await self.live.heartbeat(self.node(), HEARTBEAT_TTL_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="probe-node-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


NGINX_CONF = """load_module {module};
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
rtmp {{
  server {{
    listen 127.0.0.1:{port};
    chunk_size 4096;
    application live {{ live on; push rtmp://{ingest}/live; }}
    application probe {{ live on; push rtmp://{probe}/live; }}
  }}
}}
"""


@contextlib.contextmanager
def nginx_relay(workdir: Path, ingest: str, probe: str) -> Iterator[tuple[int, int]]:
    """nginx-rtmp pushing application ``live`` to ``ingest`` and ``probe`` to
    ``probe``; yields (RTMP port, worker pid)."""
    nginx = _tool("nginx")
    if not NGINX_MODULE.exists():
        raise EdgeBenchError(f"{NGINX_MODULE} is missing (apt-get install libnginx-mod-rtmp)")
    directory = workdir / "nginx"
    directory.mkdir()
    (port,) = free_ports(1)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(module=NGINX_MODULE, dir=directory, port=port,
                                      ingest=ingest, probe=probe))
    subprocess.run([nginx, "-c", str(conf), "-p", str(directory)], check=True,
                   capture_output=True)
    master = int((directory / "nginx.pid").read_text())
    try:
        wait_for_port(port)
        workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                 text=True, check=False).stdout.split()
        if len(workers) != 1:
            raise EdgeBenchError(f"nginx has {len(workers)} workers, not 1")
        yield port, int(workers[0])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{master}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def start_publishers(clip: Path, urls: list[str], log: Path) -> list[subprocess.Popen[bytes]]:
    ffmpeg = _tool("ffmpeg")
    with log.open("ab") as out:
        return [subprocess.Popen([ffmpeg, "-nostdin", "-loglevel", "error", "-re",
                                  "-stream_loop", "-1", "-i", str(clip), "-c", "copy",
                                  "-f", "flv", url], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=out) for url in urls]


# --- one phase -----------------------------------------------------------------------------

@dataclass
class Phase:
    """What one relay (castway edge or nginx-rtmp) is measured with."""

    name: str
    pid: int  # the relay process measured
    port: int  # where publishers connect
    app: str  # the probe's application there
    probe_key: str
    load_keys: list[str]


async def measure_phase(phase: Phase, args: argparse.Namespace, ctx: Context,
                        before_load: Callable[[], Awaitable[None]] | None = None
                        ) -> dict[str, Any]:
    _log(f"{phase.name}: baseline {args.baseline:.0f} s")
    s0 = Sample.of(phase.pid)
    await asyncio.sleep(args.baseline)
    s1 = Sample.of(phase.pid)
    relayed = Probe(f"{phase.name}-probe", phase.port, phase.app, phase.probe_key, ctx.tags)
    direct = Probe(f"{phase.name}-direct", ctx.probe_port, "live", f"direct-{phase.name}",
                   ctx.tags)
    publishers: list[subprocess.Popen[bytes]] = []
    try:
        for probe in (relayed, direct):
            probe.start()
            await asyncio.wait_for(probe.started.wait(), 30)
            if probe.error is not None:
                raise EdgeBenchError(probe.error)
        await until_arriving(ctx.arrivals, relayed.key, f"{phase.name} relay")
        if before_load is not None:
            await before_load()
        _log(f"{phase.name}: idle delay {args.idle:.0f} s")
        idle = (time.monotonic(), time.monotonic() + args.idle)
        await asyncio.sleep(args.idle)
        _log(f"{phase.name}: {args.publishers} publishers")
        publishers = start_publishers(
            ctx.clip, [f"rtmp://127.0.0.1:{phase.port}/live/{k}" for k in phase.load_keys],
            ctx.workdir / f"ffmpeg-{phase.name}.log")
        await wait_node(ctx.live, INGEST_ID, ctx.ingest, ctx.ingest_log,
                        broadcasts=len(phase.load_keys), timeout_s=60)
        await asyncio.sleep(args.warmup)
        _log(f"{phase.name}: measuring {args.duration:.0f} s")
        load_avg0 = os.getloadavg()
        w0 = Sample.of(phase.pid)
        await asyncio.sleep(args.duration)
        w1 = Sample.of(phase.pid)
        loaded = (w0.at, w1.at)
        await asyncio.sleep(1.0)  # the frames sent last are on their way
        node = await wait_node(ctx.live, INGEST_ID, ctx.ingest, ctx.ingest_log)
        alive = sum(1 for p in publishers if p.poll() is None)
        for probe in (relayed, direct):
            if probe.error is not None:
                raise EdgeBenchError(probe.error)
    finally:
        for p in publishers:
            _stop(p, 5)
        await relayed.stop()
        await direct.stop()
    idle_rate = cpu_rate(s0, s1)
    loaded_rate = cpu_rate(w0, w1)
    streams = len(phase.load_keys) + 1  # the probe is one more publisher of the clip
    return {
        "publishers": len(phase.load_keys), "publishers_alive": alive,
        "relayed_at_node": node.active_broadcasts,
        "cpu_idle_core": round(idle_rate, 4), "cpu_loaded_core": round(loaded_rate, 4),
        "cpu_s_per_publisher_s": round((loaded_rate - idle_rate) / streams, 5),
        "rss_idle_mb": round(s1.rss / 1e6, 1), "rss_loaded_mb": round(w1.rss / 1e6, 1),
        "rss_per_publisher_mb": round((w1.rss - s1.rss) / streams / 1e6, 3),
        "load_avg": [round(x, 2) for x in (*load_avg0, *os.getloadavg())],
        "delay_idle": delay_report(relayed, direct, ctx.arrivals, idle),
        "delay_loaded": delay_report(relayed, direct, ctx.arrivals, loaded),
    }


@dataclass
class Context:
    workdir: Path
    clip: Path
    tags: list[Tag]
    live: LiveState
    ingest: subprocess.Popen[bytes]
    ingest_log: Path
    probe_port: int
    arrivals: Arrivals


@contextlib.asynccontextmanager
async def probe_server(arrivals: Arrivals, publishers: int) -> AsyncIterator[IngestServer]:
    settings = Settings(host="127.0.0.1", rtmp_port=0, rtmps_port=0,
                        max_connections_per_ip=4 * publishers + 16,
                        rtmp_max_preauth_connections=4 * publishers + 16)
    server = IngestServer(settings, RecordingHandler(arrivals))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n = args.publishers
    _log(f"making a {args.clip_seconds:.0f} s 720p{args.fps} clip at {args.kbps} kbit/s")
    clip = workdir / "clip.flv"
    mbps = make_clip(clip, seconds=args.clip_seconds, kbps=args.kbps, fps=args.fps)
    tags = read_flv_tags(clip.read_bytes())
    report: dict[str, Any] = {"publishers": n, "duration_s": args.duration,
                              "clip_mbps": round(mbps, 2), "clip_fps": args.fps,
                              "cores": os.cpu_count()}
    catalog_settings = Settings(database_url=f"sqlite:///{workdir / 'catalog.db'}",
                                data_dir=workdir / "bench-data")
    catalog = open_catalog(catalog_settings)
    try:
        keys = {phase: [create_channel_with_key(catalog, f"{phase}-{i}") for i in range(n)]
                for phase in ("edge", "nginx")}
        probe_key = create_channel_with_key(catalog, "edge-probe")
    finally:
        catalog.close()
    with redis_server(workdir) as redis_url:
        live = open_live_state(Settings(redis_url=redis_url))
        env = castway_env(workdir, redis_url, INGEST_ID, INGEST_VERSION, n)
        ingest_log = workdir / "ingest.log"
        ingest = start_castway("ingest", env, ingest_log)
        arrivals = Arrivals()
        try:
            async with probe_server(arrivals, n) as server:
                ingest_node = await wait_node(live, INGEST_ID, ingest, ingest_log)
                ctx = Context(workdir, clip, tags, live, ingest, ingest_log, server.port,
                              arrivals)
                report["castway"] = await _castway_phase(args, ctx, keys["edge"], probe_key,
                                                         redis_url)
                if args.nginx:
                    with nginx_relay(workdir, ingest_node.address,
                                     f"127.0.0.1:{server.port}") as (port, worker):
                        phase = Phase("nginx", worker, port, "probe", "nginx-probe",
                                      keys["nginx"])
                        report["nginx"] = await measure_phase(phase, args, ctx)
        finally:
            _stop(ingest, 30)
            await live.close()
    if "nginx" in report:
        c, g = report["castway"], report["nginx"]
        if g["cpu_s_per_publisher_s"] > 0:
            report["cpu_ratio"] = round(c["cpu_s_per_publisher_s"]
                                        / g["cpu_s_per_publisher_s"], 2)
        if g["rss_per_publisher_mb"] > 0:
            report["rss_ratio"] = round(c["rss_per_publisher_mb"]
                                        / g["rss_per_publisher_mb"], 2)
    return report


async def _castway_phase(args: argparse.Namespace, ctx: Context, load_keys: list[str],
                         probe_key: str, redis_url: str) -> dict[str, Any]:
    env = castway_env(ctx.workdir, redis_url, "bench-edge", VERSION, args.publishers)
    log = ctx.workdir / "edge.log"
    edge = start_castway("edge", env, log)
    probe_node = ProbeNode(ctx.live, f"127.0.0.1:{ctx.probe_port}")
    try:
        edge_node = await wait_node(ctx.live, "bench-edge", edge, log)
        port = int(edge_node.address.rpartition(":")[2])
        # The edge places the probe's relay on the bench's node, which then says it drains
        # so that the loaded publishers go to the ingest node.
        await probe_node.set_state(NodeState.ACTIVE)
        probe_node.start()

        async def drain_probe_node() -> None:
            await probe_node.set_state(NodeState.DRAINING)

        phase = Phase("castway", edge.pid, port, "live", probe_key, load_keys)
        return await measure_phase(phase, args, ctx, before_load=drain_probe_node)
    finally:
        await probe_node.stop()
        _stop(edge)


# --- output --------------------------------------------------------------------------------

def _fmt_delay(d: dict[str, Any]) -> str:
    r, x = d["relayed"], d["direct"]
    added = d.get("added")
    if not added:
        return "no frames"
    return (f"relayed {r['median_ms']:.1f}/{r['p95_ms']:.1f}/{r['max_ms']:.1f}, direct "
            f"{x['median_ms']:.1f}/{x['p95_ms']:.1f}/{x['max_ms']:.1f} -> added "
            f"{added['median_ms']:+.1f}/{added['p95_ms']:+.1f}/{added['max_ms']:+.1f} ms "
            f"({r['frames']} frames, {r['lost']} lost)")


def format_report(report: dict[str, Any]) -> str:
    n = report["publishers"]
    lines = [f"{n} publishers + 1 probe, clip {report['clip_mbps']:.2f} Mbit/s "
             f"720p{report['clip_fps']}, "
             f"{report['duration_s']:.0f} s window, {report['cores']} cores",
             "",
             f"{'relay':<9} {'alive':>6} {'at node':>8} {'idle %core':>11} "
             f"{'loaded %core':>13} {'CPU s/pub/s':>12} {'%core/pub':>10} "
             f"{'RSS MB':>7} {'MB/pub':>7}"]
    for name in ("castway", "nginx"):
        r = report.get(name)
        if r is None:
            continue
        lines.append(f"{name:<9} {r['publishers_alive']:>3}/{n:<2} {r['relayed_at_node']:>8} "
                     f"{100 * r['cpu_idle_core']:>11.2f} {100 * r['cpu_loaded_core']:>13.1f} "
                     f"{r['cpu_s_per_publisher_s']:>12.5f} "
                     f"{100 * r['cpu_s_per_publisher_s']:>10.3f} "
                     f"{r['rss_loaded_mb']:>7.1f} {r['rss_per_publisher_mb']:>7.3f}")
    if "cpu_ratio" in report:
        lines.append(f"castway / nginx-rtmp: CPU {report['cpu_ratio']:.2f}x, "
                     f"RSS per publisher {report.get('rss_ratio', float('nan')):.2f}x")
    lines += ["", "added delay, publisher write -> transcoding node (median/p95/max, ms):"]
    for name in ("castway", "nginx"):
        r = report.get(name)
        if r is None:
            continue
        lines.append(f"  {name:<8} idle:   {_fmt_delay(r['delay_idle'])}")
        lines.append(f"  {name:<8} loaded: {_fmt_delay(r['delay_loaded'])}")
        lines.append(f"  {name:<8} load average before/after the window: "
                     f"{r['load_avg'][:3]} / {r['load_avg'][3:]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench edge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publishers", type=int, default=20,
                        help="ffmpeg publishers through each relay (default 20)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of the loaded measuring window (default 30)")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds of the idle delay window (default 10)")
    parser.add_argument("--baseline", type=float, default=3.0,
                        help="seconds of the relay's idle CPU (default 3)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds after the publishers are relayed, before the "
                        "window (default 5)")
    parser.add_argument("--kbps", type=int, default=3000, help="clip video bitrate")
    parser.add_argument("--fps", type=int, default=30, help="clip frame rate")
    parser.add_argument("--clip-seconds", type=float, default=10.0,
                        help="clip length (looped; default 10)")
    parser.add_argument("--no-nginx", dest="nginx", action="store_false",
                        help="skip nginx-rtmp")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="castway-edge.") as tmp:
        try:
            report = asyncio.run(measure(args, Path(tmp)))
        except EdgeBenchError as exc:
            print(f"castway bench edge: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
