"""Limits of castway's HTTP server (uvicorn with httptools) that uvicorn does not have:
a header deadline (408), a header size cap (431), and a connection cap that evicts the
oldest connection still waiting for its headers (:class:`GuardedHttpProtocol`).

Design: docs/architecture.md, "Bounded connections".
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from castway.net import ACCEPT_LOG_INTERVAL_S, HttpLimits, RateLimitedLog

logger = logging.getLogger(__name__)

_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n"
                    b"connection: close\r\n\r\n")
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
              b"content-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\n"
              b"connection: close\r\n\r\nrequest header fields too large\n")
#: Longest we read and drop a refused client's input before closing (see _close_with).
LINGER_S = 2.0

#: Sent to a connection refused at the cap.
UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n"
               b"content-type: text/plain; charset=utf-8\r\ncontent-length: 25\r\n"
               b"connection: close\r\n\r\ntoo many connections now\n")


class HttpGuard:
    """Shared by every connection of one server: the connections waiting for their
    headers (oldest first) and the counters behind the limits' log lines."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.awaiting: OrderedDict[GuardedHttpProtocol, None] = OrderedDict()
        self.header_timeouts = RateLimitedLog(logger, "http header timeout, closing",
                                              ACCEPT_LOG_INTERVAL_S,
                                              limit="header_timeout_s")
        self.too_large = RateLimitedLog(logger, "http request header too large, 431",
                                        ACCEPT_LOG_INTERVAL_S, limit="max_header_bytes")
        self.evicted = RateLimitedLog(logger, "http connection cap reached, closed the "
                                      "connection waiting longest for its headers",
                                      ACCEPT_LOG_INTERVAL_S, limit="max_connections")

    def make_room(self, open_connections: int) -> bool:
        """Whether a new connection may be taken with ``open_connections`` open,
        evicting the oldest one still waiting for its headers if that makes room."""
        if open_connections < self.limits.max_connections:
            return True
        while self.awaiting:
            oldest, _ = self.awaiting.popitem(last=False)
            if oldest.evict():
                self.evicted.note()
                return True
        return False


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and size cap (see module)."""

    guard: HttpGuard  # set on the per-server subclass made by :func:`protocol_class`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._in_head = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False

    def _await_head(self) -> None:
        if self._in_head:
            return
        self._in_head = True
        self._header_bytes = 0
        self.guard.awaiting[self] = None
        self._head_timer = self.loop.call_later(self.guard.limits.header_timeout_s,
                                                self._head_timeout)

    def _head_done(self) -> None:
        self._in_head = False
        self.guard.awaiting.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _close_with(self, response: bytes, *, linger: bool = False) -> None:
        """Answer and close. ``linger`` (a client still sending): our side is shut for
        writing and what the client sends is read and dropped for up to
        :data:`LINGER_S`, because closing with unread input makes the kernel send a
        reset, which discards our answer before the client reads it (nginx's
        ``lingering_close``). A slowloris at its deadline gets no such courtesy: the
        point is to free its descriptor now."""
        self._head_done()
        if self.transport.is_closing() or self._lingering:
            return
        self.transport.write(response)
        if linger and self.transport.can_write_eof():
            self._lingering = True
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def _head_timeout(self) -> None:
        self._head_timer = None
        self.guard.header_timeouts.note()
        self._close_with(_REQUEST_TIMEOUT)

    def evict(self) -> bool:
        """Close this connection (it is waiting for headers); False if already closing."""
        if self.transport.is_closing() or self._lingering:
            self._head_done()
            return False
        self._close_with(_REQUEST_TIMEOUT)
        return True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._lingering:
            self.transport.close()
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._in_head:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._header_bytes > self.guard.limits.max_header_bytes:
            self.guard.too_large.note()
            # Not a parser state we can answer through uvicorn: the cycle has not begun.
            self._close_with(_TOO_LARGE, linger=True)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_head()  # a keep-alive connection's next request

    def on_headers_complete(self) -> None:
        self._head_done()
        super().on_headers_complete()


def protocol_class(guard: HttpGuard) -> type[GuardedHttpProtocol]:
    """A protocol class bound to one server's guard (uvicorn builds protocols from a
    class and its config alone)."""
    return type("BoundGuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})
