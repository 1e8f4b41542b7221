"""Chat fan-out benchmark: N chat servers (uvicorn processes) on one Redis, many clients.

    python -m benchmarks.chat --clients 1000 --servers 2 --channels 10

Starts a redis-server on a free port (or uses ``--redis-url``), the chat servers
(``uvicorn --factory chat.app:app_from_env``) on free ports, connects the clients round-robin
over the servers and channels (retrying 1013 with backoff and jitter), has some clients of
every channel send, then checks that every client got every message of its channel exactly
once and in id order, and prints the p50/p99 fan-out latency (send to receipt, one clock,
so it includes the benchmark client's own event loop, one process for all clients), the
servers' own fan-out histogram, and the delivered messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks.kit import free_port, wait_for_port

START_TIMEOUT_S = 30.0
RECV_TIMEOUT_S = 30.0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([executable, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout_s=START_TIMEOUT_S, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@contextlib.contextmanager
def chat_servers(count: int, redis_url: str, workdir: Path, *,
                 env: dict[str, str] | None = None) -> Iterator[list[str]]:
    """``count`` chat server processes on ``redis_url``; yields their http:// base URLs."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    base_env = {**os.environ, "CASTWAY_CHAT_REDIS_URLS": redis_url,
                "CASTWAY_DATA_DIR": str(workdir), **(env or {})}
    try:
        for i in range(count):
            port = free_port()
            log = open(workdir / f"chat-{i}.log", "wb")  # noqa: SIM115 (closed with the proc)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "chat.app:app_from_env",
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                 "--no-access-log"], env=base_env, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL))
            log.close()
            urls.append(f"http://127.0.0.1:{port}")
            wait_for_port(port, timeout_s=START_TIMEOUT_S, proc=procs[-1])
        yield urls
    finally:
        for proc in procs:
            _stop(proc)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    clients: int = 1000
    channels: int = 10
    senders_per_channel: int = 4
    messages_per_sender: int = 25
    send_interval_s: float = 0.2


@dataclass(eq=False)
class _Client:
    index: int
    channel: str
    server: str
    ws: ClientConnection | None = None
    received: list[tuple[int, str | None, float]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0


@dataclass(frozen=True, slots=True)
class BenchResult:
    clients: int
    sent: int
    deliveries: int
    expected_deliveries: int
    problems: list[str]
    latencies_s: list[float]
    duration_s: float
    connect_retries: int
    connect_s: float

    @property
    def ok(self) -> bool:
        return not self.problems and self.deliveries == self.expected_deliveries

    def percentile(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> str:
        return (f"clients={self.clients} sent={self.sent} delivered={self.deliveries}/"
                f"{self.expected_deliveries} connect={self.connect_s:.1f}s "
                f"(retries {self.connect_retries}) "
                f"fanout p50={self.percentile(50) * 1000:.1f}ms "
                f"p99={self.percentile(99) * 1000:.1f}ms "
                f"max={max(self.latencies_s, default=0) * 1000:.1f}ms "
                f"deliveries/s={self.deliveries_per_s:.0f} "
                f"published/s={self.sent / self.duration_s if self.duration_s else 0:.0f} "
                f"problems={len(self.problems)}")


async def _connect(client: _Client) -> None:
    """Join, retrying 'try again later' (1013) with exponential backoff and full jitter."""
    attempt = 0
    url = (client.server.replace("http://", "ws://", 1) +
           f"/chat/{client.channel}?nick=c{client.index}")
    while True:
        ws = await connect(url, max_queue=None, open_timeout=START_TIMEOUT_S)
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S))
            if first["type"] == "welcome":
                history = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S))
                if history["type"] != "history":
                    raise RuntimeError(f"expected history, got {history}")
                client.ws = ws
                return
        except ConnectionClosed:
            pass
        await ws.close()
        attempt += 1
        client.retries += 1
        await asyncio.sleep(random.uniform(0, min(5.0, 0.1 * 2 ** attempt)))


async def _receive(client: _Client, expected: int) -> None:
    assert client.ws is not None  # set by _connect (our own state, not peer input)
    while len(client.received) < expected:
        frame = json.loads(await asyncio.wait_for(client.ws.recv(), RECV_TIMEOUT_S))
        if frame["type"] == "message":
            client.received.append((frame["id"], frame.get("ref"), time.perf_counter()))
        elif frame["type"] == "error":
            client.errors.append(frame)


