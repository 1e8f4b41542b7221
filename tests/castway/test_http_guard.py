"""The HTTP server's limits on real sockets (launch.http_server.HttpServer, in-process):
slowloris connections closed at the header deadline while /healthz answers, the
connection cap making room by dropping the oldest of them, a 64 MB header refused 431,
idle keep-alive connections closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from castway.net import HttpLimits, bind_socket
from castway.proxy_protocol import ProxyHeader
from launch.http_server import HttpServer

SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _serve(limits: HttpLimits) -> AsyncIterator[HttpServer]:
    http = HttpServer(_app(), bind_socket("127.0.0.1", 0), limits)
    await http.start()
    try:
        yield http
    finally:
        await http.stop()


@pytest.fixture
async def http() -> AsyncIterator[HttpServer]:
    async for server in _serve(HttpLimits(max_connections=1000, header_timeout_s=1.0,
                                          keepalive_timeout_s=1.0)):
        yield server


@pytest.fixture
async def capped() -> AsyncIterator[HttpServer]:
    async for server in _serve(HttpLimits(max_connections=20, header_timeout_s=30.0)):
        yield server


async def _eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


Slow = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _slowloris(port: int, n: int) -> list[Slow]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(SLOW_HEAD)
        conns.append((reader, writer))
    for _, writer in conns:
        await writer.drain()
    return conns


async def _closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """What the server sent before closing (raises TimeoutError if it does not)."""
    async def read_all() -> bytes:
        data = b""
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except (ConnectionError, OSError):
            pass
        return data
    return await asyncio.wait_for(read_all(), timeout)


async def _close_all(conns: list[Slow]) -> None:
    for _, writer in conns:
        writer.close()


async def _healthz(port: int) -> int:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code


async def test_slowloris_connections_are_closed_at_the_header_deadline(
        http: HttpServer) -> None:
    conns = await _slowloris(http.port, 300)
    try:
        await _eventually(lambda: http.connections >= 300)
        assert await _healthz(http.port) == 200  # served while they are open
        results = await asyncio.gather(*(_closed(r, 10.0) for r, _ in conns))
        assert all(b" 408 " in data for data in results)
        await _eventually(lambda: http.connections == 0)
    finally:
        await _close_all(conns)


async def test_a_connection_that_sends_nothing_is_closed_too(http: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    try:
        await _closed(reader, 10.0)
    finally:
        writer.close()


async def test_at_the_cap_the_oldest_slowloris_makes_room(capped: HttpServer) -> None:
    conns = await _slowloris(capped.port, 60)
    try:
        await _eventually(lambda: capped.connections <= 20
                          and capped.guard.evicted.total >= 40)
        for _ in range(3):
            assert await _healthz(capped.port) == 200
        assert capped.connections <= 20
        # the first ones were dropped (with 408), the last ones are still waiting
        assert b" 408 " in await _closed(conns[0][0], 5.0)
        assert not conns[-1][0].at_eof()
    finally:
        await _close_all(conns)


async def test_a_64_mb_header_is_refused_with_431(http: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    answer = asyncio.create_task(_closed(reader, 30.0))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    chunk = b"a" * 65536
    sent = 0
    try:
        for _ in range(1024):  # 64 MiB, unless the server answers first
            if reader.at_eof():  # the server answered and shut its side
                break
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
    except (ConnectionError, OSError):
        pass
    data = await answer
    writer.close()
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    assert sent < 16 * 1024 * 1024  # refused early, not after reading it all
    assert await _healthz(http.port) == 200


async def test_an_idle_keepalive_connection_is_closed(http: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    data = await _closed(reader, 10.0)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.count(b"HTTP/1.1") == 1  # only the one response; then closed as idle


# --- an optional PROXY header (the ingest node's health port behind an NLB) -------------

@pytest.fixture
async def behind_nlb() -> AsyncIterator[HttpServer]:
    http = HttpServer(_app(), bind_socket("127.0.0.1", 0), HttpLimits(max_connections=16),
                      optional_proxy_header=True)
    await http.start()
    yield http
    await http.stop()


async def _raw_get(port: int, prefix: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(prefix + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


@pytest.mark.parametrize("prefix", [
    b"",                                                       # ECS's check from the task
    bytes(ProxyHeader(2, None, None, 0)),                      # an NLB health check (LOCAL)
    bytes(ProxyHeader(2, ("10.0.0.9", 1234), ("10.0.1.5", 8081), 0)),
    b"PROXY TCP4 10.0.0.9 10.0.1.5 1234 8081\r\n",
])
async def test_health_checks_answer_with_or_without_a_proxy_header(
        behind_nlb: HttpServer, prefix: bytes) -> None:
    assert (await _raw_get(behind_nlb.port, prefix)).startswith(b"HTTP/1.1 200")


async def test_post_and_put_are_not_taken_for_a_proxy_header(behind_nlb: HttpServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{behind_nlb.port}") as client:
        assert (await client.post("/healthz")).status_code == 405
        assert (await client.put("/healthz")).status_code == 405


async def test_a_broken_proxy_header_closes_the_connection(behind_nlb: HttpServer) -> None:
    try:
        answer = await _raw_get(behind_nlb.port, b"PROXY TCP9 nonsense\r\n")
    except ConnectionResetError:  # closed with our request unread: a reset
        answer = b""
    assert answer == b""
