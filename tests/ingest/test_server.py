"""IngestServer over real sockets: limits, isolation of broken connections, shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from castway.settings import Settings
from ingest.publish import PublishRequest, PublishSession, Rejection
from ingest.server import IngestServer
from tests.ingest.helpers import AsyncTestPublisher, RecordingHandler

AVC_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"


def make_settings(**overrides: object) -> Settings:
    return Settings(host="127.0.0.1", rtmp_port=0, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def handler() -> RecordingHandler:
    return RecordingHandler(reject={"wrong"})


@pytest.fixture
async def server(handler: RecordingHandler) -> AsyncIterator[IngestServer]:
    srv = IngestServer(make_settings(idle_timeout_s=5.0), handler)
    await srv.start()
    yield srv
    await srv.stop()


async def test_publish_reaches_the_handler_and_close_is_reported(
        server: IngestServer, handler: RecordingHandler) -> None:
    pub = await AsyncTestPublisher.open(server.port)
    assert await pub.publish("abc?token=t&x=") == "NetStream.Publish.Start"
    await pub.send(pub.enc.video(1, 0, AVC_CONFIG) + pub.enc.audio(1, 0, b"\xaf\x00\x11\x90"))
    await handler.wait_for(lambda: handler.publications
                           and len(handler.publications[0].packets) == 2)
    [rec] = handler.publications
    assert rec.request.stream_key == "abc" and rec.request.query == {"token": "t", "x": ""}
    assert rec.request.app == "live" and rec.request.peer.startswith("127.0.0.1:")
    assert server.active_publishers == 1
    await pub.close()
    await asyncio.wait_for(rec.closed.wait(), 10)
    assert rec.close_reason == "disconnected"
    assert server.active_publishers == 0


async def test_wrong_key_is_rejected_with_bad_name(server: IngestServer) -> None:
    pub = await AsyncTestPublisher.open(server.port)
    assert await pub.publish("wrong") == "NetStream.Publish.BadName"
    assert await pub.closed_by_server()


async def test_unknown_app_is_refused_at_connect(server: IngestServer) -> None:
    pub = await AsyncTestPublisher.open(server.port)
    await pub.handshake()
    await pub.send(pub.enc.connect(app="other"))
    reply = await pub.next_command()
    assert reply[0] == "_error"
    assert await pub.closed_by_server()


async def test_handshake_timeout_closes_with_a_log_line(
        handler: RecordingHandler, caplog: pytest.LogCaptureFixture) -> None:
    srv = IngestServer(make_settings(handshake_timeout_s=0.2), handler)
    await srv.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.server"):
            pub = await AsyncTestPublisher.open(srv.port)
            await pub.send(b"\x03" + bytes(100))  # C0 and a fraction of C1, then silence
            assert await pub.closed_by_server()
        [record] = [r for r in caplog.records if getattr(r, "limit", None)]
        assert record.limit == "handshake timeout"  # type: ignore[attr-defined]
    finally:
        await srv.stop()


async def test_idle_publisher_is_closed(handler: RecordingHandler) -> None:
    srv = IngestServer(make_settings(idle_timeout_s=0.3), handler)
    await srv.start()
    try:
        pub = await AsyncTestPublisher.open(srv.port)
        assert await pub.publish("quiet") == "NetStream.Publish.Start"
        assert await pub.closed_by_server()
        [rec] = handler.publications
        await asyncio.wait_for(rec.closed.wait(), 5)
        assert rec.close_reason == "idle timeout"
    finally:
        await srv.stop()


async def test_connections_per_ip_are_limited(handler: RecordingHandler) -> None:
    srv = IngestServer(make_settings(max_connections_per_ip=2), handler)
    await srv.start()
    try:
        first = await AsyncTestPublisher.open(srv.port)
        second = await AsyncTestPublisher.open(srv.port)
        await first.handshake()
        await second.handshake()
        third = await AsyncTestPublisher.open(srv.port)
        assert await third.closed_by_server()
        await first.close()
        await second.close()
        while srv.connections:  # the slots free up once the server sees the closes
            await asyncio.sleep(0.01)
        fourth = await AsyncTestPublisher.open(srv.port)
        await fourth.handshake()  # accepted again
        await fourth.close()
    finally:
        await srv.stop()


async def test_a_malformed_chunk_closes_only_that_connection(
        server: IngestServer, handler: RecordingHandler) -> None:
    good = await AsyncTestPublisher.open(server.port)
    bad = await AsyncTestPublisher.open(server.port)
    assert await good.publish("good") == "NetStream.Publish.Start"
    assert await bad.publish("bad") == "NetStream.Publish.Start"
    # A type-1 header on a chunk stream never opened with type 0.
    await bad.send(b"\x4a\x00\x00\x00\x00\x00\x01\x09x")
    assert await bad.closed_by_server()
    bad_rec = next(p for p in handler.publications if p.request.stream_key == "bad")
    await asyncio.wait_for(bad_rec.closed.wait(), 5)
    assert bad_rec.close_reason is not None and "protocol error" in bad_rec.close_reason
    await good.send(good.enc.video(1, 0, AVC_CONFIG))
    good_rec = next(p for p in handler.publications if p.request.stream_key == "good")
    await handler.wait_for(lambda: len(good_rec.packets) == 1)
    assert not good_rec.closed.is_set()
    await good.close()


class _Exploding:
    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection:
        raise RuntimeError("boom")


async def test_a_failing_handler_becomes_a_rejection() -> None:
    srv = IngestServer(make_settings(), _Exploding())
    await srv.start()
    try:
        pub = await AsyncTestPublisher.open(srv.port)
        assert await pub.publish("k") == "NetStream.Publish.Denied"
        assert await pub.closed_by_server()
    finally:
        await srv.stop()


async def test_stop_waits_for_publishers_then_closes_them(handler: RecordingHandler) -> None:
    srv = IngestServer(make_settings(), handler)
    await srv.start()
    pub = await AsyncTestPublisher.open(srv.port)
    assert await pub.publish("live1") == "NetStream.Publish.Start"
    idle = await AsyncTestPublisher.open(srv.port)
    await idle.handshake()
    stop = asyncio.create_task(srv.stop(grace_s=0.3))
    assert await idle.closed_by_server()  # not publishing: closed at once
    await stop
    [rec] = handler.publications
    assert rec.close_reason == "server stopping"
    assert await pub.closed_by_server()
    assert srv.active_publishers == 0
