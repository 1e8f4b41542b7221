"""``castway ingest``: an RTMP ingest node (RTMP server, per-broadcast transcoders,
uploader, node agent, node commands) and its process, with /healthz, /readyz and /metrics on
the HTTP port. The embedded platform runs the same :class:`IngestNode`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from castway.catalog.recorder import SegmentRecorder
from castway.health.asgi import create_health_app
from castway.media import TeeFactory
from castway.model import Node, NodeState
from castway.net import HttpLimits, bind_socket
from castway.restream.sealing import load_restream_key
from castway.settings import Settings
from castway.storage.uploader import Uploader
from ingest.broadcasts import BroadcastManager
from ingest.commands import NodeCommands
from ingest.restream.media import RestreamFactory
from ingest.server import IngestServer
from ingest.srt.server import SrtServer
from ingest.whip.routes import whip_router
from ingest.whip.server import WhipServer
from launch.http_server import HttpServer, http_connections
from launch.process import StopSignals, first_completed, on_sighup, run_async, start_process
from launch.services import Services, salvage, start_recorder
from scheduler.agent import NodeAgent
from transcoder.supervisor import TranscoderSupervisor

logger = logging.getLogger(__name__)


def pick_reconnect_target(nodes: Sequence[Node], own_id: str,
                          own_version: str) -> Node | None:
    """The node a draining node without a load balancer sends its publishers to:
    active, not itself, with room (a free slot, and free transcode cores where it
    reports them); a different image version than its own first, then the most free
    cores, then the most free slots (ties: the lowest id, so the choice is stable)."""
    candidates = [n for n in nodes
                  if n.state == NodeState.ACTIVE and n.id != own_id and n.free_slots > 0
                  and (n.cost_capacity <= 0 or n.cost_free > 0)]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (n.image_version == own_version, -n.cost_free,
                                          -n.free_slots, n.id))



@dataclass
class IngestNode:
    """An ingest node: RTMP server, per-broadcast transcoders, uploader, node agent."""

    services: Services
    draining_grace_s: float = 0.0
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    # Given by the embedded platform, which shares them with its archiver; made here else.
    uploader: Uploader | None = None
    recorder: SegmentRecorder | None = None
    # Made by start().
    server: IngestServer = field(init=False)
    srt: SrtServer | None = field(init=False, default=None)  # CASTWAY_SRT_PORT set
    whip: WhipServer | None = field(init=False, default=None)  # CASTWAY_WHIP on
    agent: NodeAgent = field(init=False)
    manager: BroadcastManager = field(init=False)
    transcoder: TranscoderSupervisor | None = field(init=False, default=None)

    async def start(self) -> None:
        s = self.services
        settings = s.settings
        if self.recorder is None:
            self.recorder = await start_recorder(s, self._stack)
        if self.uploader is None:
            self.uploader = Uploader(s.storage, settings.data_dir / "spool",
                                     registry=s.registry)
            await self.uploader.start()
            self._stack.push_async_callback(self.uploader.close)
        transcoder = self.transcoder = (
            TranscoderSupervisor(settings, s.live, s.storage, s.registry,
                                 uploader=self.uploader, recorder=self.recorder)
            if settings.transcode else None)
        # Restreaming takes the same source packets as the transcoder, beside it: the tee
        # keeps whatever a target does away from the broadcast.
        restream = RestreamFactory(settings.model_copy(update={
            "restream_key": load_restream_key(settings.data_dir, settings.restream_key)}),
            s.catalog, s.live, s.registry)
        pipeline = TeeFactory(transcoder, [restream])
        self.manager = BroadcastManager(settings, catalog=s.catalog, live=s.live,
                                        pipeline=pipeline, registry=s.registry)
        self.server = IngestServer(settings, self.manager)
        # A broadcast waiting out its reconnect grace window holds its slot, and its node:
        # the publisher may come back here, or to another node that needs this one alive
        # to hand the broadcast over.
        self.agent = NodeAgent(settings, s.live,
                               active_broadcasts=self._active_broadcasts,
                               reconnectable=lambda: self.server.reconnectable_publishers,
                               ledger=transcoder.ledger if transcoder is not None else None)
        self.manager.admission = self.agent.admission
        self.manager.asked_to_move = self.server.asked_to_reconnect
        self.manager.disconnect_publisher = self._disconnect
        self.agent.on_drain(self._on_drain)
        # Shutdown runs in reverse: stop taking publishes and give publishers the grace
        # period first, then the last heartbeat, then end what is left of broadcasts.
        await self.manager.start()
        self._stack.push_async_callback(self.manager.stop)
        # An operator's stop, addressed to this node by the broadcast's node_id.
        commands = NodeCommands(s.live, self.manager.node_id,
                                stop_broadcast=self.manager.stop_broadcast)
        await commands.start()
        self._stack.push_async_callback(commands.stop)
        await self.server.start()
        if settings.srt_port:
            # The same publish path as RTMP's: the manager decides, claims and carries
            # the broadcast whichever protocol brought it.
            self.srt = SrtServer(settings, self.manager)
            await self.srt.start()
            self._stack.push_async_callback(self._stop_srt)
        if settings.whip:
            # Its HTTP resources go on the process's HTTP port (the platform's app, or
            # the ingest process's health listener); the publish path is the same.
            self.whip = WhipServer(settings, self.manager)
            self._stack.push_async_callback(self._stop_whip)
        runtime = s.runtime_metrics()
        runtime.watch("rtmp", lambda: int(self.server.connections))
        runtime.watch("srt", lambda: self.srt.active_publishers if self.srt else 0)
        runtime.watch("whip", lambda: self.whip.active_publishers if self.whip else 0)
        runtime.watch("rtmp_preauth", lambda: int(self.server.preauth_connections))
        if not settings.rtmp_port:
            # bound to any free port (the local backend's nodes): heartbeat the real one,
            # where publishers and relays can reach it
            self.agent.address = f"{settings.host}:{self.rtmp_port}"
        await self.agent.start()
        self._stack.push_async_callback(self.agent.stop)
        self._stack.push_async_callback(self._stop_server)

    def _disconnect(self, connection_id: str, reason: str = "broadcast stopped") -> bool:
        if self.srt is not None and self.srt.disconnect(connection_id, reason):
            return True
        if self.whip is not None and self.whip.disconnect(connection_id, reason):
            return True
        return bool(self.server.disconnect(connection_id, reason))

    async def _stop_srt(self) -> None:
        if self.srt is not None:
            await self.srt.stop(grace_s=self.draining_grace_s)

    async def _stop_whip(self) -> None:
        if self.whip is not None:
            await self.whip.stop(grace_s=self.draining_grace_s)

    def _publishers(self) -> int:
        """Publishers connected now, RTMP, SRT and WHIP."""
        return int(self.server.active_publishers) + (
            self.srt.active_publishers if self.srt else 0) + (
            self.whip.active_publishers if self.whip else 0)

    async def _wait_for_publishers(self, timeout_s: float) -> None:
        waits = [self.server.wait_for_publishers(timeout_s)]
        if self.srt is not None:
            waits.append(self.srt.wait_for_publishers(timeout_s))
        if self.whip is not None:
            waits.append(self.whip.wait_for_publishers(timeout_s))
        await asyncio.gather(*waits)

    def _active_broadcasts(self) -> int:
        publishing = self._publishers()
        held: int = self.manager.live_broadcasts
        return max(publishing, held)

    async def _stop_server(self) -> None:
        await self.server.stop(grace_s=self.draining_grace_s)

    async def _on_drain(self) -> None:
        await self.request_reconnects()

    async def reconnect_url(self) -> str:
        """Where a publisher asked to move should reconnect (its new tcUrl).

        Behind a load balancer (``public_rtmp_url`` set) that is the load-balanced URL:
        it only routes to active nodes. Without one (the local and static backends),
        this node's own URL would bring the publisher straight back to a draining node,
        so another node is picked from the live state's heartbeats: active, not this
        node, with a free slot; of those, one on a different image version than this
        node (a deploy drains the old version, the new one is where publishers go),
        then the one with the most free slots. None found (or the live state does not
        answer): the configured/default public URL, as before."""
        settings = self.services.settings
        if settings.public_rtmp_url:
            return settings.public_rtmp_url
        target = None
        try:
            target = pick_reconnect_target(await self.services.live.list_nodes(),
                                           self.agent.node_id, settings.image_version)
        except Exception:
            logger.exception("cannot list nodes for a reconnect target")
        if target is None:
            if not settings.rtmp_port:  # bound to any free port: the URL names the real one
                return f"rtmp://{self.agent.address}/{settings.rtmp_app}"
            return settings.effective_public_rtmp_url
        return f"rtmp://{target.address}/{settings.rtmp_app}"

    async def request_reconnects(self) -> int:
        """Ask every E-RTMP v2 reconnect-capable publisher to reconnect to
        :meth:`reconnect_url` (an active node); returns how many were asked."""
        url = await self.reconnect_url()
        asked = int(self.server.request_reconnect(url))
        logger.info("reconnect requests sent", extra={
            "publishers": self.server.active_publishers, "asked": asked, "tc_url": url})
        return asked

    async def drain(self) -> None:
        """Go draining now, as if the scheduler ordered it: admission refuses new
        publishes, capable publishers get a reconnect request, and the agent heartbeats
        ``draining`` at once."""
        await self.agent.drain()

    async def shutdown(self, timeout_s: float, abort: asyncio.Event | None = None) -> int:
        """Graceful stop (SIGTERM): drain, then wait up to ``timeout_s`` (or until
        ``abort`` is set) for the broadcasts to end. Returns how many publishers were
        still on when the wait ended -- :meth:`stop` cuts them."""
        await self.drain()
        waiting = self._publishers()
        if waiting:
            logger.info(f"draining: waiting for {waiting} broadcast(s) to end, up to "
                        f"{timeout_s:g} s", extra={"broadcasts": waiting,
                                                   "stop_timeout_s": timeout_s})
            waiter = self._wait_for_publishers(timeout_s)
            if abort is None:
                await waiter
            else:
                await first_completed(waiter, abort.wait())
        left = self._publishers()
        if left:
            reason = "second stop signal" if abort is not None and abort.is_set() \
                else "stop timeout"
            logger.warning(f"{reason}: cutting {left} broadcast(s) still publishing",
                           extra={"broadcasts": left, "reason": reason,
                                  "stop_timeout_s": timeout_s})
        elif waiting:
            logger.info("draining: every broadcast ended", extra={"broadcasts": waiting})
        # What is left is cut now: no further grace when the node stops.
        self.draining_grace_s = 0.0
        return left

    @property
    def rtmp_port(self) -> int:
        return int(self.server.port)

    @property
    def rtmps_port(self) -> int | None:
        return self.server.tls_port

    @property
    def srt_port(self) -> int | None:
        return self.srt.port if self.srt is not None else None

    async def stop(self) -> None:
        await self._stack.aclose()



@contextlib.asynccontextmanager
async def _ingest_process(settings: Settings) -> AsyncIterator[IngestNode]:
    services = Services.open(settings)
    node = IngestNode(services, draining_grace_s=settings.reconnect_grace_s)
    try:
        await salvage(services)
        await node.start()
        yield node
    finally:
        await node.stop()
        await services.close()


async def start_health_listener(node: IngestNode) -> HttpServer:
    """An ingest node's HTTP port: /healthz, /readyz and /metrics (the node's registry,
    with its RTMP and HTTP connections, tasks, descriptors and memory)."""
    services = node.services
    settings = services.settings
    app = create_health_app(services.catalog, services.live, services.storage,
                            services.registry)
    if node.whip is not None:
        app.include_router(whip_router(node.whip))
    # Behind an NLB with proxy protocol on, its /readyz health checks carry the header
    # too (ECS's /healthz check from inside the task does not): skip it when present.
    http = HttpServer(app, bind_socket(settings.host, settings.http_port),
                      HttpLimits.from_settings(settings),
                      optional_proxy_header=settings.proxy_protocol)
    await http.start()
    services.runtime_metrics().watch("http", http_connections(http))
    return http


def run_ingest(settings: Settings) -> int:
    """``castway ingest``: an RTMP ingest node of the distributed mode, with /healthz,
    /readyz and /metrics on the HTTP port.

    SIGTERM (ECS, compose) is graceful: the node drains at once (new publishes are
    refused, reconnect-capable publishers are asked to move), waits up to
    ``settings.stop_timeout_s`` for its broadcasts to end, cuts what is left and exits 0.
    A second SIGTERM/SIGINT stops at once. (``castway serve`` is interactive: Ctrl-C
    stops it promptly, without this wait.)"""
    start_process(settings)

    async def main() -> None:
        async with _ingest_process(settings) as node:
            http = await start_health_listener(node)
            logger.info("ingest node up", extra={"rtmp_port": node.rtmp_port,
                                                 "rtmps_port": node.rtmps_port,
                                                 "srt_port": node.srt_port,
                                                 "http_port": http.port})
            try:
                with StopSignals() as signals, on_sighup(node.server.reload_tls):
                    # SIGTERM (ECS, compose) or the scheduler's "stop" once the node drained
                    await first_completed(signals.first.wait(), node.agent.stopped.wait())
                    if signals.first.is_set() and not node.agent.stopped.is_set():
                        await node.shutdown(settings.stop_timeout_s, abort=signals.second)
            finally:
                await http.stop()
            logger.info("ingest node stopping")

    return run_async(main())
