"""One relay connection from the edge to a transcoding node: castway's RTMP client
(:class:`~ingest.protocol.client.PublisherSession`) over a TCP connection, publishing
the broadcast's own stream key, announcing E-RTMP v2 Reconnect.

:meth:`RelayLink.open` returns once the node started the publication (for a
broadcast live on another node, once that node handed it over); a task then reads what
the node sends: a reconnect request sets :attr:`RelayLink.move_requested`, the end of
the connection sets :attr:`RelayLink.lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from castway.media import MediaPacket
from castway.model import Node
from castway.proxy_protocol import ProxyHeader
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.client import (
    Connected,
    PublisherSession,
    PublishStarted,
    ReconnectRequested,
    Refused,
)
from ingest.protocol.commands import CapsEx
from ingest.protocol.errors import RtmpError
from ingest.protocol.flv import tag_body

logger = logging.getLogger(__name__)

READ_SIZE = 65536


class RelayFailed(Exception):
    """The node could not be reached, or the connection failed before publishing."""


class RelayRefused(RelayFailed):
    """The node refused the publish (``code``: its onStatus code)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}".strip(": "))
        self.code = code
        self.description = description


def _split(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def proxy_header(publisher: str, node_address: str) -> bytes:
    """A PROXY v2 header naming ``publisher`` ("host:port", as the edge's server saw it)
    as the client of a relay to ``node_address``, so the node's limits, logs and publish
    authorization see the publisher rather than the edge. LOCAL (the node then uses the
    edge's address) where the two addresses are not of one IP family."""
    source, destination = _split(publisher), _split(node_address)
    if source is not None and destination is not None and not _is_ip(destination[0]):
        # a node heartbeating a name (compose's "ingest:1935"): what matters to it is
        # the source; the destination is its own port on the source's family's "any"
        destination = ("::" if ":" in source[0] else "0.0.0.0", destination[1])
    header = ProxyHeader(2, source, destination, 0)
    try:
        return bytes(header)
    except ValueError:  # no address, or IPv4 and IPv6 mixed
        return bytes(ProxyHeader(2, None, None, 0))


class RelayLink:
    def __init__(self, node: Node, *, app: str, stream_key: str,
                 fourccs: tuple[str, ...] = (), write_timeout_s: float = 10.0,
                 publisher: str | None = None) -> None:
        """``publisher``: the publisher's address, sent to the node in a PROXY v2 header
        first (the node must expect one: its ``PROXY_PROTOCOL``); None: no header."""
        self.node = node
        self.publisher = publisher
        self.write_timeout_s = write_timeout_s
        host, _, port = node.address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.session = PublisherSession(
            tc_url=f"rtmp://{node.address}/{app}", app=app, stream_name=stream_key,
            fourcc_list=fourccs, caps_ex=int(CapsEx.RECONNECT))
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        #: The node asked this relay to move (E-RTMP v2 reconnect request): it drains.
        self.move_requested = False
        #: The connection ended without this side closing it (the node died, or cut it).
        self.lost = False
        self.closed = False
        self.bytes_sent = 0

    @property
    def node_id(self) -> str:
        return self.node.id

    async def open(self, timeout_s: float) -> None:
        """Connect and publish. Raises :class:`RelayRefused` if the node refuses, and
        :class:`RelayFailed` if it cannot be reached or gives no answer in time."""
        try:
            async with asyncio.timeout(timeout_s):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                await self._publish()
        except (OSError, TimeoutError, RtmpError) as exc:
            await self.close(unpublish=False)
            raise RelayFailed(f"{self.node.address}: {exc or type(exc).__name__}") from exc
        except RelayFailed:
            await self.close(unpublish=False)
            raise
        self._listener = asyncio.create_task(self._listen(), name=f"relay-{self.node.id}")

    async def _publish(self) -> None:
        assert self._reader is not None and self._writer is not None
        if self.publisher is not None:
            self._writer.write(proxy_header(self.publisher, self.node.address))
        self._writer.write(self.session.data_to_send())
        while True:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise RelayFailed(f"{self.node.address} closed the connection before "
                                  "publishing")
            for event in self.session.receive_data(data):
                if isinstance(event, Refused):
                    raise RelayRefused(event.code, event.description)
                if isinstance(event, ReconnectRequested):
                    self.move_requested = True  # drained while we were connecting
                if isinstance(event, PublishStarted):
                    self._writer.write(self.session.data_to_send())
                    return
                if isinstance(event, Connected):
                    pass  # createStream and publish follow on their own
            self._writer.write(self.session.data_to_send())
            await self._writer.drain()

    async def _listen(self) -> None:
        assert self._reader is not None and self._writer is not None
        try:
            while data := await self._reader.read(READ_SIZE):
                for event in self.session.receive_data(data):
                    if isinstance(event, ReconnectRequested):
                        if not self.move_requested:
                            logger.info("relay asked to move", extra={
                                "node": self.node.id, "tc_url": event.tc_url})
                        self.move_requested = True
                if out := self.session.data_to_send():  # acknowledgements, pongs
                    self._writer.write(out)
        except (OSError, RtmpError) as exc:
            logger.info("relay connection failed", extra={"node": self.node.id,
                                                           "error": str(exc)})
        if not self.closed:
            self.lost = True

    # --- media ---------------------------------------------------------------------------
    def send(self, packet: MediaPacket, timestamp: int | None = None) -> None:
        """Queue one packet for the wire (its own DTS as the RTMP timestamp)."""
        body = tag_body(packet)
        self.session.send_media(packet.kind,
                                packet.dts_ms if timestamp is None else timestamp, body)
        self._write()

    def send_metadata(self, metadata: dict[str, AmfValue]) -> None:
        self.session.send_metadata(metadata)
        self._write()

    def _write(self) -> None:
        out = self.session.data_to_send()
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(out)
            self.bytes_sent += len(out)

    async def drain(self) -> None:
        """Wait until the node takes what was queued; a node that does not within the
        write timeout is taken as lost."""
        if self._writer is None or self.lost:
            return
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            logger.warning("relay write failed", extra={"node": self.node.id,
                                                        "error": str(exc) or "timeout"})
            self.lost = True
            if self._writer is not None:
                self._writer.transport.abort()

    async def close(self, *, unpublish: bool = True) -> None:
        """End the relay: ``unpublish`` politely first (the broadcast ends on that node,
        or, after a move, it was already handed over)."""
        self.closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            if unpublish and not self.lost:
                self.session.unpublish()
                with contextlib.suppress(Exception):
                    writer.write(self.session.data_to_send())
                    async with asyncio.timeout(2.0):
                        await writer.drain()
            self.session.close()
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
