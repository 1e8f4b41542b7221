"""Running castway: the embedded platform (``castway serve``) and each component of the
distributed mode (``castway ingest``, ``castway origin``, ``castway worker``).

Every component is built here from one :class:`Settings` and owned by one object that
starts and stops it; nothing runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from castway.bootstrap import (
    DEFAULT_CHANNEL,
    ensure_data_dir,
    ensure_default_channel,
    load_or_create_secret,
)
from castway.catalog.recorder import SegmentRecorder
from castway.health_http import Check, HealthApp, HealthServer
from castway.logs import configure_logging
from castway.model import Node, NodeState
from castway.net import ConnectionBudget, HttpLimits, bind_socket, raise_fd_limit
from castway.settings import Settings
from castway.signing import generate_private_key_pem

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry

    from castway.catalog.base import Catalog
    from castway.live.base import LiveState
    from castway.runtime_metrics import RuntimeCollector
    from castway.storage.base import Storage

logger = logging.getLogger(__name__)


class HttpServer:
    """uvicorn serving one app on a socket we bound, without its signal handling
    (the owning process handles SIGINT/SIGTERM for every component at once).

    Bounded (:mod:`castway.http_guard`): a deadline and a size cap for request headers,
    a keep-alive idle timeout, and a cap on open connections below the descriptor limit.
    Connections are accepted by :class:`castway.net.Listener` rather than asyncio's
    ``create_server``, whose accept loop spins and logs once per failure on EMFILE."""

    def __init__(self, app: FastAPI, sock: socket.socket,
                 limits: HttpLimits | None = None) -> None:
        import uvicorn

        from castway.http_guard import UNAVAILABLE, HttpGuard, protocol_class
        from castway.net import Listener, refuse_with

        self.limits = limits or HttpLimits(
            max_connections=ConnectionBudget.from_limit().http)
        self.guard = HttpGuard(self.limits)
        guard = self.guard

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

                async def handle(conn: socket.socket, _peer: object) -> None:
                    protocol = config.http_protocol_class(  # type: ignore[call-arg]
                        config=config, server_state=state, app_state=self.lifespan.state)
                    await loop.connect_accepted_socket(lambda: protocol, conn)

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


@dataclass
class Services:
    """The shared back ends of one process, opened from settings and closed together."""

    settings: Settings
    catalog: Catalog
    live: LiveState
    storage: Storage
    registry: CollectorRegistry
    _runtime: RuntimeCollector | None = None

    def runtime_metrics(self) -> RuntimeCollector:
        """The process's connection/task/fd/memory metrics (registered on first use,
        from within the event loop)."""
        if self._runtime is None:
            from castway.runtime_metrics import install_runtime_metrics

            self._runtime = install_runtime_metrics(self.registry)
        return self._runtime

    @classmethod
    def open(cls, settings: Settings) -> Services:
        from prometheus_client import CollectorRegistry

        from castway.catalog import open_catalog
        from castway.live import open_live_state
        from castway.storage import open_storage

        ensure_data_dir(settings.data_dir)
        return cls(settings=settings, catalog=open_catalog(settings),
                   live=open_live_state(settings), storage=open_storage(settings),
                   registry=CollectorRegistry())

    async def close(self) -> None:
        await self.live.close()
        self.catalog.close()


async def start_recorder(services: Services,
                         stack: contextlib.AsyncExitStack) -> SegmentRecorder:
    """The process's durable segment log writer. Push it before the uploader that feeds
    it: closing in reverse, the uploader's last stores and spools are still recorded."""
    recorder = SegmentRecorder(services.catalog, services.registry)
    await recorder.start()
    stack.push_async_callback(recorder.close)
    return recorder


def pick_reconnect_target(nodes: Sequence[Node], own_id: str,
                          own_version: str) -> Node | None:
    """The node a draining node without a load balancer sends its publishers to:
    active, not itself, with a free slot; a different image version than its own
    first, then the most free slots (ties: the lowest id, so the choice is stable)."""
    candidates = [n for n in nodes
                  if n.state == NodeState.ACTIVE and n.id != own_id and n.free_slots > 0]
    if not candidates:
        return None
    return min(candidates,
               key=lambda n: (n.image_version == own_version, -n.free_slots, n.id))


async def salvage(services: Services) -> None:
    """Make the segments the previous run of this node had not made durable, from the
    source journals it left (transcoder.salvage)."""
    if not services.settings.transcode:
        return
    from transcoder.salvage import salvage_journals

    await asyncio.to_thread(salvage_journals, services.settings, services.catalog,
                            services.storage)


