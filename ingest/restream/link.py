"""One restream target's sender: a task that connects, publishes, sends what its
:class:`~ingest.restream.queue.GopQueue` holds, and on any failure reconnects after an
exponential backoff (with jitter), for as long as the broadcast is live.

The ingest path only ever calls :meth:`TargetLink.push` (synchronous, bounded): a slow,
stalled or dead target costs the broadcast nothing. A codec the target did not announce
(HEVC, AV1, VP9 or Opus to a server without Enhanced RTMP) is refused before any media
is sent, and the target is given up for this broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from castway.events.restreams import RestreamFailed
from castway.media import MediaPacket
from castway.restream.targets import TargetAddress, TargetState
from ingest.protocol.client import (
    ClientEvent,
    Connected,
    PublisherSession,
    PublishStarted,
    ReconnectRequested,
    Refused,
    StatusReceived,
)
from ingest.protocol.errors import FlvError, RtmpError
from ingest.protocol.flv import fourcc, needs_enhanced, tag_body
from ingest.restream.queue import GopQueue

logger = logging.getLogger(__name__)

#: A connection (TCP, TLS, handshake, connect, publish) that takes longer failed.
CONNECT_TIMEOUT_S = 10.0
#: A write the target does not take within this long: it stalled; reconnect.
WRITE_TIMEOUT_S = 20.0
#: On the broadcast's end, what is still queued is sent for at most this long.
FLUSH_TIMEOUT_S = 3.0
READ_SIZE = 65536


class TargetFailed(Exception):
    """This connection failed; the target is tried again after the backoff."""


class TargetRefused(Exception):
    """The target can never take this broadcast (its codec); it is given up."""


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float
    max_s: float

    def delay(self, failures: int, jitter: float) -> float:
        """Before attempt ``failures + 1``: base * 2^(failures-1), capped, times a
        jitter factor in [0.5, 1) so targets that failed together spread out."""
        raw = min(self.max_s, self.base_s * 2.0 ** max(0, failures - 1))
        return raw * (0.5 + jitter / 2)


class TargetLink:
    """Sends one broadcast to one target. ``start()``, ``push()``, ``stop()``."""

    def __init__(self, target_id: str, address: TargetAddress, *, broadcast_id: str,
                 channel: str, queue_bytes: int, backoff: Backoff, alert_after: int,
                 on_failed: Callable[[RestreamFailed], Awaitable[None]],
                 ssl_context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.target_id = target_id
        self.address = address
        self.broadcast_id = broadcast_id
        self.channel = channel
        self.queue = GopQueue(queue_bytes)
        self.backoff = backoff
        self.alert_after = alert_after
        self._on_failed = on_failed
        self._ssl_context = ssl_context
        self.connect_timeout_s = connect_timeout_s
        self.write_timeout_s = write_timeout_s
        self.state = TargetState.WAITING
        self.error = ""
        self.failures = 0  # consecutive
        self.connections = 0  # publishes that started
        self.bytes_sent = 0  # media bytes written, every connection together
        self._sent_before = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def log_fields(self) -> dict[str, object]:
        return {"broadcast_id": self.broadcast_id, "channel": self.channel,
                "target": self.target_id, "target_url": self.address.tc_url}

    # --- the ingest side -------------------------------------------------------------
    def push(self, packet: MediaPacket) -> None:
        """Queue a packet (never blocks; the queue drops oldest GOPs when full)."""
        if self.state in (TargetState.REFUSED, TargetState.STOPPED):
            return
        self.queue.push(packet)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"restream-{self.target_id}")

    async def stop(self, *, flush_s: float = FLUSH_TIMEOUT_S) -> None:
        """The broadcast ended here: send what is queued (for at most ``flush_s`` when
        publishing), unpublish, close."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        if self.state is not TargetState.LIVE:
            self._task.cancel()
        await asyncio.wait({self._task}, timeout=flush_s)  # never raises
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self.state is not TargetState.REFUSED:
            self.state = TargetState.STOPPED

    # --- the sender ------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._connection()
                return  # stopped after a clean flush
            except TargetRefused as e:
                self.state, self.error = TargetState.REFUSED, str(e)
                self.failures += 1
                logger.warning("restream target refused for this broadcast",
                               extra={**self.log_fields, "error": self.error})
                await self._alert(gave_up=True)
                return
            except (TargetFailed, RtmpError, OSError, TimeoutError, FlvError) as e:
                if self._stopping:
                    return
                self.failures += 1
                self.state = TargetState.RETRYING
                self.error = str(e) or type(e).__name__
                delay = self.backoff.delay(self.failures, random.random())
                logger.warning("restream target failed; reconnecting", extra={
                    **self.log_fields, "error": self.error, "failures": self.failures,
                    "retry_in_s": round(delay, 2)})
                if self.failures % self.alert_after == 0:
                    await self._alert(gave_up=False)
                await asyncio.sleep(delay)

    async def _alert(self, *, gave_up: bool) -> None:
        try:
            await self._on_failed(RestreamFailed(
                self.broadcast_id, self.channel, self.target_id, self.address.tc_url,
                self.error, self.failures, gave_up))
        except Exception:  # the live state is down: the log above still says it
            logger.exception("restream.failed not published", extra=self.log_fields)

    async def _wait_for_media(self) -> None:
        while not self.queue.configs and not len(self.queue):
            self._wake.clear()
            await self._wake.wait()

    def _fourccs(self) -> tuple[str, ...]:
        """The E-RTMP codecs this broadcast needs (none for H.264 + AAC)."""
        return tuple(fourcc(p.codec) for p in self.queue.configs.values()
                     if needs_enhanced(p.codec))

    async def _connection(self) -> None:
        await self._wait_for_media()
        self.state = TargetState.CONNECTING
        a = self.address
        needed = self._fourccs()
        session = PublisherSession(tc_url=a.tc_url, app=a.app, stream_name=a.key,
                                   fourcc_list=needed)
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                a.host, a.port, ssl=self._ssl_context() if a.tls else None,
                server_hostname=a.host if a.tls else None)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._publish(session, reader, writer, needed)
            self.state, self.error = TargetState.LIVE, ""
            self.failures = 0
            self.connections += 1
            logger.info("restream target publishing", extra={
                **self.log_fields, "connections": self.connections})
            await self._stream(session, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _publish(self, session: PublisherSession, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, needed: tuple[str, ...]) -> None:
        writer.write(session.data_to_send())
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise TargetFailed("the target closed the connection before publishing")
            for event in session.receive_data(data):
                if isinstance(event, Connected):
                    missing = [f for f in needed if not event.accepts(f)]
                    if missing:
                        raise TargetRefused(
                            f"{self.address.tc_url} does not take {', '.join(missing)} "
                            "(it announced no Enhanced RTMP support for it); send H.264 "
                            "and AAC to this target, or use a service that takes them")
                elif isinstance(event, Refused):
                    raise TargetFailed(f"the target refused: {event.code} "
                                       f"{event.description}".strip())
                elif isinstance(event, PublishStarted):
                    writer.write(session.data_to_send())
                    return
            writer.write(session.data_to_send())
            await writer.drain()

    async def _stream(self, session: PublisherSession, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """Send the queue until the broadcast stops (flushed: returns) or the connection
        fails (raises)."""
        self._sent_before = self.bytes_sent
        listener = asyncio.create_task(self._listen(session, reader, writer))
        try:
            base: int | None = None
            for header in self.queue.restart():
                session.send_media(header.kind, 0, tag_body(header))
            while True:
                packet = self.queue.pop()
                if packet is None:
                    await self._write(session, writer)
                    if listener.done():
                        listener.result()  # raises what ended it
                        raise TargetFailed("the target closed the connection")
                    if self._stopping:
                        session.unpublish()
                        await self._write(session, writer)
                        return
                    self._wake.clear()
                    waiter = asyncio.create_task(self._wake.wait())
                    await asyncio.wait({waiter, listener}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                if base is None:
                    base = packet.dts_ms  # each connection's timestamps start at 0
                timestamp = max(0, packet.dts_ms - base)
                session.send_media(packet.kind, timestamp, tag_body(packet))
                await self._write(session, writer)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def _write(self, session: PublisherSession, writer: asyncio.StreamWriter) -> None:
        data = session.data_to_send()
        if not data:
            return
        writer.write(data)
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await writer.drain()
        except TimeoutError:
            raise TargetFailed(f"the target took nothing for {self.write_timeout_s:g} s "
                               "(stalled)") from None
        self.bytes_sent = self._sent_before + session.media_bytes_sent

    async def _listen(self, session: PublisherSession, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """What the target says while we publish: pings (answered), acknowledgements,
        and the reasons to leave (EOF, an error status, a reconnect request)."""
        while data := await reader.read(READ_SIZE):
            events: list[ClientEvent] = session.receive_data(data)
            for event in events:
                if isinstance(event, ReconnectRequested):
                    raise TargetFailed("the target asked us to reconnect")
                if isinstance(event, StatusReceived) and event.level == "error":
                    raise TargetFailed(f"the target said {event.code}: {event.description}")
            if out := session.data_to_send():
                writer.write(out)
        raise TargetFailed("the target closed the connection")
