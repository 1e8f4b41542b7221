"""Listening sockets that cannot be turned against the process: the file-descriptor
limit raised at start, a connection budget kept below it (:class:`ConnectionBudget`),
and an accept loop (:class:`Listener`) that backs off when the system is out of
descriptors instead of spinning and logging each failure.

Design: docs/architecture.md, "Bounded connections" (and why not ``loop.create_server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from castway.proxy_protocol import (
    V1_PREFIX,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
)

if TYPE_CHECKING:
    from castway.settings import Settings

logger = logging.getLogger(__name__)

#: accept() errors that mean "the system is out of something": retrying at once fails
#: again, so the listener waits.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about one connection that died in the backlog: skip it, go on.
TRANSIENT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM,
                              errno.ECONNRESET, errno.EAGAIN, errno.EINTR})

#: First and longest wait of the accept back-off while descriptors are exhausted.
ACCEPT_BACKOFF_MIN_S = 0.01
ACCEPT_BACKOFF_MAX_S = 1.0
#: At most one log line per this many seconds for a repeating accept error / refusal.
ACCEPT_LOG_INTERVAL_S = 10.0

#: Share of the descriptor limit that client connections (all listeners together) may
#: hold; the rest is for the catalog, storage and Redis clients, transcoder pipes, spool
#: files and the listeners themselves.
CONNECTION_FD_SHARE = 0.5
#: Share of the connection budget given to RTMP (the rest is HTTP). Publishers are few;
#: what this bounds is pre-authentication junk, which has its own smaller cap too.
RTMP_CONNECTION_SHARE = 0.125

#: Largest HTTP request head (request line + headers) accepted, in bytes. nginx allows
#: 4 x 8 KiB; signed URLs and cookies fit well within this.
MAX_HEADER_BYTES = 64 * 1024


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket (port 0: any free port), so callers learn the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as nginx's
    ``worker_rlimit_nofile`` does) and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            logger.warning("cannot raise the file-descriptor limit",
                           extra={"soft": soft, "hard": hard}, exc_info=True)
    elif hard == resource.RLIM_INFINITY and soft == resource.RLIM_INFINITY:
        return 1 << 20
    return soft


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE in force (a large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """How many client connections each kind of listener may hold; their sum stays
    below the descriptor limit by construction."""

    http: int
    rtmp: int

    @classmethod
    def from_limit(cls, total: int | None = None, *, fds: int | None = None
                   ) -> ConnectionBudget:
        """``total`` (a setting) or :data:`CONNECTION_FD_SHARE` of the descriptor
        limit, split between HTTP and RTMP."""
        if not total:
            total = int((fds if fds is not None else fd_limit()) * CONNECTION_FD_SHARE)
        total = max(total, 2)
        rtmp = max(1, int(total * RTMP_CONNECTION_SHARE))
        return cls(http=total - rtmp, rtmp=rtmp)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The few numbers the HTTP server is bounded by (see :mod:`castway.http_guard`)."""

    max_connections: int
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    max_header_bytes: int = MAX_HEADER_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(max_connections=ConnectionBudget.from_limit(settings.max_connections).http,
                   header_timeout_s=settings.http_header_timeout_s,
                   keepalive_timeout_s=settings.http_keepalive_timeout_s)


class RateLimitedLog:
    """One warning per ``interval_s`` for a repeating event, with how many happened.

    The first occurrence logs at once; later ones are counted and reported with the next
    line that the interval allows, or by :meth:`flush` when the condition ends."""

    def __init__(self, log: logging.Logger, message: str, interval_s: float,
                 **fields: object) -> None:
        self._log = log
        self._message = message
        self._interval_s = interval_s
        self._fields = fields
        self._pending = 0
        self._last = -float("inf")
        self.total = 0

    def note(self, detail: str = "") -> None:
        self.total += 1
        self._pending += 1
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._emit(detail)
            self._last = now

    def flush(self, detail: str = "") -> None:
        if self._pending:
            self._emit(detail)

    def _emit(self, detail: str) -> None:
        self._log.warning(f"{self._message} ({self._pending} time(s) in the last "
                          f"{self._interval_s:g} s)",
                          extra={**self._fields, "count": self._pending, "error": detail})
        self._pending = 0



