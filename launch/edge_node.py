"""``castway edge``: the RTMP edge of a fleet with two tiers. Publishers connect here
(RTMP, RTMPS with the same settings as an ingest node); each broadcast is relayed to a
transcoding node (``castway ingest``) and moved between them without the publisher's
help. /healthz, /readyz and /metrics on the HTTP port; heartbeats as an ``edge`` node.

Design: docs/architecture.md, "The edge tier"."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from castway.health.asgi import create_health_app
from castway.model import NodeTier
from castway.net import HttpLimits, bind_socket
from castway.settings import Settings
from ingest.edge.handler import EdgeHandler
from ingest.handover import GRANT_TIMEOUT_S
from ingest.server import IngestServer
from launch.http_server import HttpServer, http_connections
from launch.process import StopSignals, first_completed, on_sighup, run_async, start_process
from launch.services import Services
from scheduler.agent import NodeAgent

logger = logging.getLogger(__name__)

#: What a relay holds while its broadcast changes nodes (a handover's flush can take
#: seconds of a high-bitrate source).
MAX_HELD_BYTES = 64 * 1024 * 1024


@dataclass
class EdgeNode:
    services: Services
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    server: IngestServer = field(init=False)
    handler: EdgeHandler = field(init=False)
    agent: NodeAgent = field(init=False)

    async def start(self) -> None:
        s = self.services
        settings = s.settings
        self.handler = EdgeHandler(
            catalog=s.catalog, live=s.live, version=settings.image_version,
            app=settings.rtmp_app, registry=s.registry,
            # a move waits for the old node to hand the broadcast over
            open_timeout_s=GRANT_TIMEOUT_S + 5.0,
            # a crashed node's broadcast goes on within its grace window, and the node
            # taking it finds the dead one silent after a handover request's timeout
            retry_s=max(settings.reconnect_grace_s, 10.0),
            max_held_bytes=MAX_HELD_BYTES, proxy_protocol=settings.relay_proxy_protocol,
            broadcast_cost=settings.headroom_broadcast_cost)
        self._stack.callback(self.handler.close)
        self.server = IngestServer(settings, self.handler)
        self.handler.disconnect = self.server.disconnect
        self.agent = NodeAgent(settings, s.live, active_broadcasts=lambda: len(self.handler.relays),
                               tier=NodeTier.EDGE, capacity=settings.edge_capacity)
        self.handler.admission = self.agent.admission
        await self.server.start()
        self._stack.push_async_callback(self.server.stop)
        if not settings.rtmp_port:
            self.agent.address = f"{settings.host}:{self.server.port}"
        runtime = s.runtime_metrics()
        runtime.watch("rtmp", lambda: int(self.server.connections))
        await self.agent.start()
        self._stack.push_async_callback(self.agent.stop)

    @property
    def rtmp_port(self) -> int:
        return int(self.server.port)

    async def stop(self) -> None:
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def edge_process(settings: Settings) -> AsyncIterator[EdgeNode]:
    services = Services.open(settings)
    node = EdgeNode(services)
    try:
        await node.start()
        yield node
    finally:
        await node.stop()
        await services.close()


def run_edge(settings: Settings) -> int:
    """``castway edge``. SIGTERM drains (new publishes refused; the relayed broadcasts
    go on until they end, up to ``stop_timeout_s``); a second signal stops at once."""
    start_process(settings)

    async def main() -> None:
        async with edge_process(settings) as node:
            s = node.services
            app = create_health_app(s.catalog, s.live, s.storage, s.registry)
            http = HttpServer(app, bind_socket(settings.host, settings.http_port),
                              HttpLimits.from_settings(settings),
                              optional_proxy_header=settings.proxy_protocol)
            await http.start()
            s.runtime_metrics().watch("http", http_connections(http))
            logger.info("edge node up", extra={"rtmp_port": node.rtmp_port,
                                               "rtmps_port": node.server.tls_port,
                                               "http_port": http.port})
            try:
                with StopSignals() as signals, on_sighup(node.server.reload_tls):
                    await first_completed(signals.first.wait(), node.agent.stopped.wait())
                    if signals.first.is_set() and not node.agent.stopped.is_set():
                        await node.agent.drain()
                        await first_completed(
                            node.server.wait_for_publishers(settings.stop_timeout_s),
                            signals.second.wait())
            finally:
                await http.stop()
            logger.info("edge node stopping")

    return run_async(main())
