"""PostgreSQL lost or frozen in the middle of a broadcast: the broadcast goes on, the
catalog catches up once the database is back, and the VOD holds every frame.

A real ingest node and archiver on a real PostgreSQL catalog, reached through a fault
proxy (tests/fixtures/fault_proxy.py) that cuts every connection (a restart, a failover)
or freezes them (a stopped server: requests wait for an answer) for a few seconds while
a real ffmpeg publisher streams."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from archiver.service import ArchiverService
from castway.catalog.sql import SqlCatalog
from castway.keys import hash_stream_key
from castway.model import BroadcastState, Channel, StreamKey, VodState
from castway.serve import IngestNode, Services
from castway.settings import Settings
from tests.archiver.helpers import count_frames
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.postgres import PG_HOST, PG_PORT
from tests.support import free_port, make_test_media, require_tool

pytestmark = pytest.mark.peer

KEY = "cw_pg-outage"
LADDER = '{"rungs": [{"name": "90p", "height": 90, "video_bitrate_kbps": 100}]}'
OUTAGE_S = 4.0


async def poll(what: str, check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("fault", ["cut", "freeze"])
async def test_a_postgres_outage_mid_broadcast_loses_nothing(
        tmp_path: Path, postgres_schema_url: str, postgres_proxy: FaultProxy,
        fault: str) -> None:
    clip = make_test_media(tmp_path / "clip.flv", seconds=10.0, width=320, height=180,
                           gop=30)
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    rtmp_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data", storage_url=str(tmp_path / "storage"),
        database_url=postgres_schema_url.replace(f"{PG_HOST}:{PG_PORT}",
                                                 f"127.0.0.1:{postgres_proxy.port}"),
        host="127.0.0.1", rtmp_port=rtmp_port, node_id="node-a", reconnect_grace_s=0.5,
        ladder=str(ladder), x264_preset="ultrafast", target_segment_s=1.0,
        archive_reconcile_interval_s=1.0)
    services = Services.open(settings)
    services.catalog.create_channel(Channel("alpha"))
    services.catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    node = IngestNode(services)
    archiver = ArchiverService(settings, services.catalog, services.live, services.storage)
    await archiver.start()
    await node.start()
    publisher = subprocess.Popen(
        [require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-i", str(clip),
         "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/{KEY}"],
        stderr=subprocess.PIPE)

    def metric(name: str) -> float:
        return services.registry.get_sample_value(name) or 0.0

    try:
        async def three_segments() -> bool:
            broadcast_id = node.manager.broadcast_id("alpha")
            return broadcast_id is not None and len(
                await services.live.segment_log(broadcast_id, "source")) >= 3

        await poll("three segments", three_segments, 30)
        broadcast_id = node.manager.broadcast_id("alpha")
        assert broadcast_id is not None
        getattr(postgres_proxy, fault)()
        outage_started = time.monotonic()

        async def records_waiting() -> bool:  # the catalog is missed, not just down
            return metric("castway_catalog_records_pending") > 0 and \
                time.monotonic() - outage_started >= OUTAGE_S

        await poll("segment records waiting for the catalog", records_waiting, 30)
        # The broadcast goes on meanwhile: segments keep coming.
        assert len(await services.live.segment_log(broadcast_id, "source")) >= 6
        postgres_proxy.restore()

        assert await asyncio.to_thread(publisher.wait, 60) == 0

        async def vod_complete() -> bool:
            vod = await asyncio.to_thread(services.catalog.get_vod, broadcast_id)
            return vod is not None and vod.state is VodState.COMPLETE

        await poll("the VOD", vod_complete, 60)
    finally:
        postgres_proxy.restore()
        if publisher.poll() is None:
            publisher.kill()
        publisher.wait()
        await node.stop()
        await archiver.stop()
        await services.close()
    assert metric("castway_catalog_records_dropped_total") == 0
    catalog = SqlCatalog(settings.database_url or "")
    try:
        broadcast = catalog.get_broadcast(broadcast_id)
    finally:
        catalog.close()
    assert broadcast is not None and broadcast.state is BroadcastState.ENDED
    master = tmp_path / "storage" / "broadcasts" / broadcast_id / "master.m3u8"
    assert count_frames(str(master)) == 10 * 30  # every published frame