class Listener:
    """Accepts connections on a listening socket for as long as it runs.

    ``admit(peer)`` decides on each accepted connection (False: ``refuse(sock)`` is
    called, which must close it); ``handle(sock, peer)`` takes ownership of an admitted
    one. Neither may raise into the loop: an exception is logged and the socket closed.
    Has the ``close()`` / ``wait_closed()`` / ``sockets`` shape of ``asyncio.Server``.
    """

    def __init__(self, sock: socket.socket, name: str,
                 handle: Callable[[socket.socket, object], Awaitable[None]],
                 admit: Callable[[object], bool] | None = None,
                 refuse: Callable[[socket.socket], None] | None = None) -> None:
        self.sockets = [sock]
        self.name = name
        self._sock = sock
        self._handle = handle
        self._admit = admit
        self._refuse = refuse or _close
        self._task: asyncio.Task[None] | None = None
        self.accept_errors = RateLimitedLog(logger, f"{name}: accept() failed, backing off",
                                            ACCEPT_LOG_INTERVAL_S, listener=name)
        self.refused = RateLimitedLog(logger, f"{name}: connection limit reached, refusing",
                                      ACCEPT_LOG_INTERVAL_S, listener=name)

    def start(self) -> Listener:
        sock = self._sock
        sock.setblocking(False)
        self._task = asyncio.create_task(self._run(), name=f"accept-{self.name}")
        return self

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = ACCEPT_BACKOFF_MIN_S
        failing = False
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    failing = True
                    self.accept_errors.note(f"{errno.errorcode.get(exc.errno or 0, '?')}: "
                                            f"{exc.strerror}")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, ACCEPT_BACKOFF_MAX_S)
                    continue
                if exc.errno in TRANSIENT_ERRNOS:
                    continue
                if self._sock.fileno() == -1:
                    return  # closed under us: the listener is stopping
                # Anything else: say so (rate-limited) and retry later rather than let
                # the accept task die silently and the port go deaf.
                self.accept_errors.note(repr(exc))
                await asyncio.sleep(ACCEPT_BACKOFF_MAX_S)
                continue
            if failing:
                failing = False
                delay = ACCEPT_BACKOFF_MIN_S
                self.accept_errors.flush("recovered")
            conn.setblocking(False)
            try:
                if self._admit is not None and not self._admit(peer):
                    self.refused.note()
                    self._refuse(conn)
                    continue
                await self._handle(conn, peer)
            except Exception:
                logger.exception("accepting a connection failed", extra={"listener": self.name})
                _close(conn)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def refuse_with(response: bytes) -> Callable[[socket.socket], None]:
    """A refusal that writes ``response`` (best effort: a fresh socket's send buffer
    takes it at once) before closing."""

    def refuse(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.send(response)
        _close(sock)

    return refuse


async def skip_optional_proxy_header(sock: socket.socket, timeout_s: float
                                     ) -> ProxyHeader | None:
    """Read a PROXY header if ``sock`` starts with one, else take nothing.

    For a port a load balancer health-checks and others reach directly (the ingest
    node's /readyz: an NLB with proxy protocol on sends the header on its health checks
    too, ECS's container check does not). No address from it is trusted: that is why it
    may be optional here and must not be on the RTMP ports. Peeks, so an HTTP request
    (which never starts like either signature beyond its first bytes) is left whole.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        await _readable(sock, deadline - loop.time())
        head = sock.recv(len(V2_SIGNATURE), socket.MSG_PEEK)
        if not head:
            return None  # closed: let the HTTP side see the EOF
        could_be = V1_PREFIX.startswith(head[:len(V1_PREFIX)]) or V2_SIGNATURE.startswith(head)
        if not could_be:
            return None
        if head.startswith(V1_PREFIX) or head == V2_SIGNATURE:
            break
        if loop.time() >= deadline:
            raise TimeoutError("PROXY header timeout")
        # A prefix of a signature: the socket stays readable (level-triggered), so wait
        # a moment for the rest rather than spin.
        await asyncio.sleep(0.01)
    reader = ProxyHeaderReader()
    while True:
        await _readable(sock, deadline - loop.time())
        data = sock.recv(reader.wanted)
        if not data:
            raise ProxyProtocolError("closed inside a PROXY header")
        header = reader.receive_data(data)
        if header is not None:
            return header


async def _readable(sock: socket.socket, timeout_s: float) -> None:
    if timeout_s <= 0:
        raise TimeoutError("PROXY header timeout")
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), on_readable)
    try:
        async with asyncio.timeout(timeout_s):
            await ready
    finally:
        loop.remove_reader(sock.fileno())
