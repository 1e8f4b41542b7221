"""``castway serve``: the whole platform in one process (embedded mode): ingest,
transcoders (in child processes), origin + API + chat, archiver, the local scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from archiver.service import ArchiverService
from castway.bootstrap import (
    DEFAULT_CHANNEL,
    ensure_data_dir,
    ensure_default_channel,
    load_or_create_secret,
)
from castway.live.memory import MemoryLiveState
from castway.memtrace import write_snapshots
from castway.net import HttpLimits, bind_socket
from castway.settings import Settings
from castway.signing import generate_private_key_pem
from castway.storage.uploader import Uploader
from launch.http_app import create_platform_app
from launch.http_server import HttpServer, http_connections
from launch.ingest_node import IngestNode
from launch.process import on_sighup, run_async, start_process, wait_for_stop_signal
from launch.running import register, unregister
from launch.services import Services, salvage, start_recorder
from scheduler.backends.static import StaticBackend
from scheduler.coordination import LocalCoordinator
from scheduler.metrics import SchedulerMetrics
from scheduler.policy import Policy
from scheduler.tick import Scheduler
from webhooks.service import WebhookService

logger = logging.getLogger(__name__)


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
        settings = self.settings
        if settings.debug_tracemalloc_dir is not None:  # first: trace what start allocates
            await self._trace_memory(settings.debug_tracemalloc_dir)
        ensure_data_dir(settings.data_dir)
        self.admin_token, self.admin_token_created = load_or_create_secret(
            settings.data_dir, "admin_token", settings.admin_token)
        signing_key, _ = load_or_create_secret(settings.data_dir, "signing_key.pem",
                                               settings.signing_key,
                                               generate=generate_private_key_pem)
        # Bound first: with http_port 0 the URLs the platform hands out (grants' watch
        # URLs, the printed watch link) must name the port it really listens on.
        http_socket = bind_socket(settings.host, settings.http_port)
        self._stack.callback(http_socket.close)
        settings = self.settings = settings.model_copy(
            update={"admin_token": self.admin_token, "signing_key": signing_key,
                    "http_port": http_socket.getsockname()[1]})
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

        # Before the archiver and ingest: it records the events they send while they
        # stop (ends, VODs made on the way down); what it has not sent yet stays pending
        # in the catalog for the next start.
        dispatcher = WebhookService(settings, services.catalog, services.live)
        await dispatcher.start()
        self._stack.push_async_callback(dispatcher.stop)

        archiver = ArchiverService(settings, services.catalog, services.live,
                                   services.storage, uploader, registry=services.registry)
        await archiver.start()
        self._stack.push_async_callback(archiver.stop)

        self.ingest = IngestNode(services, uploader=uploader, recorder=recorder)
        await self.ingest.start()
        self._stack.push_async_callback(self.ingest.stop)

        await self._start_scheduler(services)

        app = create_platform_app(settings, catalog=services.catalog, live=services.live,
                                  storage=services.storage, registry=services.registry,
                                  whip=self.ingest.whip)
        self.http = HttpServer(app, http_socket, HttpLimits.from_settings(settings))
        await self.http.start()
        services.runtime_metrics().watch("http", http_connections(self.http))
        if isinstance(services.live, MemoryLiveState):
            services.runtime_metrics().watch_live(services.live.holdings)
        self._stack.push_async_callback(self.http.stop)

    async def _trace_memory(self, directory: Path) -> None:
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
    def rtmps_port(self) -> int | None:
        """The RTMPS port, or None when RTMPS is off."""
        assert self.ingest is not None, "platform not started"
        return self.ingest.rtmps_port

    def reload_tls(self) -> bool:
        """SIGHUP: the RTMPS certificate re-read for new connections."""
        return self.ingest is not None and self.ingest.server.reload_tls()

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
        ]
        if self.rtmps_port is not None:
            rtmps = s.public_rtmps_url or f"rtmps://{host}:{self.rtmps_port}/{s.rtmp_app}"
            lines.append(f"  or with TLS: {rtmps}   (RTMPS: the stream key is encrypted)")
        lines += [
            f"  Stream Key:  {key}",
            *([f"  SRT:         srt://{host}:{self.ingest.srt_port}"
               "?streamid=#!::r=live/KEY,m=publish   (docs/srt.md)"]
              if self.ingest is not None and self.ingest.srt_port else []),
            *([f"  WHIP:        {http}/whip/{DEFAULT_CHANNEL}   (Bearer Token: the stream "
               "key; docs/whip.md)"]
              if self.ingest is not None and self.ingest.whip is not None else []),
            f"  Watch:       {http}/watch/{DEFAULT_CHANNEL}",
            f"  Admin:       {http}/admin   API: {http}/api/v1   Docs: {http}/docs",
        ]
        if self.admin_token_created:
            lines.append(f"  Admin token: {self.admin_token}   (shown once; kept in "
                         f"{s.data_dir / 'admin_token'})")
        lines.append("Stop with Ctrl-C.")
        return "\n".join(lines)



def run_embedded(settings: Settings) -> int:
    start_process(settings)

    async def main() -> None:
        async with EmbeddedPlatform(settings) as platform:
            # For `castway channels ...` run from another directory (launch/running.py).
            record = register(os.getpid(), settings.data_dir,
                              settings.effective_public_url)
            try:
                print(platform.banner(), flush=True)
                with on_sighup(platform.reload_tls):
                    await wait_for_stop_signal()
                logger.info("stopping")
            finally:
                unregister(record)

    return run_async(main())
