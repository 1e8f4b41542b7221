"""The shared back ends of one process (catalog, live state, storage, metrics registry),
opened from settings and closed together, and what every process does with them first."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from castway.bootstrap import ensure_data_dir
from castway.catalog import open_catalog
from castway.catalog.base import Catalog
from castway.catalog.recorder import SegmentRecorder
from castway.live import open_live_state
from castway.live.base import LiveState
from castway.runtime_metrics import RuntimeCollector, install_runtime_metrics
from castway.settings import Settings
from castway.storage import open_storage
from castway.storage.base import Storage
from transcoder.salvage import salvage_journals


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
            self._runtime = install_runtime_metrics(self.registry)
        return self._runtime

    @classmethod
    def open(cls, settings: Settings) -> Services:
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



async def salvage(services: Services) -> None:
    """Make the segments the previous run of this node had not made durable, from the
    source journals it left (transcoder.salvage)."""
    if not services.settings.transcode:
        return
    await asyncio.to_thread(salvage_journals, services.settings, services.catalog,
                            services.storage)
