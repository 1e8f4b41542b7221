"""The ingest node's stop: an IngestNode drained by the scheduler asks E-RTMP v2
reconnect-capable publishers to move to the load-balanced URL; and `castway ingest` as
ECS runs it, a real process (Redis live state, SQLite catalog, file storage) fed by a
real ffmpeg publisher. SIGTERM drains: new publishes are refused, the running broadcast
goes on to its end, and the process exits 0 after it -- or, past ``stop_timeout_s``,
cuts what is left and says so. A second signal stops at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from castway.keys import hash_stream_key
from castway.live import open_live_state
from castway.model import Channel, Node, NodeState, StreamKey
from castway.settings import Settings
from launch.ingest_node import IngestNode, start_health_listener
from launch.services import Services
from tests.ingest.helpers import AsyncTestPublisher
from tests.ingest.reconnect_client import ReconnectingPublisher
from tests.support import free_port, free_ports, make_test_media, require_tool, wait_for_port


class LogWatcher:
    """Reads a process's stderr on a thread; tests wait for a line to appear."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(text in line for line in self.lines), timeout)
            assert ok, f"no log line with {text!r} in:\n{self.text()}"
            return next(line for line in self.lines if text in line)

    def has(self, text: str) -> bool:
        with self._cond:
            return any(text in line for line in self.lines)

    def text(self) -> str:
        return "".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=10)


class IngestProcess:
    def __init__(self, tmp_path: Path, redis_url: str, stop_timeout_s: float) -> None:
        self.data_dir = tmp_path / "data"
        self.rtmp_port, self.http_port = free_ports(2)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
        self.env.update(CASTWAY_REDIS_URL=redis_url, CASTWAY_TRANSCODE="false",
                        CASTWAY_LOG_JSON="true", CASTWAY_RECONNECT_GRACE_S="1",
                        CASTWAY_STOP_TIMEOUT_S=str(stop_timeout_s),
                        CASTWAY_NODE_ID="ingest-under-test")
        self.proc: subprocess.Popen[str] | None = None
        self.log: LogWatcher | None = None

    def create_channel(self, name: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "launch.cli", "channels", "create", name, "--json",
             "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, timeout=60, env=self.env, check=False)
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["stream_key"])

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launch.cli", "ingest", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--rtmp-port", str(self.rtmp_port),
             "--http-port", str(self.http_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env)
        self.log = LogWatcher(self.proc.stderr)
        wait_for_port(self.rtmp_port, timeout_s=60, proc=self.proc)  # type: ignore[arg-type]
        self.log.wait_for("ingest node up")

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log is not None:
            self.log.join()


def _nodes(redis_url: str) -> list[Node]:
    async def read() -> list[Node]:
        live = open_live_state(Settings(redis_url=redis_url))
        try:
            return await live.list_nodes()
        finally:
            await live.close()
    return asyncio.run(read())


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """3 s of tiny H.264 + AAC."""
    return make_test_media(tmp_path / "clip.flv", seconds=3.0, width=320, height=180, fps=15)


def _publish(ffmpeg: str, clip: Path, url: str, *, loop: bool = False,
             ) -> subprocess.Popen[str]:
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-re"]
    if loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-i", str(clip), "-c", "copy", "-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_refuses_new_publishes_and_waits_for_the_broadcast_to_end(
        tmp_path: Path, redis_url: str, clip: Path,
        processes: list[subprocess.Popen[str]]) -> None:
    ffmpeg = require_tool("ffmpeg")
    node = IngestProcess(tmp_path, redis_url, stop_timeout_s=60)
    first_key, second_key = node.create_channel("first"), node.create_channel("second")
    node.start()
    assert node.proc is not None and node.log is not None
    try:
        first = _publish(ffmpeg, clip, node.url(first_key))
        processes.append(first)
        node.log.wait_for("broadcast started")
        node.terminate()
        node.log.wait_for("waiting for 1 broadcast(s) to end, up to 60 s")
        # The scheduler sees the node draining at once (heartbeat sent before the wait).
        [record] = _nodes(redis_url)
        assert (record.id, record.state) == ("ingest-under-test", NodeState.DRAINING)
        assert record.active_broadcasts == 1 and record.reconnectable == 0  # ffmpeg 5.1

        second = subprocess.run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
             "-f", "flv", node.url(second_key)],
            capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode != 0
        refused = node.log.wait_for("publish refused by admission")
        assert "ingest node is draining" in refused

        # The first runs to its end; the node exits 0 right after, well within the timeout.
        assert first.wait(timeout=30) == 0, first.stderr.read() if first.stderr else ""
        ended_at = time.monotonic()
        assert node.proc.wait(timeout=30) == 0
        assert time.monotonic() - ended_at < 20
        node.log.join()
        assert node.log.has("every broadcast ended")
        assert not node.log.has("cutting")
        assert [n.state for n in _nodes(redis_url)] == [NodeState.STOPPED]
    finally:
        node.stop()


