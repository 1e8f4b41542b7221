"""Issue 17's connection floods against a real `castway serve` process: slowloris HTTP
connections beyond the file-descriptor limit no longer starve /healthz or RTMP publishes
(and no longer flood the log); unauthenticated RTMP connections beyond the cap are closed
at once and the process's memory does not climb with what they send."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ingest.protocol.chunk import MessageType
from tests.ingest.helpers import AsyncTestPublisher, ClientEncoder
from tests.serve_process import Served, serve
from tests.test_ingest_process import LogWatcher

FD_LIMIT = 256
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "


@contextlib.contextmanager
def _serve(tmp_path: Path, *, fd_limit: int | None = None,
           **env: str) -> Iterator[tuple[Served, LogWatcher]]:
    def limit_fds() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with serve(tmp_path / "data", preexec_fn=limit_fds, CASTWAY_TRANSCODE="false",
               **env) as served:
        yield served, LogWatcher(served.proc.stderr)


def _publish(port: int, key: str) -> str:
    async def go() -> str:
        pub = await AsyncTestPublisher.open(port)
        try:
            return await asyncio.wait_for(pub.publish(key), 10)
        finally:
            await pub.close()
    return asyncio.run(go())


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (read until EOF)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        pass
    return True


def test_slowloris_beyond_the_fd_limit_starves_nothing(tmp_path: Path) -> None:
    with _serve(tmp_path, fd_limit=FD_LIMIT, CASTWAY_HTTP_HEADER_TIMEOUT_S="3") as (
            served, logs):
        slow = []
        try:
            for _ in range(FD_LIMIT + 150):
                sock = socket.create_connection(("127.0.0.1", served.http_port), timeout=5)
                sock.sendall(SLOW_HEAD)
                slow.append(sock)
            # while they are open (or being evicted to make room): health and publish
            assert httpx.get(f"{served.base}/healthz", timeout=10).status_code == 200
            assert _publish(served.rtmp_port, served.stream_key()) == \
                "NetStream.Publish.Start"
            assert httpx.get(f"{served.base}/healthz", timeout=10).status_code == 200
            # every one of them is closed by the header deadline
            deadline = time.monotonic() + 20
            for sock in slow:
                assert _closed(sock, max(0.1, deadline - time.monotonic()))
            assert time.monotonic() < deadline
        finally:
            for sock in slow:
                sock.close()
        assert httpx.get(f"{served.base}/healthz", timeout=10).status_code == 200
        accept_lines = [line for line in logs.lines if "accept" in line]
        assert len(accept_lines) <= 5, accept_lines[:5]


def _wait_until_handshake_answers(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(ClientEncoder.handshake_c0c1())
            with contextlib.suppress(ConnectionError, OSError):
                if sock.recv(1):
                    return
        assert time.monotonic() < deadline
        time.sleep(0.05)  # polling a process from outside


def _hog(port: int, n_streams: int, message: int) -> socket.socket:
    """An RTMP connection that completes the handshake and then sends all but the last
    chunk of ``n_streams`` messages of ``message`` bytes, one per chunk stream, so the
    server would hold them all as partial messages (never publishing)."""
    chunk = 64 * 1024
    enc = ClientEncoder()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(enc.handshake_c0c1())
    got = 0
    try:
        while got < 1 + 2 * 1536:
            data = sock.recv(65536)
            if not data:
                return sock  # refused before the handshake
            got += len(data)
        sock.sendall(enc.c2())
        sock.sendall(b"\x02" + bytes(3) + b"\x00\x00\x04"
                     + bytes([MessageType.SET_CHUNK_SIZE]) + bytes(4)
                     + struct.pack(">I", chunk))
        for csid in range(4, 4 + n_streams):
            sock.sendall(bytes([csid]) + bytes(3) + message.to_bytes(3, "big")
                         + bytes([MessageType.VIDEO]) + struct.pack("<I", 1) + bytes(chunk))
            for _ in range(message // chunk - 2):
                sock.sendall(bytes([0xC0 | csid]) + bytes(chunk))
    except (ConnectionError, OSError):
        pass  # closed by the server part-way: what we want
    return sock


def test_unauthenticated_rtmp_connections_are_capped_in_number_and_memory(
        tmp_path: Path) -> None:
    with _serve(tmp_path, CASTWAY_RTMP_MAX_PREAUTH_CONNECTIONS="4",
                CASTWAY_MAX_CONNECTIONS_PER_IP="100") as (served, _logs):
        pid = served.proc.pid
        before = _rss(pid)
        holders = [socket.create_connection(("127.0.0.1", served.rtmp_port), timeout=10)
                   for _ in range(4)]
        try:
            for sock in holders:  # handshake, so they are surely accepted and held
                sock.sendall(ClientEncoder.handshake_c0c1())
            for sock in holders:
                sock.settimeout(10)
                assert sock.recv(1)
            extra = socket.create_connection(("127.0.0.1", served.rtmp_port), timeout=10)
            assert _closed(extra, 3.0)  # the fifth is closed at once (no handshake wait)
            extra.close()
        finally:
            for sock in holders:
                sock.close()
        _wait_until_handshake_answers(served.rtmp_port)  # the holders' slots are free
        # ten connections each trying to hold 4 x 4 MiB before authenticating
        hogs = [_hog(served.rtmp_port, 4, 4 * 1024 * 1024) for _ in range(10)]
        sent = _rss(pid)  # what the server read of it so far is in here
        try:
            # each is closed by the server (message over the pre-auth cap), not left to
            # the idle timeout while it holds what it sent
            deadline = time.monotonic() + 15
            for sock in hogs:
                assert _closed(sock, max(0.1, deadline - time.monotonic()))
            grown = max(sent, _rss(pid)) - before
            assert grown < 48 * 1024 * 1024, f"RSS grew {grown / 1e6:.0f} MB"
        finally:
            for sock in hogs:
                sock.close()
        deadline = time.monotonic() + 10
        while True:  # the slots free up once the server sees the closes
            try:
                assert _publish(served.rtmp_port, served.stream_key()) == \
                    "NetStream.Publish.Start"
                break
            except (ConnectionError, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.05)  # polling a process from outside


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_show_connections_fds_tasks_and_memory(tmp_path: Path) -> None:
    with _serve(tmp_path) as (served, _logs):
        slow = [socket.create_connection(("127.0.0.1", served.http_port), timeout=5)
                for _ in range(40)]
        rtmp = [socket.create_connection(("127.0.0.1", served.rtmp_port), timeout=5)
                for _ in range(3)]
        try:
            for sock in slow:
                sock.sendall(SLOW_HEAD)
            for sock in rtmp:
                sock.sendall(ClientEncoder.handshake_c0c1())
                sock.settimeout(10)
                assert sock.recv(1)
            text = httpx.get(f"{served.base}/metrics", timeout=10).text
        finally:
            for sock in slow + rtmp:
                sock.close()
        assert _metric(text, 'castway_open_connections{kind="http"}') >= 40
        assert _metric(text, 'castway_open_connections{kind="rtmp"}') == 3
        assert _metric(text, 'castway_open_connections{kind="rtmp_preauth"}') == 3
        assert _metric(text, "process_open_fds") >= 43
        assert _metric(text, "process_max_fds") > 0
        assert _metric(text, "castway_asyncio_tasks") > 3
        # What the in-process live state holds (nothing published: empty) and the GC's work.
        assert _metric(text, "castway_live_media_bytes") == 0
        assert _metric(text, "castway_live_broadcasts") == 0
        assert _metric(text, 'python_gc_collections_total{generation="0"}') > 0
        rss = _metric(text, "process_resident_memory_bytes")
        assert abs(rss - _rss(served.proc.pid)) < 0.5 * rss
