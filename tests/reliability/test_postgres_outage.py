"""PostgreSQL lost or frozen in the middle of a broadcast: the broadcast goes on, the
catalog catches up once the database is back, and the VOD holds every frame.

A real ingest node and archiver on a real PostgreSQL catalog, reached through a fault
proxy (tests/fixtures/fault_proxy.py) that cuts every connection (a restart, a failover)
or freezes them (a stopped server: requests wait for an answer) for a few seconds while
a real ffmpeg publisher streams."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from castway.catalog.sql import SqlCatalog
from castway.model import BroadcastState
from tests.archiver.helpers import count_frames
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.postgres import PG_HOST, PG_PORT
from tests.reliability.node import FPS, poll, publishing

pytestmark = pytest.mark.peer

OUTAGE_S = 4.0


@pytest.mark.parametrize("fault", ["cut", "freeze"])
async def test_a_postgres_outage_mid_broadcast_loses_nothing(
        tmp_path: Path, postgres_schema_url: str, postgres_proxy: FaultProxy,
        fault: str) -> None:
    url = postgres_schema_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{postgres_proxy.port}")
    async with publishing(tmp_path, seconds=10.0, database_url=url) as stage:
        broadcast_id = await stage.broadcast_with_segments(3)
        getattr(postgres_proxy, fault)()
        outage_started = time.monotonic()

        async def records_waiting() -> bool:  # the catalog is missed, not just down
            return stage.metric("castway_catalog_records_pending") > 0 and \
                time.monotonic() - outage_started >= OUTAGE_S

        try:
            await poll("segment records waiting for the catalog", records_waiting, 30)
            # The broadcast goes on meanwhile: segments keep coming.
            assert len(await stage.services.live.segment_log(broadcast_id, "source")) >= 6
        finally:
            postgres_proxy.restore()
        assert await asyncio.to_thread(stage.publisher.wait, 60) == 0
        await stage.vod_complete(broadcast_id)
    assert stage.metric("castway_catalog_records_dropped_total") == 0
    catalog = SqlCatalog(url)
    try:
        broadcast = catalog.get_broadcast(broadcast_id)
    finally:
        catalog.close()
    assert broadcast is not None and broadcast.state is BroadcastState.ENDED
    assert count_frames(str(stage.master(broadcast_id))) == 10 * FPS  # every frame
