"""Python-heap snapshots for a leak hunt (``CASTWAY_DEBUG_TRACEMALLOC_DIR``).

Resident memory alone cannot tell a leak from a bounded cache filling up, nor Python
objects from libav's buffers. With the setting, ``castway serve`` traces Python
allocations (one frame: the allocating line) and dumps a snapshot every minute;
:func:`growth` names the lines whose live allocations grew between two of them. Tracing
costs memory and CPU (roughly +30-60 % of the heap, and slower allocations): a
diagnostic, not a production default.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT_EVERY_S = 60.0
# tracemalloc's own bookkeeping and the import system are not the process's data.
_NOISE = (tracemalloc.Filter(False, tracemalloc.__file__),
          tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
          tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
          tracemalloc.Filter(False, "<unknown>"))


def snapshot_path(directory: Path, pid: int, elapsed_s: float) -> Path:
    """Names sort by process, then by its age in milliseconds: one directory serves many
    starts."""
    return directory / f"heap-{pid}-{round(elapsed_s * 1000):010d}.tracemalloc"


async def write_snapshots(directory: Path, pid: int,
                          every_s: float = SNAPSHOT_EVERY_S) -> None:
    """Trace allocations and dump a snapshot every ``every_s`` until cancelled."""
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tracemalloc.start(1)
    try:
        while True:
            await asyncio.sleep(every_s)
            # take_snapshot holds the GIL whichever thread runs it; the dump (pickling
            # and writing) is the part worth moving off the event loop.
            snapshot = tracemalloc.take_snapshot().filter_traces(_NOISE)
            path = snapshot_path(directory, pid, time.monotonic() - started)
            await asyncio.to_thread(snapshot.dump, str(path))
    finally:
        tracemalloc.stop()


@dataclass(frozen=True, slots=True)
class SiteGrowth:
    site: str  # "file:line"
    kib: float  # live allocations from that line: newer minus older
    count: int


def growth(older: Path, newer: Path, top: int = 10) -> list[SiteGrowth]:
    """The ``top`` allocation sites whose live bytes grew most from ``older`` to
    ``newer`` (two snapshots of one process)."""
    before = tracemalloc.Snapshot.load(str(older))
    after = tracemalloc.Snapshot.load(str(newer))
    stats = after.compare_to(before, "lineno")
    stats.sort(key=lambda s: s.size_diff, reverse=True)
    return [SiteGrowth(f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                       round(s.size_diff / 1024, 1), s.count_diff)
            for s in stats[:top] if s.size_diff > 0]


def heap_kib(path: Path) -> float:
    """Live traced bytes of a snapshot (the Python heap less tracemalloc's own)."""
    snapshot = tracemalloc.Snapshot.load(str(path))
    return round(sum(s.size for s in snapshot.statistics("filename")) / 1024, 1)