@dataclass
class IngestNode:
    """An ingest node: RTMP server, per-broadcast transcoders, uploader, node agent."""

    services: Services
    draining_grace_s: float = 0.0
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    server: Any = None
    agent: Any = None
    manager: Any = None
    uploader: Any = None
    recorder: SegmentRecorder | None = None

    async def start(self) -> None:
        from archiver.uploader import Uploader
        from ingest.broadcasts import BroadcastManager
        from ingest.commands import NodeCommands
        from ingest.server import IngestServer
        from scheduler.agent import NodeAgent
        from transcoder.supervisor import TranscoderSupervisor

        s = self.services
        settings = s.settings
        if self.recorder is None:
            self.recorder = await start_recorder(s, self._stack)
        if self.uploader is None:
            self.uploader = Uploader(s.storage, settings.data_dir / "spool",
                                     registry=s.registry)
            await self.uploader.start()
            self._stack.push_async_callback(self.uploader.close)
        pipeline = (TranscoderSupervisor(settings, s.live, s.storage, s.registry,
                                         uploader=self.uploader, recorder=self.recorder)
                    if settings.transcode else None)
        self.manager = BroadcastManager(settings, catalog=s.catalog, live=s.live,
                                        pipeline=pipeline, registry=s.registry)
        self.server = IngestServer(settings, self.manager)
        # A broadcast waiting out its reconnect grace window holds its slot, and its node:
        # the publisher may come back here, or to another node that needs this one alive
        # to hand the broadcast over.
        self.agent = NodeAgent(settings, s.live,
                               active_broadcasts=self._active_broadcasts,
                               reconnectable=lambda: self.server.reconnectable_publishers)
        self.manager.admission = self.agent.admission
        self.manager.asked_to_move = self.server.asked_to_reconnect
        self.manager.disconnect_publisher = self.server.disconnect
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
        runtime = s.runtime_metrics()
        runtime.watch("rtmp", lambda: int(self.server.connections))
        runtime.watch("rtmp_preauth", lambda: int(self.server.preauth_connections))
        await self.agent.start()
        self._stack.push_async_callback(self.agent.stop)
        self._stack.push_async_callback(self._stop_server)

    def _active_broadcasts(self) -> int:
        publishing: int = self.server.active_publishers
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
        from scheduler.agent import DRAIN

        await self.agent._apply(DRAIN)  # noqa: SLF001 -- the agent has no public drain()
        try:
            await self.agent.beat()
        except Exception:  # the live state may blip; the agent's loop beats again
            logger.exception("draining heartbeat failed")

    async def shutdown(self, timeout_s: float, abort: asyncio.Event | None = None) -> int:
        """Graceful stop (SIGTERM): drain, then wait up to ``timeout_s`` (or until
        ``abort`` is set) for the broadcasts to end. Returns how many publishers were
        still on when the wait ended -- :meth:`stop` cuts them."""
        await self.drain()
        waiting = int(self.server.active_publishers)
        if waiting:
            logger.info(f"draining: waiting for {waiting} broadcast(s) to end, up to "
                        f"{timeout_s:g} s", extra={"broadcasts": waiting,
                                                   "stop_timeout_s": timeout_s})
            waiter = self.server.wait_for_publishers(timeout_s)
            if abort is None:
                await waiter
            else:
                await first_completed(waiter, abort.wait())
        left = int(self.server.active_publishers)
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

    async def stop(self) -> None:
        await self._stack.aclose()


