"""The SRT listener (:class:`SrtServer`): encoders call in with a streamid naming their
stream key; the MPEG-TS they send is demuxed with PyAV into MediaPackets that go down
the same publish path as RTMP's (a :class:`PublishHandler`, in castway the
BroadcastManager: key check, channel claim, one publisher per channel, reconnect grace).

Threads, not the event loop, make every libsrt call (they block):

- libsrt's own receive thread runs the accept hook during each caller's handshake: the
  streamid is parsed there and the publish decided (on the loop, waited for up to
  :data:`DECIDE_TIMEOUT_S`), so a refusal is an SRT rejection code the caller sees
  (1400 malformed streamid, 1403 wrong key, 1409 channel already live, 1503 unavailable)
  rather than a connection that opens and drops. With a passphrase set, only the
  streamid is checked there: libsrt checks the passphrase after the hook, and a
  decision there would claim the channel for a caller whose handshake then fails; the
  publish is decided once the caller is connected, and a refusal closes the connection;
- one accept thread;
- one thread per publisher: ``srt_recvmsg`` -> PyAV's MPEG-TS demuxer (demux.py) ->
  ``on_packet`` awaited on the loop (its backpressure reaches the socket: while the loop
  does not take a packet the thread does not read, and SRT's buffer, then the caller's
  sender buffer, fill).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import itertools
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import av

from castway.media import MediaPacket
from castway.settings import Settings
from ingest.publish import (
    PublishHandler,
    PublishRequest,
    PublishSession,
    Rejection,
    TransportStatsSink,
)
from ingest.srt import libsrt
from ingest.srt.demux import demux_ts
from ingest.srt.streamid import RejectCode, StreamIdError, parse_streamid

logger = logging.getLogger(__name__)

#: How long a caller's handshake waits for the publish decision (catalog, live state).
DECIDE_TIMEOUT_S = 3.0
#: An accepted handshake whose socket srt_accept never returns is given up after this.
ACCEPT_TIMEOUT_S = 10.0
#: How often a publisher's SRT statistics are sampled.
STATS_INTERVAL_S = 1.0
#: How long a blocked srt_recvmsg waits before looking at whether to stop.
RECV_TIMEOUT_MS = 250

T = TypeVar("T")


def refusal_code(rejection: Rejection) -> RejectCode:
    """The SRT rejection code of a publish refusal."""
    if rejection == Rejection.already_live():
        return RejectCode.CONFLICT
    if rejection.code == "NetStream.Publish.Denied":
        return RejectCode.UNAVAILABLE
    return RejectCode.FORBIDDEN


@dataclass
class _Pending:
    """A caller the hook let in, before srt_accept hands over its socket."""

    request: PublishRequest
    session: PublishSession | None  # None: decided after the handshake (passphrase set)


class _Stopped(Exception):  # noqa: N818 -- control flow within a connection
    pass


class _Reader:
    """The file-like object PyAV reads the MPEG-TS from: SRT messages, concatenated."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.buf = ctypes.create_string_buffer(libsrt.LIVE_MAX_PAYLOAD * 2)
        self.pending = b""

    def read(self, size: int) -> bytes:
        conn = self.conn
        while not self.pending:
            if conn.stop.is_set():
                raise _Stopped
            try:
                n = conn.sock.recv(self.buf)
            except libsrt.SrtError as exc:
                if exc.code not in (libsrt.ErrorCode.ECONNLOST, libsrt.ErrorCode.ENOCONN):
                    raise
                # The caller closed (or vanished): end of stream, so that libav hands
                # over what its parsers still hold (the last frames).
                conn.close_reason = "disconnected"
                return b""
            now = time.monotonic()
            conn.maybe_sample(now)
            if n:
                conn.last_data = now
                self.pending = self.buf.raw[:n]
            elif now - conn.last_data > conn.server.settings.idle_timeout_s:
                conn.close_reason = "idle timeout"
                raise _Stopped
        out, self.pending = self.pending[:size], self.pending[size:]
        return out


