"""The HTTP server every castway process with a web port runs: uvicorn on a socket the
process bound, bounded by :mod:`castway.http_guard`, without uvicorn's signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI

from castway.http_guard import UNAVAILABLE, HttpGuard, protocol_class
from castway.net import (
    ConnectionBudget,
    HttpLimits,
    Listener,
    refuse_with,
    skip_optional_proxy_header,
)
from castway.proxy_protocol import ProxyProtocolError


class HttpServer:
    """uvicorn serving one app on a socket we bound, without its signal handling
    (the owning process handles SIGINT/SIGTERM for every component at once).

    Bounded (:mod:`castway.http_guard`): a deadline and a size cap for request headers,
    a keep-alive idle timeout, and a cap on open connections below the descriptor limit.
    Connections are accepted by :class:`castway.net.Listener` rather than asyncio's
    ``create_server``, whose accept loop spins and logs once per failure on EMFILE."""

    def __init__(self, app: FastAPI, sock: socket.socket,
                 limits: HttpLimits | None = None, *,
                 optional_proxy_header: bool = False) -> None:
        """``optional_proxy_header``: skip a PROXY protocol header when a connection
        starts with one (a health-checked port behind an NLB with proxy protocol on)."""
        self.limits = limits or HttpLimits(
            max_connections=ConnectionBudget.from_limit().http)
        self.guard = HttpGuard(self.limits)
        guard = self.guard
        header_timeout_s = self.limits.header_timeout_s
        pending: set[asyncio.Task[None]] = set()

        class _Server(uvicorn.Server):
            def install_signal_handlers(self) -> None:  # uvicorn < 0.29
                return None

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
                yield

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                # uvicorn's own startup, with our accept loop in place of create_server.
                await self.lifespan.startup()
                if self.lifespan.should_exit:
                    raise RuntimeError("the app's lifespan startup failed")
                config, state = self.config, self.server_state
                loop = asyncio.get_running_loop()

                def admit(_peer: object) -> bool:
                    return guard.make_room(len(state.connections))

                async def connect(conn: socket.socket) -> None:
                    protocol = config.http_protocol_class(  # type: ignore[call-arg]
                        config=config, server_state=state, app_state=self.lifespan.state)
                    await loop.connect_accepted_socket(lambda: protocol, conn)

                async def after_proxy_header(conn: socket.socket) -> None:
                    try:
                        await skip_optional_proxy_header(conn, header_timeout_s)
                        await connect(conn)
                    except (OSError, TimeoutError, ProxyProtocolError):
                        conn.close()

                async def handle(conn: socket.socket, _peer: object) -> None:
                    if not optional_proxy_header:
                        await connect(conn)
                        return
                    # In its own task: the accept loop never waits on one client.
                    task = asyncio.create_task(after_proxy_header(conn))
                    pending.add(task)
                    task.add_done_callback(pending.discard)

                self.servers = [Listener(sock, "http", handle, admit=admit,  # type: ignore[misc]
                                         refuse=refuse_with(UNAVAILABLE)).start()
                                for sock in sockets or []]
                self.started = True

        config = uvicorn.Config(app, log_config=None, lifespan="on", access_log=False,
                                timeout_graceful_shutdown=5, http=protocol_class(guard),
                                timeout_keep_alive=self.limits.keepalive_timeout_s,  # type: ignore[arg-type]
                                )
        self._server: uvicorn.Server = _Server(config)
        self._sock = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def connections(self) -> int:
        """Open HTTP (and upgraded WebSocket) connections."""
        return len(self._server.server_state.connections)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]),
                                         name="http-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def http_connections(http: HttpServer) -> Callable[[], int]:
    return lambda: http.connections
