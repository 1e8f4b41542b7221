"""What a process holds, for /metrics: open connections by kind (HTTP, RTMP, RTMP not
yet authenticated), asyncio tasks, and -- from prometheus_client's ProcessCollector --
open and maximum descriptors and resident memory (``process_open_fds``,
``process_max_fds``, ``process_resident_memory_bytes``). The numbers a connection flood
or a leak moves first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class RuntimeCollector(Collector):
    """Reads its sources at scrape time (from any thread: the worker's health server
    scrapes on its own)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._connections: dict[str, Callable[[], int]] = {}

    def watch(self, kind: str, count: Callable[[], int]) -> None:
        """Report ``count()`` as ``castway_open_connections{kind=...}``."""
        self._connections[kind] = count

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily("castway_open_connections",
                                        "Client connections open now, by kind",
                                        labels=["kind"])
        for kind, count in sorted(self._connections.items()):
            connections.add_metric([kind], count())
        yield connections
        yield GaugeMetricFamily("castway_asyncio_tasks", "asyncio tasks alive in the "
                                "process's event loop", value=len(asyncio.all_tasks(self._loop)))


def install_runtime_metrics(registry: CollectorRegistry,
                            loop: asyncio.AbstractEventLoop | None = None) -> RuntimeCollector:
    """Register the process and runtime metrics in ``registry`` (once per registry)."""
    ProcessCollector(registry=registry)
    collector = RuntimeCollector(loop or asyncio.get_running_loop())
    registry.register(collector)
    return collector
