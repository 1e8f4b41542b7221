"""An E-RTMP v2 publisher that honours the server's Reconnect Request, built on the
protocol core (the test-side chunk writer/reader and AMF0): no real client here does.

It announces ``capsEx`` Reconnect (0x01) in ``connect``; a background task reads what
the server sends. On ``NetConnection.Connect.ReconnectRequest`` it closes the
connection, connects and publishes to the given ``tcUrl`` and goes on with its stream
there (sequence headers first). ``send_packet`` publishes real media (MediaPackets from
:func:`transcoder.demux.read_packets`), for tests that run the real transcoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from urllib.parse import urlsplit

from castway.media import Codec, MediaKind, MediaPacket
from ingest.protocol import amf0
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.buffer import Buffer
from ingest.protocol.chunk import ChunkReader, MessageType
from ingest.protocol.commands import CapsEx
from tests.ingest.helpers import AsyncTestPublisher

RECONNECT_REQUEST = "NetConnection.Connect.ReconnectRequest"
AVC_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"
AAC_CONFIG = b"\xaf\x00\x11\x90"


def keyframe() -> bytes:
    return b"\x17\x01\x00\x00\x00" + struct.pack(">I", 4) + b"\x65\x88\x80\x40"


def flv_body(packet: MediaPacket) -> bytes:
    """The FLV tag body of an H.264 or AAC MediaPacket (FLV spec E.4.2, E.4.3)."""
    if packet.kind is MediaKind.VIDEO:
        if packet.codec is not Codec.H264:
            raise ValueError(f"flv_body: no legacy FLV id for {packet.codec}")
        frame_type = 1 if packet.is_keyframe or packet.is_config else 2
        cts = (packet.pts_ms - packet.dts_ms) & 0xFFFFFF
        return (bytes([frame_type << 4 | 7, 0 if packet.is_config else 1])
                + cts.to_bytes(3, "big") + packet.payload)
    if packet.codec is not Codec.AAC:
        raise ValueError(f"flv_body: only AAC audio, not {packet.codec}")
    return bytes([0xAF, 0 if packet.is_config else 1]) + packet.payload


class _Link:
    """One connection: the socket, its encoder, and a task reading the server's
    commands into a queue."""

    def __init__(self, pub: AsyncTestPublisher) -> None:
        self.pub = pub
        self.commands: asyncio.Queue[list[AmfValue]] = asyncio.Queue(maxsize=256)
        self._task: asyncio.Task[None] | None = None
        # Go on from where the publisher's own reading stopped (chunk stream state).
        self._reader: ChunkReader = pub._chunks  # noqa: SLF001 -- test helper's state
        self._buf: Buffer = pub._buf  # noqa: SLF001

    def start_reading(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await self.pub.reader.read(65536):
                self._buf.feed(data)
                while (m := self._reader.next_message(self._buf)) is not None:
                    if m.type_id == MessageType.SET_CHUNK_SIZE:
                        self._reader.set_chunk_size(struct.unpack(">I", m.payload)[0])
                    elif m.type_id == MessageType.COMMAND_AMF0:
                        await self.commands.put(amf0.decode_all(m.payload))

    async def finish(self, timeout: float = 10.0) -> None:
        """Half-close and wait for the server to close its side: by then it has ended
        this publication, so publishing again cannot find the channel still live."""
        if self.pub.writer.can_write_eof():
            self.pub.writer.write_eof()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        await self.close()

    async def close(self) -> None:
        await self.pub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ReconnectingPublisher:
    """Publishes ``key`` to ``url`` (rtmp://host:port/app) and follows reconnect
    requests. ``reconnect_requests`` records the tcUrls it was sent."""

    def __init__(self, key: str, *, video_config: bytes = AVC_CONFIG,
                 audio_config: bytes = AAC_CONFIG, make_before_break: bool = False) -> None:
        """``video_config``/``audio_config``: the sequence headers (FLV tag bodies) sent
        on every connection; real ones for real media (see :func:`flv_body`).
        ``make_before_break``: publish on the new server before leaving the old one, as
        the E-RTMP v2 spec describes; else leave first (what castway needed before
        cross-node handovers)."""
        self.key = key
        self.make_before_break = make_before_break
        self.video_config = video_config
        self.audio_config = audio_config
        self.reconnect_requests: list[str] = []
        self.link: _Link | None = None
        self.timestamp = 0

    async def _open(self, url: str) -> _Link:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        pub = AsyncTestPublisher(*await asyncio.open_connection(parts.hostname, parts.port))
        await pub.handshake()
        await pub.send(pub.enc.command("connect", 1.0, {
            "app": parts.path.strip("/"), "type": "nonprivate", "tcUrl": url,
            "fourCcList": ["avc1"], "capsEx": float(CapsEx.RECONNECT)}))
        reply = await pub.next_command()
        assert reply[0] == "_result", reply
        props = reply[2]
        assert isinstance(props, dict) and props.get("capsEx") == float(CapsEx.RECONNECT)
        await pub.send(pub.enc.command("createStream", 2.0))
        assert (await pub.next_command())[:2] == ["_result", 2.0]
        await pub.send(pub.enc.command("publish", 3.0, None, self.key, "live", stream_id=1))
        while True:
            cmd = await pub.next_command()
            if cmd[0] == "onStatus":
                info = cmd[3]
                assert isinstance(info, dict)
                assert info["code"] == "NetStream.Publish.Start", info
                break
        await pub.send(pub.enc.video(1, self.timestamp, self.video_config)
                       + pub.enc.audio(1, self.timestamp, self.audio_config))
        link = _Link(pub)
        link.start_reading()
        return link

    async def start(self, url: str) -> None:
        self.link = await self._open(url)

    async def send_frame(self, step_ms: int = 40) -> None:
        """One video keyframe; first follows a pending reconnect request, if any."""
        assert self.link is not None
        await self._follow_reconnect_request()
        await self.link.pub.send(self.link.pub.enc.video(1, self.timestamp, keyframe()))
        self.timestamp += step_ms

    async def send_packet(self, packet: MediaPacket, shift_ms: int = 0) -> None:
        """One real media packet (timestamps moved by ``shift_ms``); first follows a
        pending reconnect request, if any."""
        assert self.link is not None
        await self._follow_reconnect_request()
        self.timestamp = packet.dts_ms + shift_ms
        enc = self.link.pub.enc
        message = (enc.video if packet.kind is MediaKind.VIDEO else enc.audio)(
            1, self.timestamp, flv_body(packet))
        await self.link.pub.send(message)

    async def wait_for_reconnect_request(self, timeout: float = 10.0) -> str:
        """Wait for the server's request and move to its tcUrl; returns the tcUrl."""
        assert self.link is not None
        before = len(self.reconnect_requests)
        async with asyncio.timeout(timeout):
            while len(self.reconnect_requests) == before:
                cmd = await self.link.commands.get()
                await self._handle(cmd)
        return self.reconnect_requests[-1]

    async def _follow_reconnect_request(self) -> None:
        assert self.link is not None
        while not self.link.commands.empty():
            await self._handle(self.link.commands.get_nowait())

    async def _handle(self, cmd: list[AmfValue]) -> None:
        if cmd[:3] != ["onStatus", 0.0, None] or not isinstance(cmd[3], dict):
            return
        info = cmd[3]
        if info.get("code") != RECONNECT_REQUEST:
            return
        url = info.get("tcUrl")
        assert isinstance(url, str), info
        self.reconnect_requests.append(url)
        old, self.link = self.link, None
        if self.make_before_break:
            self.link = await self._open(url)
            if old is not None:
                await old.finish()
            return
        if old is not None:
            await old.finish()
        self.link = await self._open(url)

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