@dataclass
class EmbeddedPlatform:
    """``castway serve``: ingest, transcoders, origin + API, archiver, node agent, in one
    process (transcoders in child processes). Usable as an async context manager."""

    settings: Settings
    services: Services | None = None
    ingest: IngestNode | None = None
    http: HttpServer | None = None
    admin_token: str = ""
    admin_token_created: bool = False
    default_stream_key: str | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def __aenter__(self) -> EmbeddedPlatform:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        from archiver.service import ArchiverService
        from archiver.uploader import Uploader
        from castway.live.memory import MemoryLiveState
        from origin.app import create_app

        settings = self.settings
        if settings.debug_tracemalloc_dir is not None:  # first: trace what start allocates
            await self._trace_memory(settings.debug_tracemalloc_dir)
        ensure_data_dir(settings.data_dir)
        self.admin_token, self.admin_token_created = load_or_create_secret(
            settings.data_dir, "admin_token", settings.admin_token)
        signing_key, _ = load_or_create_secret(settings.data_dir, "signing_key.pem",
                                               settings.signing_key,
                                               generate=generate_private_key_pem)
        settings = self.settings = settings.model_copy(
            update={"admin_token": self.admin_token, "signing_key": signing_key})
        services = self.services = Services.open(settings)
        self._stack.push_async_callback(services.close)
        self.default_stream_key = await asyncio.to_thread(ensure_default_channel,
                                                          services.catalog)

        recorder = await start_recorder(services, self._stack)
        uploader = Uploader(services.storage, settings.data_dir / "spool",
                            registry=services.registry)
        await uploader.start()
        self._stack.push_async_callback(uploader.close)
        # Before the archiver: the VODs of broadcasts a crash cut get their last seconds.
        await salvage(services)

        archiver = ArchiverService(settings, services.catalog, services.live,
                                   services.storage, uploader, registry=services.registry)
        await archiver.start()
        self._stack.push_async_callback(archiver.stop)

        self.ingest = IngestNode(services, uploader=uploader, recorder=recorder)
        await self.ingest.start()
        self._stack.push_async_callback(self.ingest.stop)

        await self._start_scheduler(services)

        app = create_app(settings, catalog=services.catalog, live=services.live,
                         storage=services.storage, registry=services.registry)
        self.http = HttpServer(app, bind_socket(settings.host, settings.http_port),
                               HttpLimits.from_settings(settings))
        await self.http.start()
        services.runtime_metrics().watch("http", http_connections(self.http))
        if isinstance(services.live, MemoryLiveState):
            services.runtime_metrics().watch_live(services.live.holdings)
        self._stack.push_async_callback(self.http.stop)

    async def _trace_memory(self, directory: Path) -> None:
        from castway.memtrace import write_snapshots

        task = asyncio.create_task(write_snapshots(directory, os.getpid()),
                                   name="tracemalloc")
        logger.warning("tracing Python allocations (CASTWAY_DEBUG_TRACEMALLOC_DIR): "
                       "slower, and more memory", extra={"directory": str(directory)})

        async def stop_tracing() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop_tracing)

    async def _start_scheduler(self, services: Services) -> None:
        """The local scheduler: the embedded node is a fleet of one run by this process,
        so the static backend (no starts, stop by command, no scale-in) watches it."""
        from scheduler.backends.static import StaticBackend
        from scheduler.coordination import LocalCoordinator
        from scheduler.metrics import SchedulerMetrics
        from scheduler.policy import Policy
        from scheduler.tick import Scheduler

        metrics = SchedulerMetrics(registry=services.registry)
        scheduler = Scheduler(
            self.settings, services.live,
            StaticBackend(services.live, on_wanted=metrics.nodes_wanted.inc),
            policy=Policy.from_settings(self.settings, scale_in=False),
            coordinator=LocalCoordinator(), metrics=metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop=stop), name="scheduler")

        async def stop_scheduler() -> None:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop_scheduler)

    async def stop(self) -> None:
        await self._stack.aclose()

    @property
    def rtmp_port(self) -> int:
        assert self.ingest is not None, "platform not started"
        return self.ingest.rtmp_port

    @property
    def http_port(self) -> int:
        assert self.http is not None, "platform not started"
        return self.http.port

    def banner(self) -> str:
        s = self.settings
        host = s.host if s.host not in ("0.0.0.0", "::") else "127.0.0.1"
        rtmp = s.public_rtmp_url or f"rtmp://{host}:{self.rtmp_port}/{s.rtmp_app}"
        http = (s.public_url or f"http://{host}:{self.http_port}").rstrip("/")
        key = (self.default_stream_key + "   (shown once: keep it secret)"
               if self.default_stream_key else
               "(shown on first start; new one: castway channels rotate-key default)")
        lines = [
            "castway is running (embedded mode). In OBS: Settings -> Stream -> Custom...",
            f"  Server:      {rtmp}",
            f"  Stream Key:  {key}",
            f"  Watch:       {http}/watch/{DEFAULT_CHANNEL}",
            f"  Admin:       {http}/admin   API: {http}/api/v1   Docs: {http}/docs",
        ]
        if self.admin_token_created:
            lines.append(f"  Admin token: {self.admin_token}   (shown once; kept in "
                         f"{s.data_dir / 'admin_token'})")
        lines.append("Stop with Ctrl-C.")
        return "\n".join(lines)


# --- process entry points ---------------------------------------------------------------

