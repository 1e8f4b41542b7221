"""ingest.restream.link against castway's own RTMP server core on a real socket: an HEVC
broadcast to a target that announces no Enhanced RTMP is refused before any media is
sent, given up and reported; a target that is down is retried with backoff and reported
after ``alert_after`` failures; backoff doubles up to its cap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from castway.events.restreams import RestreamFailed
from castway.media import Codec, MediaKind, MediaPacket
from castway.restream.targets import TargetState, parse_target
from ingest.protocol import amf0
from ingest.protocol.chunk import ChunkWriter, MessageType
from ingest.protocol.session import ConnectRequested, MediaReceived, ServerSession
from ingest.restream.link import Backoff, TargetLink
from tests.support import free_port

HEVC_CONFIG = MediaPacket(MediaKind.VIDEO, Codec.HEVC, True, True, 0, 0, b"\x01\x02")


async def legacy_server(media: list[MediaPacket]) -> asyncio.Server:
    """An RTMP server that answers connect like nginx-rtmp: no fourCcList."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ServerSession()
        while data := await reader.read(65536):
            for event in session.receive_data(data):
                if isinstance(event, ConnectRequested):
                    # Answer by hand, as a legacy server does: no E-RTMP in the result.
                    writer.write(session.data_to_send() + ChunkWriter().write(
                        3, MessageType.COMMAND_AMF0, 0, 0, amf0.encode(
                            "_result", 1.0, {"fmsVer": "FMS/3,0,1,123"},
                            {"level": "status", "code": "NetConnection.Connect.Success"})))
                    await writer.drain()
                    writer.close()
                    return
                if isinstance(event, MediaReceived):
                    media.append(event.packet)
            writer.write(session.data_to_send())
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def link_to(port: int, events: list[RestreamFailed], *, alert_after: int = 3) -> TargetLink:
    async def report(event: RestreamFailed) -> None:
        events.append(event)

    return TargetLink("t1", parse_target(f"rtmp://127.0.0.1:{port}/live/key"),
                      broadcast_id="b1", channel="c", queue_bytes=1 << 20,
                      backoff=Backoff(0.01, 0.05), alert_after=alert_after, on_failed=report)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_hevc_to_a_target_without_enhanced_rtmp_is_refused_up_front() -> None:
    media: list[MediaPacket] = []
    server = await legacy_server(media)
    events: list[RestreamFailed] = []
    link = link_to(server.sockets[0].getsockname()[1], events)
    link.start()
    link.push(HEVC_CONFIG)
    await wait_until(lambda: link.state is TargetState.REFUSED)
    assert "does not take hvc1" in link.error
    assert media == []  # nothing was sent
    assert len(events) == 1 and events[0].gave_up and events[0].target_id == "t1"
    assert "key" not in events[0].target_url.rsplit("/", 1)[-1]
    await link.stop()
    server.close()


@pytest.mark.asyncio
async def test_a_target_that_is_down_is_retried_and_reported_every_few_failures() -> None:
    events: list[RestreamFailed] = []
    link = link_to(free_port(), events, alert_after=3)  # nothing listens there
    link.start()
    link.push(MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0, b"\x01"))
    await wait_until(lambda: link.failures >= 6)
    assert link.state in (TargetState.RETRYING, TargetState.CONNECTING)
    assert [e.failures for e in events][:2] == [3, 6]
    assert not any(e.gave_up for e in events)
    await link.stop()
    assert link.state.value == "stopped"


def test_backoff_doubles_up_to_its_cap_with_jitter_below_it() -> None:
    backoff = Backoff(1.0, 30.0)
    assert [backoff.delay(n, 0.999999) for n in (1, 2, 3, 6)] == pytest.approx(
        [1.0, 2.0, 4.0, 30.0], rel=1e-5)
    assert backoff.delay(1, 0.0) == 0.5
