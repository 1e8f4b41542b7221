"""What a process holds, for /metrics: open connections by kind (HTTP, RTMP, RTMP not
yet authenticated), asyncio tasks, and -- from prometheus_client's ProcessCollector --
open and maximum descriptors and resident memory (``process_open_fds``,
``process_max_fds``, ``process_resident_memory_bytes``), the garbage collector's
(``python_gc_*``), and what the in-process live state holds (``castway_live_*``: media
bytes and objects, broadcast records, windows, segment-log entries). The numbers a
connection flood or a leak moves first: resident memory that grows while
``castway_live_media_bytes`` stays level is not the live window's media."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from castway.live.memory import Holdings


class RuntimeCollector(Collector):
    """Reads its sources at scrape time (from any thread: the worker's health server
    scrapes on its own)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._connections: dict[str, Callable[[], int]] = {}
        self._live: Callable[[], Holdings] | None = None

    def watch(self, kind: str, count: Callable[[], int]) -> None:
        """Report ``count()`` as ``castway_open_connections{kind=...}``."""
        self._connections[kind] = count

    def watch_live(self, holdings: Callable[[], Holdings]) -> None:
        """Report the in-process live state's ``holdings()`` as ``castway_live_*``."""
        self._live = holdings

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily("castway_open_connections",
                                        "Client connections open now, by kind",
                                        labels=["kind"])
        for kind, count in sorted(self._connections.items()):
            connections.add_metric([kind], count())
        yield connections
        yield GaugeMetricFamily("castway_asyncio_tasks", "asyncio tasks alive in the "
                                "process's event loop", value=len(asyncio.all_tasks(self._loop)))
        if self._live is not None:
            held = self._live()
            for name, doc, value in (
                    ("media_bytes", "Bytes of live media (segments, parts, init segments) "
                     "held by the in-process live state", held.media_bytes),
                    ("media_objects", "Live media objects held", held.media_objects),
                    ("broadcasts", "Broadcast records held, live or ended and not yet "
                     "forgotten", held.broadcasts),
                    ("windows", "Live rendition windows held", held.windows),
                    ("segment_log_entries", "Segments in the held segment logs",
                     held.segment_log_entries)):
                yield GaugeMetricFamily(f"castway_live_{name}", doc, value=value)


def install_runtime_metrics(registry: CollectorRegistry,
                            loop: asyncio.AbstractEventLoop | None = None) -> RuntimeCollector:
    """Register the process and runtime metrics in ``registry`` (once per registry)."""
    ProcessCollector(registry=registry)
    # Collections per generation, and what each freed: garbage that waits in cycles for
    # a full collection shows as RSS that drops when generation 2 runs.
    GCCollector(registry=registry)
    collector = RuntimeCollector(loop or asyncio.get_running_loop())
    registry.register(collector)
    return collector