class _Connection:
    def __init__(self, server: SrtServer, sock: libsrt.Socket, pending: _Pending) -> None:
        self.server = server
        self.sock = sock
        self.request = pending.request
        self.session: PublishSession | None = pending.session
        self.id = pending.request.connection_id
        self.stop = threading.Event()
        self.close_reason = "disconnected"
        self.last_data = time.monotonic()
        self.last_sample = 0.0
        self.thread = threading.Thread(target=self.run, name=f"srt-{self.id}", daemon=True)

    @property
    def log_fields(self) -> dict[str, object]:
        return {"connection_id": self.id, "peer": self.request.peer}

    def maybe_sample(self, now: float) -> None:
        if now - self.last_sample < STATS_INTERVAL_S:
            return
        self.last_sample = now
        try:
            s = self.sock.stats()
        except libsrt.SrtError:
            return
        stats = {"srt_rtt_ms": round(s.rtt_ms, 2),
                 "srt_bandwidth_mbps": round(s.bandwidth_mbps, 3),
                 "srt_recv_rate_mbps": round(s.recv_rate_mbps, 3),
                 "srt_packets_lost": float(s.packets_lost),
                 "srt_packets_retransmitted": float(s.packets_retransmitted),
                 "srt_packets_dropped": float(s.packets_dropped)}
        session = self.session
        if session is not None and isinstance(session, TransportStatsSink):
            self.server.loop.call_soon_threadsafe(session.on_transport_stats, stats)

    def _decide(self) -> bool:
        """The publish decision after the handshake (see SrtServer's doc): whether to go
        on."""
        outcome = self.server.call(self.server._decide(self.request))  # noqa: SLF001
        if isinstance(outcome, Rejection):
            logger.info("srt publish rejected after the handshake", extra={
                **self.log_fields, "code": outcome.code, "description": outcome.description,
                "srt_code": int(refusal_code(outcome))})
            self.close_reason = f"publish rejected: {outcome.code}"
            return False
        self.session = outcome
        return True

    def run(self) -> None:
        try:
            if self.session is None and not self._decide():
                return
            self._demux()
        except _Stopped:
            pass
        except libsrt.SrtError as exc:
            self.close_reason = f"connection error: {exc}"
        except av.error.FFmpegError as exc:
            self.close_reason = f"mpeg-ts error: {exc}"
            logger.warning("srt publisher sent what libav cannot demux",
                           extra={**self.log_fields, "error": str(exc)})
        except Exception:
            self.close_reason = "internal error"
            logger.exception("srt connection failed", extra=self.log_fields)
        finally:
            self.sock.close()
            if self.server.disconnected_for.get(self.id):
                self.close_reason = self.server.disconnected_for.pop(self.id)
            if self.session is not None:
                with contextlib.suppress(Exception):
                    self.server.call(self.session.on_close(self.close_reason))
            self.server.connection_ended(self)
            logger.info("srt connection closed", extra={**self.log_fields,
                                                        "reason": self.close_reason})

    def _demux(self) -> None:
        ignored = demux_ts(_Reader(self), self._deliver)
        if ignored:
            logger.info("srt publisher streams ignored (codec not taken)",
                        extra={**self.log_fields, "codecs": sorted(ignored)})

    def _deliver(self, packet: MediaPacket) -> None:
        if self.stop.is_set() or self.session is None:
            raise _Stopped
        self.server.call(self.session.on_packet(packet))


