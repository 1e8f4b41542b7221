"""Shared test helpers of the ingest tests: a recording PublishHandler and a tiny
client-side RTMP encoder (what a publisher sends), both real code, no mocks."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import struct
from dataclasses import dataclass, field

from castway.media import MediaPacket
from ingest.protocol import amf0
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.chunk import ChunkWriter, MessageType
from ingest.protocol.handshake import HANDSHAKE_SIZE
from ingest.publish import PublishRequest, PublishSession, Rejection


@dataclass
class RecordedPublication:
    request: PublishRequest
    metadata: list[dict[str, object]] = field(default_factory=list)
    packets: list[MediaPacket] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        self.metadata.append(metadata)
        await self._notify()

    async def on_packet(self, packet: MediaPacket) -> None:
        self.packets.append(packet)
        await self._notify()

    async def on_close(self, reason: str) -> None:
        assert self.close_reason is None, "on_close called twice"
        self.close_reason = reason
        self.closed.set()
        await self._notify()


class RecordingHandler:
    """Accepts every key except those in ``reject`` and one publisher per key at a time."""

    def __init__(self, reject: set[str] | None = None) -> None:
        self.reject = reject or set()
        self.publications: list[RecordedPublication] = []
        self.rejections: list[tuple[PublishRequest, Rejection]] = []
        self.changed = asyncio.Condition()

    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection:
        async with self.changed:
            live = {p.request.stream_key for p in self.publications if not p.closed.is_set()}
            if request.stream_key in self.reject or request.stream_key in live:
                rejection = (Rejection.bad_name() if request.stream_key in self.reject
                             else Rejection.already_live())
                self.rejections.append((request, rejection))
                self.changed.notify_all()
                return rejection
            pub = RecordedPublication(request, changed=self.changed)
            self.publications.append(pub)
            self.changed.notify_all()
            return pub

    async def wait_for(self, predicate: object, timeout: float = 30.0) -> None:
        assert callable(predicate)

        async def _wait() -> None:
            async with self.changed:
                await self.changed.wait_for(predicate)

        await asyncio.wait_for(_wait(), timeout)


class ClientEncoder:
    """The publisher side, just enough for tests: handshake bytes and chunked messages."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.writer = ChunkWriter(chunk_size)

    @staticmethod
    def handshake_c0c1(c1: bytes | None = None) -> bytes:
        return b"\x03" + (c1 if c1 is not None else bytes(HANDSHAKE_SIZE))

    @staticmethod
    def c2() -> bytes:
        return bytes(HANDSHAKE_SIZE)

    def command(self, name: str, tid: float, obj: AmfValue = None, *args: AmfValue,
                stream_id: int = 0, csid: int = 3) -> bytes:
        return self.writer.write(csid, MessageType.COMMAND_AMF0, stream_id, 0,
                                 amf0.encode(name, tid, obj, *args))

    def connect(self, app: str = "live", tid: float = 1.0,
                extra: dict[str, AmfValue] | None = None) -> bytes:
        obj: dict[str, AmfValue] = {"app": app, "type": "nonprivate",
                                    "tcUrl": f"rtmp://127.0.0.1/{app}", **(extra or {})}
        return self.command("connect", tid, obj)

    def set_chunk_size(self, size: int) -> bytes:
        data = self.writer.write(2, MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size))
        self.writer.chunk_size = size
        return data

    def data(self, stream_id: int, *values: AmfValue, timestamp: int = 0) -> bytes:
        return self.writer.write(4, MessageType.DATA_AMF0, stream_id, timestamp,
                                 amf0.encode(*values))

    def video(self, stream_id: int, timestamp: int, body: bytes, csid: int = 6) -> bytes:
        return self.writer.write(csid, MessageType.VIDEO, stream_id, timestamp, body)

    def audio(self, stream_id: int, timestamp: int, body: bytes, csid: int = 4) -> bytes:
        return self.writer.write(csid, MessageType.AUDIO, stream_id, timestamp, body)


class AsyncTestPublisher:
    """A minimal real-socket RTMP publisher for tests of the server's edges."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from ingest.protocol.buffer import Buffer
        from ingest.protocol.chunk import ChunkReader

        self.reader = reader
        self.writer = writer
        self.enc = ClientEncoder()
        self._chunks = ChunkReader()
        self._buf = Buffer(1 << 24)

    @classmethod
    async def open(cls, port: int, *, ssl: ssl_module.SSLContext | None = None,
                   prefix: bytes = b"") -> AsyncTestPublisher:
        """Connected to ``port`` (over TLS with ``ssl``); ``prefix`` is sent first, in
        clear (a PROXY protocol header, as a load balancer puts it)."""
        if not prefix:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl)
            return cls(reader, writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(prefix)
        await writer.drain()
        if ssl is not None:
            await writer.start_tls(ssl)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def handshake(self) -> None:
        await self.send(self.enc.handshake_c0c1())
        await self.reader.readexactly(1 + 2 * HANDSHAKE_SIZE)
        await self.send(self.enc.c2())

    async def next_command(self) -> list[AmfValue]:
        """The next AMF0 command the server sends (other messages are skipped)."""
        while True:
            m = self._chunks.next_message(self._buf)
            if m is None:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                self._buf.feed(data)
                continue
            if m.type_id == MessageType.SET_CHUNK_SIZE:
                self._chunks.set_chunk_size(struct.unpack(">I", m.payload)[0])
            elif m.type_id == MessageType.COMMAND_AMF0:
                return amf0.decode_all(m.payload)

    async def publish(self, key: str) -> str:
        """Handshake, connect, createStream, publish; returns the onStatus code."""
        await self.handshake()
        await self.send(self.enc.connect())
        assert (await self.next_command())[0] == "_result"
        await self.send(self.enc.command("createStream", 2.0))
        assert (await self.next_command())[:2] == ["_result", 2.0]
        await self.send(self.enc.command("publish", 3.0, None, key, "live", stream_id=1))
        while True:
            cmd = await self.next_command()
            if cmd[0] == "onStatus":
                info = cmd[3]
                assert isinstance(info, dict)
                return str(info["code"])

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True once the server closes the connection (reads until EOF)."""
        async def _drain() -> None:
            while await self.reader.read(65536):
                pass
        try:
            await asyncio.wait_for(_drain(), timeout)
        except (ConnectionError, OSError):
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
