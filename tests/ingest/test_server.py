"""IngestServer over real sockets: limits, isolation of broken connections, shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from castway.catalog import open_catalog
from castway.keys import hash_stream_key
from castway.live.memory import MemoryLiveState
from castway.media import MediaPacket
from castway.model import Broadcast, Channel, StreamKey
from castway.settings import Settings
from ingest.broadcasts import BroadcastManager
from ingest.publish import PublishRequest, PublishSession, Rejection
from ingest.server import IngestServer
from tests.ingest.helpers import AsyncTestPublisher, RecordingHandler
from tests.ingest.reconnect_client import ReconnectingPublisher

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


async def test_a_connection_that_never_publishes_is_closed_at_the_auth_timeout(
        handler: RecordingHandler, caplog: pytest.LogCaptureFixture) -> None:
    srv = IngestServer(make_settings(rtmp_auth_timeout_s=0.3, idle_timeout_s=30.0), handler)
    await srv.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.server"):
            pub = await AsyncTestPublisher.open(srv.port)
            await pub.handshake()
            await pub.send(pub.enc.connect())
            assert (await pub.next_command())[0] == "_result"
            assert await pub.closed_by_server(timeout=5.0)
        [record] = [r for r in caplog.records if getattr(r, "limit", None)]
        assert record.limit == "auth timeout"  # type: ignore[attr-defined]
    finally:
        await srv.stop()


async def test_unauthenticated_connections_beyond_the_cap_are_refused(
        handler: RecordingHandler) -> None:
    srv = IngestServer(make_settings(rtmp_max_preauth_connections=2,
                                     max_connections_per_ip=100), handler)
    await srv.start()
    try:
        first = await AsyncTestPublisher.open(srv.port)
        second = await AsyncTestPublisher.open(srv.port)
        await second.handshake()
        await _eventually(lambda: srv.preauth_connections == 2)
        third = await AsyncTestPublisher.open(srv.port)
        assert await asyncio.wait_for(third.closed_by_server(), 2.0)
        # once one publishes it no longer counts: a new connection is taken again
        assert await first.publish("key") == "NetStream.Publish.Start"
        await _eventually(lambda: srv.preauth_connections == 1)
        fourth = await AsyncTestPublisher.open(srv.port)
        await fourth.handshake()
        for pub in (first, second, third, fourth):
            await pub.close()
    finally:
        await srv.stop()


async def test_all_connections_are_capped(handler: RecordingHandler) -> None:
    srv = IngestServer(make_settings(max_connections_per_ip=100), handler,
                       max_connections=2)
    await srv.start()
    try:
        first = await AsyncTestPublisher.open(srv.port)
        assert await first.publish("one") == "NetStream.Publish.Start"
        second = await AsyncTestPublisher.open(srv.port)
        await second.handshake()
        third = await AsyncTestPublisher.open(srv.port)
        assert await asyncio.wait_for(third.closed_by_server(), 2.0)
        for pub in (first, second, third):
            await pub.close()
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


# --- E-RTMP v2 reconnect request (drain) ----------------------------------------------

class _Media:
    def __init__(self) -> None:
        self.packets = 0
        self.discontinuities = 0
        self.finished = False
        self.dropped = 0

    async def feed(self, packet: MediaPacket) -> None:
        self.packets += 1

    async def discontinuity(self) -> None:
        self.discontinuities += 1

    async def finish(self, *, failed: bool = False) -> None:
        self.finished = True

    async def hand_over(self) -> None:
        self.finished = True


class _Pipeline:
    def __init__(self) -> None:
        self.started: list[_Media] = []

    async def start(self, broadcast: Broadcast, *, handover: bool = False) -> _Media:
        self.started.append(_Media())
        return self.started[-1]


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[tuple[BroadcastManager, _Pipeline]]:
    settings = make_settings(data_dir=tmp_path, node_id="node-a", reconnect_grace_s=30.0)
    catalog = open_catalog(settings)
    catalog.create_channel(Channel("alpha"))
    catalog.add_stream_key(StreamKey("alpha", hash_stream_key("cw_alpha-key")))
    live = MemoryLiveState()
    pipeline = _Pipeline()
    mgr = BroadcastManager(settings, catalog=catalog, live=live, pipeline=pipeline,
                           registry=CollectorRegistry())
    await mgr.start()
    yield mgr, pipeline
    await mgr.stop()
    await live.close()
    catalog.close()


async def test_a_reconnect_capable_publisher_moves_and_its_broadcast_continues(
        manager: tuple[BroadcastManager, _Pipeline]) -> None:
    mgr, pipeline = manager
    draining = IngestServer(make_settings(), mgr)
    active = IngestServer(make_settings(), mgr)
    await draining.start()
    await active.start()
    pub = ReconnectingPublisher("cw_alpha-key")
    try:
        await pub.start(f"rtmp://127.0.0.1:{draining.port}/live")
        for _ in range(3):
            await pub.send_frame()
        broadcast_id = mgr.broadcast_id("alpha")
        assert broadcast_id is not None
        assert draining.reconnectable_publishers == 1
        target = f"rtmp://127.0.0.1:{active.port}/live"
        assert draining.request_reconnect(target) == 1
        assert draining.request_reconnect(target) == 0  # each publisher is asked once
        assert await pub.wait_for_reconnect_request() == target
        for _ in range(3):
            await pub.send_frame()
        assert await draining.wait_for_publishers(10.0) == 0
        [media] = pipeline.started
        await _eventually(lambda: media.packets >= 2 + 3 + 2 + 3)
        # The same broadcast goes on: one pipeline, one discontinuity, not finished.
        assert mgr.broadcast_id("alpha") == broadcast_id
        assert media.discontinuities == 1 and not media.finished
        assert active.active_publishers == 1 and active.reconnectable_publishers == 1
    finally:
        await pub.close()
        await draining.stop()
        await active.stop()


async def test_publishers_without_the_capability_are_not_asked(
        server: IngestServer, handler: RecordingHandler) -> None:
    legacy = await AsyncTestPublisher.open(server.port)
    assert await legacy.publish("legacy") == "NetStream.Publish.Start"
    assert server.active_publishers == 1
    assert server.reconnectable_publishers == 0
    assert server.request_reconnect("rtmp://lb.example.com/live") == 0
    await legacy.close()
    assert await server.wait_for_publishers(10.0) == 0


async def test_wait_for_publishers_returns_how_many_are_left(server: IngestServer) -> None:
    pub = await AsyncTestPublisher.open(server.port)
    assert await pub.publish("still-on") == "NetStream.Publish.Start"
    assert await server.wait_for_publishers(0.05) == 1
    await pub.close()


async def _eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
