"""The segment recorder: durable segment records written off the media path, through
catalog outages."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from castway.catalog import open_catalog
from castway.catalog.recorder import SegmentRecorder
from castway.model import Broadcast, Rendition, Segment
from castway.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def segment(msn: int) -> Segment:
    return Segment(msn=msn, duration_s=2.0, key=f"broadcasts/b1/source/{msn}.m4s",
                   start_pts_s=2.0 * msn, program_date_time=T0 + timedelta(seconds=2 * msn),
                   init_key="broadcasts/b1/source/init.mp4", size=100)


async def test_records_and_the_ladder_reach_the_catalog(tmp_path: Path) -> None:
    catalog = open_catalog(Settings(data_dir=tmp_path))
    catalog.save_broadcast(Broadcast(id="b1", channel="c", node_id="n"))
    recorder = SegmentRecorder(catalog, flush_interval_s=0.05)
    await recorder.start()
    try:
        for msn in range(1200):  # more than one batch
            recorder.record("b1", "source", segment(msn))
        ladder = (Rendition("source", 640, 360, 30.0, None, "avc1.64001e", 900_000),)
        recorder.record_renditions("b1", ladder)
        assert await recorder.flush(10.0)
    finally:
        assert await recorder.close()
    assert [s.msn for s in catalog.segment_records("b1")["source"]] == list(range(1200))
    stored = catalog.get_broadcast("b1")
    assert stored is not None and stored.renditions == ladder
    catalog.close()


async def test_a_locked_catalog_never_blocks_the_caller_and_loses_nothing(
        tmp_path: Path) -> None:
    """Another process holds SQLite's write lock (as a stuck writer or a full disk would
    stall the catalog): record() still returns at once, and the records land after."""
    settings = Settings(data_dir=tmp_path)
    catalog = open_catalog(settings)
    holder = sqlite3.connect(tmp_path / "castway.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    recorder = SegmentRecorder(catalog, flush_interval_s=0.05, base_backoff_s=0.05,
                               max_backoff_s=0.2)
    await recorder.start()
    try:
        started = time.monotonic()
        for msn in range(50):
            recorder.record("b1", "source", segment(msn))
            await asyncio.sleep(0)
        assert time.monotonic() - started < 0.5  # the event loop was never held
        assert not await recorder.flush(0.5)  # locked: nothing written yet
        asyncio.get_running_loop().call_later(0.5, holder.rollback)
        assert await recorder.flush(30.0)
    finally:
        await recorder.close()
        holder.close()
    assert len(catalog.segment_records("b1")["source"]) == 50
    catalog.close()


async def test_past_the_bound_the_oldest_records_are_dropped_and_counted(
        tmp_path: Path) -> None:
    catalog = open_catalog(Settings(data_dir=tmp_path))
    recorder = SegmentRecorder(catalog, max_pending=10)  # never started: nothing written
    for msn in range(15):
        recorder.record("b1", "source", segment(msn))
    assert recorder.pending == 10
    await recorder.start()
    assert await recorder.flush(10.0)
    await recorder.close()
    assert [s.msn for s in catalog.segment_records("b1")["source"]] == list(range(5, 15))
    catalog.close()
