"""The segment recorder (:class:`SegmentRecorder`): the durable segment log and ladders,
written to the catalog off the media path, from a thread of its own.

Design: docs/reliability.md, "The durable record".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from prometheus_client import CollectorRegistry, Counter, Gauge

from castway.catalog.base import Catalog, SegmentRecord
from castway.model import Rendition, Segment

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
BATCH = 500
MAX_PENDING = 200_000  # ~55 h of a 5-rung ladder's 2 s segments held through an outage
BASE_BACKOFF_S = 0.25
MAX_BACKOFF_S = 10.0
CLOSE_TIMEOUT_S = 10.0


class SegmentRecorder:
    """Owned by one event loop: ``await start()``, ``record()``, ``await close()``."""

    def __init__(self, catalog: Catalog, registry: CollectorRegistry | None = None, *,
                 flush_interval_s: float = FLUSH_INTERVAL_S, max_pending: int = MAX_PENDING,
                 base_backoff_s: float = BASE_BACKOFF_S,
                 max_backoff_s: float = MAX_BACKOFF_S) -> None:
        self.catalog = catalog
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._segments: deque[SegmentRecord] = deque()
        self._ladders: dict[str, tuple[Rendition, ...]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="catalog-recorder")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing_since: float | None = None
        registry = registry or CollectorRegistry()
        self._pending = Gauge("castway_catalog_records_pending",
                              "Segment records waiting to be written to the catalog.",
                              registry=registry)
        self._written = Counter("castway_catalog_records_written",
                                "Segment records written to the catalog.", registry=registry)
        self._dropped = Counter("castway_catalog_records_dropped",
                                "Segment records dropped: the catalog failed for longer "
                                "than the pending bound holds.", registry=registry)
        self._failures = Counter("castway_catalog_record_failures",
                                 "Failed attempts to write segment records.",
                                 registry=registry)

    @property
    def pending(self) -> int:
        return len(self._segments) + len(self._ladders)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="segment-recorder")

    def record(self, broadcast_id: str, rendition: str, segment: Segment) -> None:
        """Queue one durable segment for the catalog; never blocks, never raises."""
        if len(self._segments) >= self.max_pending:
            lost = self._segments.popleft()
            self._dropped.inc()
            logger.error("segment record dropped: the catalog has failed too long",
                         extra={"broadcast_id": lost.broadcast_id,
                                "rendition": lost.rendition, "msn": lost.segment.msn})
        # Parts are live-only (LL-HLS); a VOD lists whole segments.
        self._segments.append(SegmentRecord(broadcast_id, rendition,
                                            _without_parts(segment)))
        self._changed()

    def record_renditions(self, broadcast_id: str, renditions: Sequence[Rendition]) -> None:
        """Queue the broadcast's ladder (only the newest one queued is written)."""
        self._ladders[broadcast_id] = tuple(renditions)
        self._changed()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is written; False if ``timeout_s`` passes first."""
        self._wakeup.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        return self.pending == 0

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Write what is queued (up to ``timeout_s``), then stop; False if records were
        left unwritten (the live state's segment log still has them)."""
        flushed = await self.flush(timeout_s) if self._task is not None else True
        task, self._task = self._task, None
        if task is not None:
            # The loop ends at its next turn; a cancel is only the fallback (in 3.11 a
            # wait_for racing its own timeout can swallow a cancellation).
            self._closing = True
            self._wakeup.set()
            done, _ = await asyncio.wait({task}, timeout=self.flush_interval_s + 5.0)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not flushed:
            logger.error("segment records not written at stop",
                         extra={"pending": self.pending})
        return flushed

    def _changed(self) -> None:
        self._idle.clear()
        self._pending.set(self.pending)
        if len(self._segments) >= BATCH:
            self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            if not self.pending:
                self._idle.set()
            await self._nap()
            self._wakeup.clear()
            while self.pending and not self._closing:
                batch = [self._segments[i] for i in range(min(BATCH, len(self._segments)))]
                ladders = dict(self._ladders)
                try:
                    await loop.run_in_executor(self._executor, self._write, batch, ladders)
                except Exception as e:  # CatalogError, or a driver's unwrapped error
                    failures += 1
                    self._failures.inc()
                    if self._failing_since is None:
                        self._failing_since = time.monotonic()
                        logger.warning("cannot write segment records; retrying",
                                       extra={"pending": self.pending, "error": str(e)})
                    delay = min(self.max_backoff_s, self.base_backoff_s * 2.0 ** failures)
                    await asyncio.sleep(delay)
                    continue
                if self._failing_since is not None:
                    logger.info("segment records written again", extra={
                        "outage_s": round(time.monotonic() - self._failing_since, 1)})
                    self._failing_since = None
                failures = 0
                # The bound may have dropped some of the batch meanwhile: pop only
                # what was written.
                written = {id(r) for r in batch}
                while self._segments and id(self._segments[0]) in written:
                    self._segments.popleft()
                for broadcast_id, ladder in ladders.items():
                    if self._ladders.get(broadcast_id) == ladder:
                        del self._ladders[broadcast_id]
                self._written.inc(len(batch))
                self._pending.set(self.pending)

    async def _nap(self) -> None:
        """Until woken or ``flush_interval_s`` passes (asyncio.wait, not wait_for: a
        cancellation always reaches us)."""
        waiter = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({waiter}, timeout=self.flush_interval_s)
        finally:
            waiter.cancel()

    def _write(self, batch: list[SegmentRecord],
               ladders: dict[str, tuple[Rendition, ...]]) -> None:
        # Segments before ladders: a ladder names renditions whose segments it expects.
        self.catalog.record_segments(batch)
        for broadcast_id, ladder in ladders.items():
            self.catalog.set_renditions(broadcast_id, ladder)


def _without_parts(segment: Segment) -> Segment:
    return replace(segment, parts=()) if segment.parts else segment