class StopSignals:
    """Counts SIGINT/SIGTERM: ``first`` is set on the first, ``second`` on another."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.first.is_set():
            logger.warning("second stop signal: stopping now", extra={"signal": sig.name})
            self.second.set()
        else:
            logger.info("stop signal", extra={"signal": sig.name})
            self.first.set()

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.remove_signal_handler(sig)


async def wait_for_stop_signal() -> None:
    """Returns on the first SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def first_completed(*aws: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _run(main: Any) -> int:
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        pass
    return 0


def start_process(settings: Settings) -> None:
    """What every castway process does first: logging, and the descriptor limit raised
    so the connection budget (a share of it) is as large as the system allows."""
    configure_logging(settings.log_level, settings.log_json)
    fds = raise_fd_limit()
    logger.debug("file-descriptor limit", extra={"nofile": fds})


def run_embedded(settings: Settings) -> int:
    from castway.running import register, unregister

    start_process(settings)

    async def main() -> None:
        async with EmbeddedPlatform(settings) as platform:
            # For `castway channels ...` run from another directory (castway/running.py).
            record = register(os.getpid(), settings.data_dir,
                              settings.effective_public_url)
            try:
                print(platform.banner(), flush=True)
                await wait_for_stop_signal()
                logger.info("stopping")
            finally:
                unregister(record)

    return _run(main())


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
    from origin.health import create_health_app

    services = node.services
    settings = services.settings
    app = create_health_app(services.catalog, services.live, services.storage,
                            services.registry)
    http = HttpServer(app, bind_socket(settings.host, settings.http_port),
                      HttpLimits.from_settings(settings))
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
                                                 "http_port": http.port})
            try:
                with StopSignals() as signals:
                    # SIGTERM (ECS, compose) or the scheduler's "stop" once the node drained
                    await first_completed(signals.first.wait(), node.agent.stopped.wait())
                    if signals.first.is_set() and not node.agent.stopped.is_set():
                        await node.shutdown(settings.stop_timeout_s, abort=signals.second)
            finally:
                await http.stop()
            logger.info("ingest node stopping")

    return _run(main())


def run_origin(settings: Settings) -> int:
    """``castway origin``: a stateless HLS origin + control API replica."""
    start_process(settings)

    async def main() -> None:
        from origin.app import create_app

        services = Services.open(settings)
        try:
            app = create_app(settings, catalog=services.catalog, live=services.live,
                             storage=services.storage, registry=services.registry)
            http = HttpServer(app, bind_socket(settings.host, settings.http_port),
                              HttpLimits.from_settings(settings))
            await http.start()
            services.runtime_metrics().watch("http", http_connections(http))
            logger.info("origin up", extra={"http_port": http.port})
            try:
                await wait_for_stop_signal()
            finally:
                await http.stop()
        finally:
            await services.close()

    return _run(main())


def run_worker(settings: Settings, celery_args: list[str], *, beat: bool = False,
               scheduler: bool = False) -> int:
    """``castway worker``: a Celery worker running the archiver's tasks; with ``beat``
    it also runs the periodic schedule (retention, posters): exactly one worker of a
    deployment should. ``scheduler`` adds the fleet scheduler's tick to that schedule
    (distributed mode without the Lambda or ``castway scheduler run``). /healthz, /readyz
    (broker, catalog, storage) and /metrics (task outcomes) listen on the HTTP port."""
    start_process(settings)
    from archiver.celery_app import broker_url, make_celery

    app = make_celery(settings)
    if scheduler:
        from scheduler.beat import register

        register(app, settings)
    services = Services.open(settings)
    health = HealthServer(HealthApp(worker_checks(services, broker_url(settings)),
                                    worker_metrics(services.registry)),
                          settings.host, settings.http_port).start()
    logger.info("worker health listening", extra={"http_port": health.port})
    try:
        app.worker_main(["worker", "--loglevel", settings.log_level,
                         *(["--beat"] if beat else []), *celery_args])
    finally:
        health.close()
        asyncio.run(services.close())
    return 0


def worker_checks(services: Services, broker: str) -> dict[str, Check]:
    """Readiness of a worker: its broker, the catalog and storage answer."""
    import redis

    def broker_ok() -> bool:
        client = redis.Redis.from_url(broker, socket_connect_timeout=2, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return {"broker": broker_ok, "catalog": services.catalog.ping,
            "storage": services.storage.ping}


def worker_metrics(registry: CollectorRegistry) -> CollectorRegistry:
    """``castway_worker_tasks_total{task,outcome}`` from Celery's task signals."""
    from celery.signals import task_failure, task_retry, task_success
    from prometheus_client import Counter, ProcessCollector

    ProcessCollector(registry=registry)  # descriptors and memory, as the other processes

    tasks = Counter("castway_worker_tasks", "Archiver tasks run by this worker",
                    ["task", "outcome"], registry=registry)

    def counter(outcome: str) -> Callable[..., None]:
        def count(sender: Any = None, request: Any = None, **_: Any) -> None:
            name = getattr(sender, "name", None) or getattr(request, "task", None)
            tasks.labels(task=str(name), outcome=outcome).inc()
        return count

    for signal_, outcome in ((task_success, "success"), (task_failure, "failure"),
                             (task_retry, "retry")):
        signal_.connect(counter(outcome), weak=False)
    return registry


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_embedded(Settings()))