def test_the_stop_timeout_cuts_a_long_broadcast_and_says_so(
        tmp_path: Path, redis_url: str, clip: Path,
        processes: list[subprocess.Popen[str]]) -> None:
    ffmpeg = require_tool("ffmpeg")
    node = IngestProcess(tmp_path, redis_url, stop_timeout_s=1)
    key = node.create_channel("long")
    node.start()
    assert node.proc is not None and node.log is not None
    try:
        publisher = _publish(ffmpeg, clip, node.url(key), loop=True)
        processes.append(publisher)
        node.log.wait_for("broadcast started")
        signalled_at = time.monotonic()
        node.terminate()
        assert node.proc.wait(timeout=30) == 0
        assert time.monotonic() - signalled_at < 15
        node.log.join()
        assert node.log.has("stop timeout: cutting 1 broadcast(s) still publishing")
        assert publisher.poll() is None or publisher.returncode != 0  # it did not end
    finally:
        node.stop()


def test_a_second_signal_stops_at_once(
        tmp_path: Path, redis_url: str, clip: Path,
        processes: list[subprocess.Popen[str]]) -> None:
    ffmpeg = require_tool("ffmpeg")
    node = IngestProcess(tmp_path, redis_url, stop_timeout_s=110)
    key = node.create_channel("impatient")
    node.start()
    assert node.proc is not None and node.log is not None
    try:
        processes.append(_publish(ffmpeg, clip, node.url(key), loop=True))
        node.log.wait_for("broadcast started")
        node.terminate()
        node.log.wait_for("waiting for 1 broadcast(s) to end, up to 110 s")
        signalled_at = time.monotonic()
        node.proc.send_signal(signal.SIGINT)
        assert node.proc.wait(timeout=30) == 0
        assert time.monotonic() - signalled_at < 15
        node.log.join()
        assert node.log.has("second stop signal: cutting 1 broadcast(s)")
    finally:
        node.stop()


async def test_a_drained_node_asks_reconnect_capable_publishers_to_move(
        tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "data", host="127.0.0.1", rtmp_port=port,
                        transcode=False, node_id="node-x", reconnect_grace_s=30.0,
                        heartbeat_ttl_s=1.5,  # the agent reads its commands every 0.5 s
                        public_rtmp_url=f"rtmp://127.0.0.1:{port}/live")
    services = Services.open(settings)
    services.catalog.create_channel(Channel("alpha"))
    services.catalog.add_stream_key(StreamKey("alpha", hash_stream_key("cw_alpha-key")))
    node = IngestNode(services)
    await node.start()
    pub = ReconnectingPublisher("cw_alpha-key")
    try:
        await pub.start(f"rtmp://127.0.0.1:{node.rtmp_port}/live")
        await pub.send_frame()
        broadcast_id = node.manager.broadcast_id("alpha")
        assert broadcast_id is not None
        assert node.agent.snapshot().reconnectable == 1  # what the scheduler sees

        await services.live.set_node_command("node-x", "drain")  # the scheduler's order
        assert await pub.wait_for_reconnect_request() == settings.effective_public_rtmp_url
        assert node.agent.state is NodeState.DRAINING
        # Here the "load balancer" is this node again: back within the grace window,
        # the same broadcast continues (only new broadcasts are refused while draining).
        await pub.send_frame()
        assert node.manager.broadcast_id("alpha") == broadcast_id
        assert node.server.active_publishers == 1
    finally:
        await pub.close()
        await node.stop()
        await services.close()


async def test_the_ingest_health_listener_shows_connections_fds_tasks_and_memory(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", host="127.0.0.1", rtmp_port=0,
                        http_port=0, transcode=False, node_id="node-m")
    services = Services.open(settings)
    node = IngestNode(services)
    await node.start()
    http = await start_health_listener(node)
    pubs = [await AsyncTestPublisher.open(node.rtmp_port) for _ in range(2)]
    try:
        for pub in pubs:
            await pub.handshake()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
            text = (await client.get("/metrics")).text
        values = {line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
                  for line in text.splitlines() if line and not line.startswith("#")}
        assert values['castway_open_connections{kind="rtmp"}'] == 2
        assert values['castway_open_connections{kind="rtmp_preauth"}'] == 2
        assert values['castway_open_connections{kind="http"}'] >= 1  # this scrape
        assert values["castway_asyncio_tasks"] >= 3
        assert values["process_open_fds"] > 0
        assert values["process_resident_memory_bytes"] > 10_000_000
        assert values['castway_open_connections{kind="whip"}'] == 0
        # WHIP's resources are on the ingest node's HTTP port (its publish path is here).
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
            options = await client.options("/whip/default")
            assert options.status_code == 204
            assert options.headers["accept-post"] == "application/sdp"
            keyless = await client.post("/whip/default", content=b"v=0",
                                        headers={"content-type": "application/sdp"})
            assert keyless.status_code == 401 and "Bearer" in keyless.text
    finally:
        for pub in pubs:
            await pub.close()
        await http.stop()
        await node.stop()
        await services.close()
