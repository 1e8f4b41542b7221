"""The asyncio RTMP server around the sans-IO core (:class:`IngestServer`): one task per
connection, bounded, with backpressure to the publisher. RTMPS is the same server on a
second, TLS, listener; either listener may expect a PROXY protocol header first.

Design: docs/architecture.md, "Ingest: the RTMP server" and "Bounded connections".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
import ssl
from collections import Counter
from urllib.parse import parse_qsl

from castway.catalog import CatalogUnavailable
from castway.live.base import LiveStateError
from castway.net import ConnectionBudget, Listener, bind_socket
from castway.proxy_protocol import ProxyHeader, ProxyHeaderReader, ProxyProtocolError
from castway.settings import Settings
from castway.tls import ReloadableTls, TlsConfigError
from ingest.protocol import (
    ConnectRequested,
    Event,
    MediaReceived,
    MessageIgnored,
    MetadataReceived,
    PublishRequested,
    RtmpError,
    ServerSession,
    State,
    StreamDeleted,
    UnpublishRequested,
)
from ingest.publish import PublishHandler, PublishRequest, PublishSession, Rejection

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
#: Distinct "not taken" reasons logged per connection (a hostile publisher could make
#: every message a new one).
MAX_IGNORED_TOLD = 16
#: How long a rejected publisher gets to read its onStatus before we close.
REJECT_LINGER_S = 1.0


class _Close(Exception):  # noqa: N818 -- control flow within a connection
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Connection:
    def __init__(self, server: IngestServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, connection_id: str, peer: str,
                 handshake_deadline: float) -> None:
        self.server = server
        self.settings = server.settings
        self.reader = reader
        self.writer = writer
        self.id = connection_id
        self.peer = peer
        self.session = ServerSession()
        self.publication: PublishSession | None = None
        self.app = ""
        self.tc_url: str | None = None
        self.close_reason = "disconnected"
        self.write_lost = False
        # What the publisher sends that castway does not take (a codec it has no use
        # for, an encoder's extra tracks), told once per connection, not per message.
        self.ignored: set[str] = set()
        self.disconnected_for: str | None = None  # why the server cut it (disconnect())
        #: From accept, not from here: a TLS handshake and a PROXY header spend it too.
        self.handshake_deadline = handshake_deadline
        self.auth_deadline = 0.0

    @property
    def log_fields(self) -> dict[str, object]:
        return {"connection_id": self.id, "peer": self.peer}

    async def run(self) -> None:
        try:
            await self._serve()
        except _Close as close:
            self.close_reason = close.reason
        except RtmpError as exc:
            self.close_reason = f"protocol error: {exc}"
            logger.warning("rtmp protocol error, closing", extra={
                **self.log_fields, "error": str(exc), "error_type": type(exc).__name__})
        except (ConnectionError, OSError) as exc:
            self.close_reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            self.close_reason = "server stopping"
            raise
        except Exception:
            self.close_reason = "internal error"
            logger.exception("rtmp connection failed", extra=self.log_fields)
        finally:
            if self.disconnected_for is not None:
                self.close_reason = self.disconnected_for
            await self._finish()

    async def _finish(self) -> None:
        if self.publication is not None:
            await self._end_publication(self.close_reason)
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        logger.info("rtmp connection closed", extra={**self.log_fields,
                                                     "reason": self.close_reason})

    def disconnect(self, reason: str) -> None:
        """Cut the connection now: its read ends, and with it the connection task."""
        self.disconnected_for = reason
        # abort(), not close(): close() waits to flush what a stalled peer never reads.
        self.writer.transport.abort()

    def request_reconnect(self, tc_url: str | None) -> bool:
        """Send the E-RTMP v2 reconnect request if the publisher supports it (once)."""
        if not self.session.supports_reconnect or self.session.reconnect_requested \
                or self.session.state is State.CLOSED or self.writer.is_closing():
            return False
        self.session.request_reconnect(tc_url)
        # Written at once (not awaited): the connection task owns drain(); the bytes
        # queue behind whatever it is writing, in order, since data_to_send() is atomic.
        self.writer.write(self.session.data_to_send())
        logger.info("rtmp reconnect requested", extra={**self.log_fields, "tc_url": tc_url})
        return True

    async def _end_publication(self, reason: str) -> None:
        publication, self.publication = self.publication, None
        if publication is None:
            return
        self.server._publishers -= 1  # noqa: SLF001 -- the server's own bookkeeping
        self.server._publishers_changed.set()  # noqa: SLF001
        try:
            await publication.on_close(reason)
        except Exception:
            logger.exception("publish session on_close failed", extra=self.log_fields)

    def _deadline_timeout(self, last_media: float) -> tuple[float, str]:
        loop = asyncio.get_running_loop()
        if self.session.state is State.AWAIT_HANDSHAKE:
            return self.handshake_deadline - loop.time(), "handshake timeout"
        idle = last_media + self.settings.idle_timeout_s - loop.time()
        if not self.session.authenticated:
            auth = self.auth_deadline - loop.time()
            if auth < idle:
                return auth, "auth timeout"
        return idle, "idle timeout"

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.auth_deadline = loop.time() + self.settings.rtmp_auth_timeout_s
        last_media = loop.time()
        while True:
            timeout, what = self._deadline_timeout(last_media)
            if timeout <= 0:
                self._limit(what)
            try:
                # asyncio.timeout, not wait_for: no task per read (Python 3.11's wait_for
                # makes one), which was a fifth of a relaying edge's CPU
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                self._limit(what)
            if not data:
                raise _Close("disconnected")
            events = self.session.receive_data(data)
            while events:
                await self._flush()
                decided = False
                for event in events:
                    if isinstance(event, MediaReceived):
                        last_media = loop.time()
                    decided |= isinstance(event, ConnectRequested | PublishRequested)
                    await self._on_event(event)
                # After a decision the session parses what it held back meanwhile.
                events = self.session.receive_data(b"") if decided else []
            await self._flush()
            if self.session.state is State.CLOSED:
                raise _Close("closed by server")

    def _limit(self, what: str) -> None:
        logger.warning(f"rtmp {what}, closing", extra={**self.log_fields, "limit": what})
        raise _Close(what)

    async def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and not self.write_lost:
            self.writer.write(out)
            try:
                await self.writer.drain()
            except ConnectionResetError:
                # The publisher closed right after its last frames (an encoder's TLS
                # close does: close_notify, then the socket): our acknowledgement found
                # the socket gone, but what it sent before is buffered and still to be
                # read. Go on reading to the end; nothing more is written.
                self.write_lost = True

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, MediaReceived):
            if self.publication is not None:
                await self.publication.on_packet(event.packet)
        elif isinstance(event, MetadataReceived):
            if self.publication is not None:
                await self.publication.on_metadata(dict(event.metadata))
        elif isinstance(event, ConnectRequested):
            await self._on_connect(event)
        elif isinstance(event, PublishRequested):
            await self._on_publish(event)
        elif isinstance(event, UnpublishRequested | StreamDeleted):
            if self.publication is not None:
                await self._end_publication("unpublished")
        elif isinstance(event, MessageIgnored):
            if event.reason not in self.ignored and len(self.ignored) < MAX_IGNORED_TOLD:
                self.ignored.add(event.reason)
                logger.info("rtmp: %s (not taken; said once per connection)", event.reason,
                            extra={**self.log_fields, "ignored": event.reason})
        else:
            logger.debug("rtmp event", extra={**self.log_fields, "event": repr(event)})

    async def _on_connect(self, event: ConnectRequested) -> None:
        self.app, self.tc_url = event.app, event.tc_url
        if event.app != self.settings.rtmp_app:
            logger.info("rtmp connect to unknown app rejected",
                        extra={**self.log_fields, "app": event.app})
            self.session.reject_connect(f"Unknown application {event.app!r}.")
            await self._flush()
            raise _Close(f"unknown app {event.app!r}")
        self.session.accept_connect()
        await self._flush()

    async def _on_publish(self, event: PublishRequested) -> None:
        key, _, query = event.stream_key.partition("?")
        request = PublishRequest(app=self.app, stream_key=key,
                                 query=dict(parse_qsl(query, keep_blank_values=True)),
                                 peer=self.peer, connection_id=self.id, tc_url=self.tc_url)
        if self.server.stopping:
            outcome: PublishSession | Rejection = Rejection.unavailable("shutting down")
        else:
            try:
                outcome = await self.server.handler.on_publish(request)
            except CatalogUnavailable as e:
                # Say so, and that it passes: encoders that retry (OBS does) get in later.
                logger.warning("publish refused: catalog unavailable",
                               extra={**self.log_fields, "error": str(e)})
                outcome = Rejection.unavailable("the catalog cannot be reached, retry shortly")
            except LiveStateError as e:
                logger.warning("publish refused: live state unavailable",
                               extra={**self.log_fields, "error": str(e)})
                outcome = Rejection.unavailable("the live state cannot be reached, "
                                                "retry shortly")
            except Exception:
                logger.exception("publish handler failed", extra=self.log_fields)
                outcome = Rejection("NetStream.Publish.Denied", "Internal server error.")
        if isinstance(outcome, Rejection):
            logger.info("rtmp publish rejected", extra={
                **self.log_fields, "code": outcome.code, "description": outcome.description})
            self.session.reject_publish(outcome.code, outcome.description)
            await self._flush()
            # Let the publisher read the status before the connection goes away.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REJECT_LINGER_S):
                    await self.reader.read(READ_SIZE)
            raise _Close(f"publish rejected: {outcome.code}")
        self.publication = outcome
        self.server._publishers += 1  # noqa: SLF001
        self.session.accept_publish()
        self.server.authenticated(self)
        await self._flush()
        logger.info("rtmp publish started", extra={**self.log_fields, "app": self.app})


class IngestServer:
    """RTMP listener on ``settings.host:settings.rtmp_port`` (0: any free port), and an
    RTMPS one on ``settings.rtmps_port`` when that is set (0: none). Both share every
    limit: the connection budget, the pre-auth cap, the per-address cap, the timeouts."""

    def __init__(self, settings: Settings, handler: PublishHandler,
                 max_connections: int | None = None) -> None:
        self.settings = settings
        self.handler = handler
        self.stopping = False
        #: All RTMP connections this server holds at once (default: the RTMP share of
        #: the process's connection budget).
        self.max_connections = (max_connections if max_connections is not None else
                                ConnectionBudget.from_limit(settings.max_connections).rtmp)
        self._server: Listener | None = None
        self._tls_server: Listener | None = None
        #: The RTMPS certificate, re-read by :meth:`reload_tls` (SIGHUP).
        self.tls: ReloadableTls | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections accepted whose publish was not accepted (yet).
        self._preauth: set[asyncio.Task[None]] = set()
        self._per_ip: Counter[str] = Counter()
        self._publishers = 0
        self._publishers_changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)

    async def start(self) -> None:
        settings = self.settings
        if settings.rtmps_port:
            if settings.tls_cert_file is None or settings.tls_key_file is None:
                raise TlsConfigError("RTMPS needs CASTWAY_TLS_CERT_FILE and "
                                     "CASTWAY_TLS_KEY_FILE")
            self.tls = ReloadableTls(settings.tls_cert_file, settings.tls_key_file)
        sock = bind_socket(settings.host, settings.rtmp_port)
        self._server = Listener(sock, "rtmp", self._spawn, admit=self._admit).start()
        logger.info("rtmp ingest listening", extra={
            "host": settings.host, "port": self.port, "proxy_protocol": settings.proxy_protocol})
        if self.tls is not None:
            tls_sock = bind_socket(settings.host, settings.rtmps_port)
            self._tls_server = Listener(tls_sock, "rtmps", self._spawn_tls,
                                        admit=self._admit).start()
            logger.info("rtmps ingest listening", extra={
                "host": settings.host, "port": self.tls_port,
                "proxy_protocol": settings.proxy_protocol})

    def reload_tls(self) -> bool:
        """Re-read the RTMPS certificate and key: new connections get them, live ones
        keep theirs. False (and the old certificate kept) when they cannot be loaded."""
        return self.tls.reload() if self.tls is not None else False

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("IngestServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        """The RTMPS port, or None when RTMPS is off."""
        if self._tls_server is None:
            return None
        return self._tls_server.port

    @property
    def active_publishers(self) -> int:
        return self._publishers

    @property
    def reconnectable_publishers(self) -> int:
        """Publishers that announced E-RTMP v2 reconnect support (capsEx 0x01)."""
        return sum(1 for conn in self._connections.values()
                   if conn.publication is not None and conn.session.supports_reconnect)

    @property
    def connections(self) -> int:
        return len(self._tasks)

    @property
    def preauth_connections(self) -> int:
        """Connections whose publish has not been accepted (yet)."""
        return len(self._preauth)

    def _admit(self, _peer: object) -> bool:
        if self.stopping:
            return False
        return (len(self._tasks) < self.max_connections
                and len(self._preauth) < self.settings.rtmp_max_preauth_connections)

    async def _spawn(self, sock: socket.socket, peer: object) -> None:
        self._start_task(sock, peer, tls=False)

    async def _spawn_tls(self, sock: socket.socket, peer: object) -> None:
        self._start_task(sock, peer, tls=True)

    def _start_task(self, sock: socket.socket, peer: object, *, tls: bool) -> None:
        # Everything that waits on the peer (a PROXY header, the TLS handshake) happens
        # in the connection's own task: the accept loop never waits on one client.
        task = asyncio.create_task(self._accept(sock, peer, tls=tls),
                                   name="rtmps-connection" if tls else "rtmp-connection")
        self._tasks.add(task)
        self._preauth.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._preauth.discard)

    def authenticated(self, conn: _Connection) -> None:
        """``conn``'s publish was accepted: it no longer counts as unauthenticated."""
        for task, c in self._connections.items():
            if c is conn:
                self._preauth.discard(task)

    def asked_to_reconnect(self, connection_id: str) -> bool:
        """Whether the connection ``connection_id`` was sent a reconnect request."""
        return any(conn.id == connection_id and conn.session.reconnect_requested
                   for conn in self._connections.values())

    def disconnect(self, connection_id: str, reason: str = "broadcast stopped") -> bool:
        """Cut the connection ``connection_id``; whether it was open."""
        for conn in list(self._connections.values()):
            if conn.id == connection_id:
                conn.disconnect(reason)
                return True
        return False

    def request_reconnect(self, tc_url: str | None) -> int:
        """Ask every publisher that supports it to reconnect to ``tc_url`` (E-RTMP v2
        Reconnect Request); returns how many were asked. Each is asked at most once."""
        asked = 0
        for conn in list(self._connections.values()):
            if conn.publication is None:
                continue
            try:
                asked += conn.request_reconnect(tc_url)
            except Exception:  # one broken connection never affects another
                logger.exception("rtmp reconnect request failed", extra=conn.log_fields)
        return asked

    async def wait_for_publishers(self, timeout_s: float) -> int:
        """Wait until no publisher is left or ``timeout_s`` passed; returns how many are
        still publishing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._publishers > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._publishers_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._publishers_changed.wait()
        return self._publishers

    async def _accept(self, sock: socket.socket, sock_peer: object, *, tls: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.handshake_timeout_s
        connection_id = f"{self._prefix}-{next(self._ids)}"
        address = sock_peer if isinstance(sock_peer, tuple) else None
        fields: dict[str, object] = {"connection_id": connection_id, "tls": tls}
        if self.stopping:
            _close(sock)
            return
        if self.settings.proxy_protocol:
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    header = await _read_proxy_header(sock)
            except (ProxyProtocolError, TimeoutError, OSError) as e:
                # The balancer always sends one; without it the address the limits
                # key on would be the balancer's, so the spec says refuse.
                logger.warning("rtmp connection without a valid PROXY header, closing",
                               extra={**fields, "peer": _format_peer(address),
                                      "error": str(e) or type(e).__name__,
                                      "limit": "proxy_protocol"})
                _close(sock)
                return
            except asyncio.CancelledError:
                _close(sock)  # stop(): the socket is ours until a transport takes it
                return
            if header.source is not None:
                address = header.source
        ip = str(address[0]) if address else "?"
        peer = _format_peer(address)
        fields["peer"] = peer
        if self._per_ip[ip] >= self.settings.max_connections_per_ip:
            logger.warning("rtmp too many connections from one address, closing", extra={
                **fields, "limit": "max_connections_per_ip",
                "max_connections_per_ip": self.settings.max_connections_per_ip})
            _close(sock)
            return
        self._per_ip[ip] += 1
        try:
            try:
                reader, writer = await self._open_streams(sock, tls, deadline)
            except (TimeoutError, OSError, ssl.SSLError) as e:
                _close(sock)
                what = "tls handshake timeout" if isinstance(e, TimeoutError) \
                    else "tls handshake failed"
                logger.warning(f"rtmp {what}, closing", extra={
                    **fields, "limit": what, "error": str(e) or type(e).__name__})
                return
            conn = _Connection(self, reader, writer, connection_id, peer, deadline)
            task = asyncio.current_task()
            assert task is not None  # _start_task runs each client in its own task
            self._connections[task] = conn
            try:
                await conn.run()
            except asyncio.CancelledError:
                pass  # stop() cancels us; run() already cleaned up
            finally:
                self._connections.pop(task, None)
        except asyncio.CancelledError:
            _close(sock)
        finally:
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    async def _open_streams(self, sock: socket.socket, tls: bool, deadline: float
                            ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not tls:
            return await asyncio.open_connection(sock=sock, limit=READ_SIZE)
        assert self.tls is not None  # the TLS listener exists only with a certificate
        # The context current now: a reload (SIGHUP) affects connections after it only.
        context = self.tls.context
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError("handshake timeout")
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        # a timeout as well as ssl_handshake_timeout: the latter covers the handshake
        # only, the former a peer that never even sends its ClientHello's last byte.
        async with asyncio.timeout(remaining):
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=context, ssl_handshake_timeout=remaining)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop accepting; wait up to ``grace_s`` for publishers to finish; close all."""
        self.stopping = True
        for listener in (self._server, self._tls_server):
            if listener is not None:
                listener.close()
        # Connections that are not publishing have nothing to lose: close them now.
        for task in list(self._tasks):
            conn = self._connections.get(task)
            if conn is None or conn.publication is None:
                task.cancel()
        if grace_s > 0:
            deadline = asyncio.get_running_loop().time() + grace_s
            while self._publishers > 0 and self._connections:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                await asyncio.wait(list(self._connections), timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for listener in (self._server, self._tls_server):
            if listener is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):
                        await listener.wait_closed()
        logger.info("rtmp ingest stopped")


async def _read_proxy_header(sock: socket.socket) -> ProxyHeader:
    """The PROXY header at the start of ``sock``, read without taking a byte more."""
    loop = asyncio.get_running_loop()
    reader = ProxyHeaderReader()
    while True:
        data = await loop.sock_recv(sock, reader.wanted)
        if not data:
            raise ProxyProtocolError("closed before a complete PROXY header")
        header = reader.receive_data(data)
        if header is not None:
            return header


def _format_peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "?"


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
