"""RTMPS and the PROXY protocol on IngestServer, over real sockets: the TLS listener
serves the same core and limits, a stalled TLS handshake is cut without holding up
anyone else, the certificate is reloaded for new connections only, and a load
balancer's PROXY header is what the per-address limits see."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from castway.proxy_protocol import ProxyHeader
from castway.settings import Settings
from castway.tls import TlsConfigError
from ingest.server import IngestServer
from tests.fixtures.wire_recorder import wire_recorder
from tests.ingest.helpers import AsyncTestPublisher, RecordingHandler
from tests.support import free_ports, make_test_media, require_tool
from tests.tls_certs import client_context, serial_of, write_self_signed

AVC_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"


def tls_settings(tmp_path: Path, **overrides: object) -> Settings:
    cert, key = write_self_signed(tmp_path, serial=1001)
    # Both ports chosen, held until both are: with rtmp_port 0 the plain listener's bind
    # could be handed the port free_port() had just released (CI: "Address already in
    # use" on the TLS bind).
    plain, tls = free_ports(2)
    return Settings(host="127.0.0.1", rtmp_port=plain, rtmps_port=tls,
                    tls_cert_file=cert, tls_key_file=key, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def handler() -> RecordingHandler:
    return RecordingHandler(reject={"wrong"})


@pytest.fixture
async def server(tmp_path: Path, handler: RecordingHandler) -> AsyncIterator[IngestServer]:
    srv = IngestServer(tls_settings(tmp_path, idle_timeout_s=5.0), handler)
    await srv.start()
    yield srv
    await srv.stop()


def tls_port(server: IngestServer) -> int:
    assert server.tls_port is not None
    return server.tls_port


async def peer_serial(port: int) -> int:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    writer.close()
    return serial_of(der)


async def test_a_publish_over_tls_reaches_the_handler(
        server: IngestServer, handler: RecordingHandler) -> None:
    pub = await AsyncTestPublisher.open(tls_port(server), ssl=client_context())
    assert await pub.publish("abc") == "NetStream.Publish.Start"
    await pub.send(pub.enc.video(1, 0, AVC_CONFIG))
    await handler.wait_for(lambda: handler.publications
                           and len(handler.publications[0].packets) == 1)
    assert handler.publications[0].request.stream_key == "abc"
    await pub.close()


async def test_plain_rtmp_still_listens_beside_rtmps(server: IngestServer) -> None:
    pub = await AsyncTestPublisher.open(server.port)
    assert await pub.publish("abc") == "NetStream.Publish.Start"
    await pub.close()


async def test_a_wrong_key_over_tls_is_refused_with_bad_name(server: IngestServer) -> None:
    pub = await AsyncTestPublisher.open(tls_port(server), ssl=client_context())
    assert await pub.publish("wrong") == "NetStream.Publish.BadName"
    assert await pub.closed_by_server()


async def test_plain_rtmp_on_the_tls_port_is_refused(server: IngestServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ingest.server"):
        pub = await AsyncTestPublisher.open(tls_port(server))
        await pub.send(pub.enc.handshake_c0c1())
        assert await pub.closed_by_server(timeout=5.0)
    assert any(getattr(r, "limit", None) == "tls handshake failed" for r in caplog.records)


async def test_a_stalled_tls_handshake_is_cut_and_other_publishers_go_on(
        tmp_path: Path, handler: RecordingHandler, caplog: pytest.LogCaptureFixture) -> None:
    srv = IngestServer(tls_settings(tmp_path, handshake_timeout_s=1.0), handler)
    await srv.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.server"):
            # A client that opens TCP and sends half a ClientHello, then nothing.
            stalled_reader, stalled = await asyncio.open_connection("127.0.0.1",
                                                                    tls_port(srv))
            stalled.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            await stalled.drain()
            # Meanwhile another publisher handshakes and publishes over TLS.
            pub = await AsyncTestPublisher.open(tls_port(srv), ssl=client_context())
            assert await pub.publish("abc") == "NetStream.Publish.Start"
            assert await asyncio.wait_for(stalled_reader.read(), 5.0) == b""
            # The publisher outlives the cut: still accepted, still sending.
            await pub.send(pub.enc.video(1, 0, AVC_CONFIG))
            await handler.wait_for(lambda: handler.publications[0].packets)
            assert srv.active_publishers == 1
        assert any(getattr(r, "limit", None) == "tls handshake timeout"
                   for r in caplog.records)
        stalled.close()
        await pub.close()
    finally:
        await srv.stop()


async def test_reload_gives_new_connections_the_new_certificate_and_keeps_live_ones(
        tmp_path: Path, handler: RecordingHandler) -> None:
    settings = tls_settings(tmp_path)
    srv = IngestServer(settings, handler)
    await srv.start()
    try:
        assert await peer_serial(tls_port(srv)) == 1001
        live = await AsyncTestPublisher.open(tls_port(srv), ssl=client_context())
        assert await live.publish("abc") == "NetStream.Publish.Start"
        # A renewal is written over the same paths, then SIGHUP -> reload_tls().
        write_self_signed(tmp_path, serial=2002)
        assert srv.reload_tls()
        assert await peer_serial(tls_port(srv)) == 2002
        await live.send(live.enc.video(1, 0, AVC_CONFIG))
        await handler.wait_for(lambda: handler.publications[0].packets)
        await live.close()
    finally:
        await srv.stop()


async def test_a_broken_renewal_keeps_the_old_certificate(
        tmp_path: Path, handler: RecordingHandler) -> None:
    settings = tls_settings(tmp_path)
    srv = IngestServer(settings, handler)
    await srv.start()
    try:
        assert settings.tls_key_file is not None
        settings.tls_key_file.write_text("half a key")
        assert not srv.reload_tls()
        assert await peer_serial(tls_port(srv)) == 1001
    finally:
        await srv.stop()


async def test_rtmps_without_a_certificate_does_not_start(handler: RecordingHandler) -> None:
    plain, tls = free_ports(2)
    srv = IngestServer(Settings(host="127.0.0.1", rtmp_port=plain, rtmps_port=tls),
                       handler)
    with pytest.raises(TlsConfigError, match="CASTWAY_TLS_CERT_FILE"):
        await srv.start()


# --- PROXY protocol -------------------------------------------------------------------

CLIENT = ProxyHeader(2, ("203.0.113.7", 50000), ("10.0.0.5", 1936), 0)


async def test_the_proxy_header_gives_the_clients_address_over_tls(
        tmp_path: Path, handler: RecordingHandler) -> None:
    srv = IngestServer(tls_settings(tmp_path, proxy_protocol=True), handler)
    await srv.start()
    try:
        pub = await AsyncTestPublisher.open(tls_port(srv), ssl=client_context(),
                                            prefix=bytes(CLIENT))
        assert await pub.publish("abc") == "NetStream.Publish.Start"
        assert handler.publications[0].request.peer == "203.0.113.7:50000"
        await pub.close()
    finally:
        await srv.stop()


@pytest.mark.parametrize("version", [1, 2])
async def test_the_per_address_limit_counts_the_clients_behind_the_balancer(
        tmp_path: Path, handler: RecordingHandler, version: int) -> None:
    srv = IngestServer(tls_settings(tmp_path, proxy_protocol=True,
                                    max_connections_per_ip=1), handler)
    await srv.start()
    try:
        one = ProxyHeader(version, ("203.0.113.7", 50000), ("10.0.0.5", 1935), 0)
        same = ProxyHeader(version, ("203.0.113.7", 50001), ("10.0.0.5", 1935), 0)
        other = ProxyHeader(version, ("198.51.100.9", 50000), ("10.0.0.5", 1935), 0)
        first = await AsyncTestPublisher.open(srv.port, prefix=bytes(one))
        assert await first.publish("a") == "NetStream.Publish.Start"
        # All three arrive from 127.0.0.1 (the "balancer"); only the second is the
        # same client as the first.
        second = await AsyncTestPublisher.open(srv.port, prefix=bytes(same))
        await second.send(second.enc.handshake_c0c1())
        assert await second.closed_by_server(timeout=5.0)
        third = await AsyncTestPublisher.open(srv.port, prefix=bytes(other))
        assert await third.publish("b") == "NetStream.Publish.Start"
        await first.close()
        await third.close()
    finally:
        await srv.stop()


@pytest.mark.parametrize("tls", [False, True])
async def test_without_a_proxy_header_the_connection_is_refused(
        tmp_path: Path, handler: RecordingHandler, caplog: pytest.LogCaptureFixture,
        tls: bool) -> None:
    srv = IngestServer(tls_settings(tmp_path, proxy_protocol=True), handler)
    await srv.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.server"):
            if tls:
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    await AsyncTestPublisher.open(tls_port(srv), ssl=client_context())
            else:
                pub = await AsyncTestPublisher.open(srv.port)
                await pub.send(pub.enc.handshake_c0c1())
                assert await pub.closed_by_server(timeout=5.0)
        assert any(getattr(r, "limit", None) == "proxy_protocol" for r in caplog.records)
        assert not handler.publications
    finally:
        await srv.stop()


async def test_a_proxy_header_that_never_completes_is_cut_at_the_handshake_timeout(
        tmp_path: Path, handler: RecordingHandler) -> None:
    srv = IngestServer(tls_settings(tmp_path, proxy_protocol=True, handshake_timeout_s=0.5),
                       handler)
    await srv.start()
    try:
        pub = await AsyncTestPublisher.open(srv.port, prefix=bytes(CLIENT)[:10])
        assert await pub.closed_by_server(timeout=5.0)
    finally:
        await srv.stop()


@pytest.mark.peer
async def test_the_key_is_on_the_wire_in_clear_over_rtmp_and_not_over_rtmps(
        server: IngestServer, handler: RecordingHandler, tmp_path: Path) -> None:
    """The same ffmpeg publish through a relay that records what a network observer
    sees: RTMP shows the key (so the capture would catch it), RTMPS does not."""
    ffmpeg = require_tool("ffmpeg")
    clip = await asyncio.to_thread(make_test_media, tmp_path / "clip.flv", seconds=1.0)
    key = "cw_wiretap-canary-0123456789"
    seen: dict[str, bytes] = {}
    for scheme, port in (("rtmp", server.port), ("rtmps", tls_port(server))):
        with wire_recorder(port) as wire:
            publisher = await asyncio.create_subprocess_exec(
                ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(clip), "-c", "copy",
                "-f", "flv", f"{scheme}://127.0.0.1:{wire.port}/live/{key}",
                stderr=asyncio.subprocess.PIPE)
            _, stderr = await asyncio.wait_for(publisher.communicate(), 60)
            assert publisher.returncode == 0, stderr.decode()
            seen[scheme] = wire.client_bytes
        # ffmpeg exits once it has sent its last bytes; the server may read the close a
        # moment later, and until then the key is still live (one publisher per key).
        await handler.wait_for(lambda: all(p.closed.is_set() for p in handler.publications))
    assert key.encode() in seen["rtmp"]
    assert key.encode() not in seen["rtmps"]
    assert len(seen["rtmps"]) >= len(seen["rtmp"])  # the media went through, encrypted
    assert [p.request.stream_key for p in handler.publications] == [key, key]


async def test_stop_closes_connections_still_in_their_proxy_header_or_tls_handshake(
        tmp_path: Path, handler: RecordingHandler) -> None:
    srv = IngestServer(tls_settings(tmp_path, proxy_protocol=True), handler)
    await srv.start()
    waiting_header, _ = await asyncio.open_connection("127.0.0.1", srv.port)
    in_tls, in_tls_writer = await asyncio.open_connection("127.0.0.1", tls_port(srv))
    in_tls_writer.write(bytes(CLIENT) + b"\x16\x03\x01")  # header, then a third of a record
    await _eventually(lambda: srv.connections == 2)
    await srv.stop()
    assert await _closed(waiting_header) and await _closed(in_tls)
    assert srv.connections == 0


async def _eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def _closed(reader: asyncio.StreamReader) -> bool:
    """The server closed: EOF, or a reset when it closed with our bytes unread."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True