async def run(servers: list[str], config: BenchConfig) -> BenchResult:
    """Connect, send, receive and check; the servers must already run."""
    tag = f"{random.randrange(16 ** 6):06x}"
    clients = [_Client(i, f"bench{tag}-{i % config.channels}", servers[i % len(servers)])
               for i in range(config.clients)]
    started = time.perf_counter()
    await asyncio.gather(*(_connect(c) for c in clients))
    connect_s = time.perf_counter() - started
    by_channel: dict[str, list[_Client]] = {}
    for client in clients:
        by_channel.setdefault(client.channel, []).append(client)
    senders = [c for members in by_channel.values()
               for c in members[:config.senders_per_channel]]
    sent_at: dict[str, float] = {}
    per_channel = {ch: min(len(m), config.senders_per_channel) * config.messages_per_sender
                   for ch, m in by_channel.items()}

    async def send(client: _Client) -> None:
        assert client.ws is not None
        await asyncio.sleep(random.uniform(0, config.send_interval_s))  # not all at once
        for n in range(config.messages_per_sender):
            ref = f"{client.index}:{n}"
            sent_at[ref] = time.perf_counter()
            await client.ws.send(json.dumps({"type": "send", "text": f"hello {n}",
                                             "ref": ref}))
            await asyncio.sleep(config.send_interval_s)

    receivers = [asyncio.create_task(_receive(c, per_channel[c.channel])) for c in clients]
    send_start = time.perf_counter()
    problems: list[str] = []
    try:
        await asyncio.gather(*(send(c) for c in senders))
        done, pending = await asyncio.wait(receivers, timeout=RECV_TIMEOUT_S)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                problems.append(f"receiver failed: {task.exception()!r}")
        if pending:
            problems.append(f"{len(pending)} clients did not get every message")
    finally:
        await asyncio.gather(*(c.ws.close() for c in clients if c.ws is not None),
                             return_exceptions=True)
    last = max((r[2] for c in clients for r in c.received), default=send_start)
    latencies: list[float] = []
    for channel, members in by_channel.items():
        expected_refs = {f"{s.index}:{n}" for s in members[:config.senders_per_channel]
                         for n in range(config.messages_per_sender)}
        for client in members:
            ids = [r[0] for r in client.received]
            refs = [r[1] for r in client.received]
            contiguous = not ids or ids == list(range(ids[0], ids[0] + len(ids)))
            if not contiguous:
                problems.append(f"client {client.index} ({channel}): ids not contiguous "
                                f"and ordered: {ids[:10]}...")
            if len(refs) != len(set(refs)) or set(refs) != expected_refs:
                problems.append(f"client {client.index} ({channel}): {len(refs)} messages, "
                                f"{len(set(refs) ^ expected_refs)} missing or foreign")
            if client.errors:
                problems.append(f"client {client.index}: errors {client.errors[:2]}")
            latencies.extend(t - sent_at[ref] for _, ref, t in client.received
                             if ref in sent_at)
    return BenchResult(
        clients=len(clients), sent=len(sent_at),
        deliveries=sum(len(c.received) for c in clients),
        expected_deliveries=sum(per_channel[c.channel] for c in clients),
        problems=problems, latencies_s=latencies, duration_s=last - send_start,
        connect_retries=sum(c.retries for c in clients), connect_s=connect_s)


def server_fanout(servers: list[str]) -> dict[float, float]:
    """The servers' fan-out histograms (``castway_chat_fanout_seconds``), summed:
    upper bound -> cumulative count."""
    buckets: dict[float, float] = {}
    pattern = re.compile(r'^castway_chat_fanout_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
    for server in servers:
        with urllib.request.urlopen(f"{server}/metrics", timeout=10) as response:
            text = response.read().decode()
        for bound, count in pattern.findall(text):
            key = float("inf") if bound == "+Inf" else float(bound)
            buckets[key] = buckets.get(key, 0.0) + float(count)
    return buckets


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (conservative)."""
    total = buckets.get(float("inf"), 0.0)
    for bound in sorted(buckets):
        if total and buckets[bound] >= q * total:
            return bound
    return float("nan")


def server_env(config: BenchConfig, max_connects_per_s: float) -> dict[str, str]:
    """Limits that let the benchmark's senders through (the flood tests check the limits);
    every client of a loopback benchmark has the same address, so the per-address cap is
    the client count."""
    rate = max(1.0, 2.0 / config.send_interval_s)
    return {"CASTWAY_CHAT_RATE_PER_S": str(rate), "CASTWAY_CHAT_RATE_BURST": "10",
            "CASTWAY_CHAT_MAX_CONNECTS_PER_S": str(max_connects_per_s),
            "CASTWAY_CHAT_MAX_CONNECTIONS_PER_IP": str(max(32, config.clients)),
            "CASTWAY_CHAT_SEND_QUEUE": "1024"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--senders-per-channel", type=int, default=4)
    parser.add_argument("--messages-per-sender", type=int, default=25)
    parser.add_argument("--send-interval", type=float, default=0.2)
    parser.add_argument("--max-connects-per-s", type=float, default=200.0)
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    config = BenchConfig(args.clients, args.channels, args.senders_per_channel,
                         args.messages_per_sender, args.send_interval)
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        redis_url = args.redis_url or stack.enter_context(redis_server(workdir))
        servers = stack.enter_context(chat_servers(
            args.servers, redis_url, workdir,
            env=server_env(config, args.max_connects_per_s)))
        result = asyncio.run(run(servers, config))
        fanout = server_fanout(servers)
    server_p50 = histogram_quantile(fanout, 0.5)
    server_p99 = histogram_quantile(fanout, 0.99)
    if args.json:
        print(json.dumps({"clients": result.clients, "sent": result.sent,
                          "deliveries": result.deliveries,
                          "expected_deliveries": result.expected_deliveries,
                          "p50_ms": result.percentile(50) * 1000,
                          "p99_ms": result.percentile(99) * 1000,
                          "deliveries_per_s": result.deliveries_per_s,
                          "connect_s": result.connect_s,
                          "connect_retries": result.connect_retries,
                          "server_fanout_p50_le_ms": server_p50 * 1000,
                          "server_fanout_p99_le_ms": server_p99 * 1000,
                          "problems": result.problems[:20]}))
    else:
        print(result.summary())
        print(f"server-side fan-out (accepting server's timestamp -> queued to every local "
              f"client): p50 <= {server_p50 * 1000:g}ms p99 <= {server_p99 * 1000:g}ms")
        for problem in result.problems[:20]:
            print("  " + problem)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