class SrtServer:
    """SRT listener on UDP ``settings.host:settings.srt_port`` (0 binds any free port:
    tests; the wiring starts it only when the setting is not 0)."""

    def __init__(self, settings: Settings, handler: PublishHandler) -> None:
        self.settings = settings
        self.handler = handler
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the one start() runs on
        self._listener: libsrt.Socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._connections: dict[str, _Connection] = {}
        self._per_ip: Counter[str] = Counter()
        self.disconnected_for: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._port = 0
        self._publishers_changed = asyncio.Event()

    # --- lifecycle (event loop) -----------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server was started on (threads hand their work to it)."""
        if self._loop is None:
            raise RuntimeError("SrtServer is not started")
        return self._loop

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        listener = await asyncio.to_thread(self._open)
        self._listener = listener
        self._port = listener.port()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="srt-accept",
                                               daemon=True)
        self._accept_thread.start()
        logger.info("srt ingest listening", extra={
            "host": self.settings.host, "port": self._port,
            "latency_ms": self.settings.srt_latency_ms,
            "encrypted": self.settings.srt_passphrase is not None})

    def _open(self) -> libsrt.Socket:
        sock = libsrt.Socket.create()
        try:
            sock.set_int(libsrt.SockOpt.TRANSTYPE, 0)  # SRTT_LIVE
            sock.set_int(libsrt.SockOpt.LATENCY, self.settings.srt_latency_ms)
            if self.settings.srt_passphrase is not None:
                sock.set_str(libsrt.SockOpt.PASSPHRASE, self.settings.srt_passphrase)
            sock.bind(self.settings.host, self.settings.srt_port)
            sock.listen(64, self._hook)
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("SrtServer is not started")
        return self._port

    @property
    def active_publishers(self) -> int:
        return len(self._connections)

    async def wait_for_publishers(self, timeout_s: float) -> int:
        """Wait until no publisher is left or ``timeout_s`` passed; returns how many are
        still publishing."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._connections:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._publishers_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._publishers_changed.wait()
        return len(self._connections)

    def disconnect(self, connection_id: str, reason: str = "broadcast stopped") -> bool:
        """Cut the connection ``connection_id``; whether it was one of this server's."""
        conn = self._connections.get(connection_id)
        if conn is None:
            return False
        self.disconnected_for[connection_id] = reason
        conn.stop.set()
        conn.sock.close()  # a recv blocked in libsrt returns at once
        return True

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop accepting; wait up to ``grace_s`` for publishers to finish; cut the rest."""
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
        deadline = time.monotonic() + grace_s
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for conn in list(self._connections.values()):
            self.disconnect(conn.id, "server stopping")
        threads = [c.thread for c in self._connections.values()]
        if self._accept_thread is not None:
            threads.append(self._accept_thread)
        for thread in threads:
            await asyncio.to_thread(thread.join, 5.0)
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            if p.session is not None:
                await p.session.on_close("server stopping")
        logger.info("srt ingest stopped")

    # --- called from threads --------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it (from a thread, never the loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _hook(self, ns: int, peer: str, streamid: str) -> int | None:
        """libsrt's accept hook: decide about a caller during its handshake."""
        ip = peer.rpartition(":")[0]
        fields = {"peer": peer, "streamid_length": len(streamid)}
        if self.stopping:
            return RejectCode.UNAVAILABLE
        try:
            parsed = parse_streamid(streamid)
        except StreamIdError as exc:
            logger.info("srt caller refused: bad streamid",
                        extra={**fields, "error": exc.reason, "code": int(exc.code)})
            return exc.code
        if parsed.app is not None and parsed.app != self.settings.rtmp_app:
            logger.info("srt caller refused: unknown application",
                        extra={**fields, "app": parsed.app})
            return RejectCode.NOT_FOUND
        with self._lock:
            if self._per_ip[ip] >= self.settings.max_connections_per_ip:
                logger.warning("srt too many connections from one address", extra={
                    **fields, "limit": "max_connections_per_ip"})
                return RejectCode.OVERLOAD
        connection_id = f"srt-{self._prefix}-{next(self._ids)}"
        request = PublishRequest(app=parsed.app or self.settings.rtmp_app,
                                 stream_key=parsed.key, peer=peer,
                                 connection_id=connection_id,
                                 query={k: v for k, v in parsed.fields if k != "r"})
        if self.settings.srt_passphrase is not None:
            # libsrt checks the passphrase after this hook: deciding here would claim
            # the channel for callers whose handshake then fails. Decided after it.
            with self._lock:
                self._pending[ns] = _Pending(request, None)
                self._per_ip[ip] += 1
            self.loop.call_soon_threadsafe(self.loop.call_later, ACCEPT_TIMEOUT_S,
                                           self._expire_pending, ns)
            return None
        future = asyncio.run_coroutine_threadsafe(self._decide(request), self.loop)
        try:
            outcome = future.result(DECIDE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            # The decision may still come: a session it makes is closed at once.
            future.add_done_callback(self._abandoned)
            logger.warning("srt caller refused: publish decision timed out", extra=fields)
            return RejectCode.UNAVAILABLE
        if isinstance(outcome, Rejection):
            logger.info("srt publish rejected", extra={
                **fields, "connection_id": connection_id, "code": outcome.code,
                "description": outcome.description})
            return refusal_code(outcome)
        with self._lock:
            self._pending[ns] = _Pending(request, outcome)
            self._per_ip[ip] += 1
        self.loop.call_soon_threadsafe(self.loop.call_later, ACCEPT_TIMEOUT_S,
                                       self._expire_pending, ns)
        return None

    def _abandoned(self, future: concurrent.futures.Future[PublishSession | Rejection]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        outcome = future.result()
        if not isinstance(outcome, Rejection):
            asyncio.run_coroutine_threadsafe(outcome.on_close("handshake timed out"),
                                             self.loop)

    def _expire_pending(self, ns: int) -> None:
        with self._lock:
            pending = self._pending.pop(ns, None)
            if pending is not None:
                self._release_ip(pending.request.peer)
        if pending is not None and pending.session is not None:
            logger.warning("srt handshake accepted but never completed",
                           extra={"connection_id": pending.request.connection_id})
            self.loop.create_task(pending.session.on_close("handshake did not complete"))

    async def _decide(self, request: PublishRequest) -> PublishSession | Rejection:
        if self.stopping:
            return Rejection.unavailable("shutting down")
        try:
            return await self.handler.on_publish(request)
        except Exception as exc:  # the catalog, the live state: say it passes
            logger.warning("srt publish refused: the publish path failed",
                           extra={"connection_id": request.connection_id,
                                  "error": repr(exc)})
            return Rejection.unavailable("retry shortly")

    def _release_ip(self, peer: str) -> None:
        ip = peer.rpartition(":")[0]
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None  # set before this thread starts
        while not self.stopping:
            try:
                sock, _peer = listener.accept()
            except libsrt.SrtError:
                if self.stopping:
                    return
                logger.exception("srt accept failed")
                time.sleep(0.1)
                continue
            with self._lock:
                pending = self._pending.pop(sock.fd, None)
            if pending is None:  # expired meanwhile
                sock.close()
                continue
            try:
                sock.set_int(libsrt.SockOpt.RCVTIMEO, RECV_TIMEOUT_MS)
            except libsrt.SrtError:
                sock.close()
                with self._lock:
                    self._release_ip(pending.request.peer)
                if pending.session is not None:
                    self.loop.call_soon_threadsafe(
                        self.loop.create_task, pending.session.on_close("connection lost"))
                continue
            conn = _Connection(self, sock, pending)
            self._connections[conn.id] = conn
            logger.info("srt publish started", extra=conn.log_fields)
            conn.thread.start()

    def connection_ended(self, conn: _Connection) -> None:
        self._connections.pop(conn.id, None)
        self.loop.call_soon_threadsafe(self._publishers_changed.set)
        with self._lock:
            self._release_ip(conn.request.peer)
