"""PostgreSQL lost or frozen in the middle of a broadcast: the broadcast goes on, the
catalog catches up once the database is back, and the VOD holds every frame.

A real ingest node and archiver on a real PostgreSQL catalog, reached through a fault
proxy (tests/fixtures/fault_proxy.py) that cuts every connection (a restart, a failover)
or freezes them (a stopped server: requests wait for an answer) while a real ffmpeg
publisher streams. A freeze shorter than ``CATALOG_TIMEOUT_S`` is waited out; past it
every catalog call fails as unavailable within the timeout and is retried (or, for a new
publish, refused) instead of waiting for the thaw."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from castway.catalog.sql import CatalogUnavailable, SqlCatalog
from castway.keys import hash_stream_key
from castway.model import BroadcastState, Channel, StreamKey
from tests.archiver.helpers import count_frames
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.postgres import PG_HOST, PG_PORT
from tests.reliability.node import FPS, poll, publishing
from tests.support import make_test_media, require_tool

pytestmark = pytest.mark.peer

CATALOG_TIMEOUT_S = 3.0
LONG_FREEZE_S = 20.0  # well past CATALOG_TIMEOUT_S
SLACK_S = 1.0  # thread hand-offs on a loaded 2-core machine


def _through(proxy: FaultProxy, url: str) -> str:
    return url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}")


def _timed(call: Callable[[], object]) -> float:
    """Seconds until ``call`` raised CatalogUnavailable (it must)."""
    started = time.monotonic()
    with pytest.raises(CatalogUnavailable):
        call()
    return time.monotonic() - started


def test_catalog_calls_during_a_long_freeze_fail_within_the_timeout(
        postgres_schema_url: str, postgres_proxy: FaultProxy) -> None:
    url = _through(postgres_proxy, postgres_schema_url)
    catalog = SqlCatalog(url, timeout_s=CATALOG_TIMEOUT_S)
    fresh = SqlCatalog(url, timeout_s=CATALOG_TIMEOUT_S)  # no pooled connection yet
    try:
        catalog.migrate()
        catalog.create_channel(Channel("alpha"))  # the pool holds an open connection
        postgres_proxy.freeze()
        frozen_at = time.monotonic()
        try:
            took = {
                "read on a pooled connection": _timed(lambda: catalog.get_channel("alpha")),
                "write": _timed(lambda: catalog.create_channel(Channel("beta"))),
                "read again": _timed(catalog.list_channels),
                "read on a new connection": _timed(lambda: fresh.get_channel("alpha")),
            }
            assert catalog.ping() is False
            assert time.monotonic() - frozen_at > 3 * CATALOG_TIMEOUT_S  # still frozen
            # Nothing is left checked out: every connection that timed out was dropped.
            assert catalog.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        finally:
            postgres_proxy.restore()
        assert all(s <= CATALOG_TIMEOUT_S + SLACK_S for s in took.values()), took
        # After the thaw the next call answers at once, on a new connection.
        started = time.monotonic()
        assert catalog.get_channel("alpha") is not None
        assert time.monotonic() - started < 1.0
    finally:
        catalog.close()
        fresh.close()


@pytest.mark.parametrize(("fault", "outage_s", "timeout_s"), [
    ("cut", 4.0, CATALOG_TIMEOUT_S),
    ("freeze", 4.0, 5.0),  # shorter than the timeout: calls wait it out
    ("freeze", LONG_FREEZE_S, CATALOG_TIMEOUT_S),  # longer: calls fail and are retried
], ids=["cut", "short-freeze", "long-freeze"])
async def test_a_postgres_outage_mid_broadcast_loses_nothing(
        tmp_path: Path, postgres_schema_url: str, postgres_proxy: FaultProxy,
        fault: str, outage_s: float, timeout_s: float) -> None:
    url = _through(postgres_proxy, postgres_schema_url)
    async with publishing(tmp_path, seconds=10.0, database_url=url,
                          catalog_timeout_s=timeout_s) as stage:
        broadcast_id = await stage.broadcast_with_segments(3)
        getattr(postgres_proxy, fault)()
        outage_started = time.monotonic()

        async def records_waiting() -> bool:  # the catalog is missed, not just down
            return stage.metric("castway_catalog_records_pending") > 0 and \
                time.monotonic() - outage_started >= outage_s

        try:
            await poll("segment records waiting for the catalog", records_waiting,
                       outage_s + 30)
            # The broadcast goes on meanwhile: segments keep coming.
            assert len(await stage.services.live.segment_log(broadcast_id, "source")) >= 6
            if fault == "freeze" and outage_s > timeout_s:
                # The recorder's writes timed out and were tried again meanwhile; none
                # of them waited for the thaw.
                assert stage.metric("castway_catalog_record_failures_total") >= 2
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


async def test_a_new_publish_during_a_freeze_is_refused_within_the_timeout(
        tmp_path: Path, postgres_schema_url: str, postgres_proxy: FaultProxy) -> None:
    url = _through(postgres_proxy, postgres_schema_url)
    clip = make_test_media(tmp_path / "beta.flv", seconds=6.0, width=320, height=180,
                           gop=FPS)
    async with publishing(tmp_path, seconds=10.0, database_url=url,
                          catalog_timeout_s=CATALOG_TIMEOUT_S) as stage:
        stage.services.catalog.create_channel(Channel("beta"))
        stage.services.catalog.add_stream_key(StreamKey("beta", hash_stream_key("cw_beta")))
        await stage.broadcast_with_segments(1)
        rtmp = f"rtmp://127.0.0.1:{stage.services.settings.rtmp_port}/live/cw_beta"
        command = [require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-re",
                   "-i", str(clip), "-c", "copy", "-f", "flv", rtmp]
        postgres_proxy.freeze()
        try:
            started = time.monotonic()
            refused = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, timeout=LONG_FREEZE_S)
            took = time.monotonic() - started
            # Refused by the server (an RTMP error status, not a dropped connection)
            # within the timeout, while the database is still frozen: not at the thaw.
            assert refused.returncode != 0
            assert b"catalog cannot be reached" in refused.stderr, refused.stderr
            assert took <= CATALOG_TIMEOUT_S + 2 * SLACK_S, took  # + ffmpeg's start-up
            assert stage.node.manager.broadcast_id("beta") is None
        finally:
            postgres_proxy.restore()
        # Once the database is back the same publish is accepted.
        again = subprocess.Popen(command, stderr=subprocess.PIPE)
        try:
            async def live() -> bool:
                return stage.node.manager.broadcast_id("beta") is not None

            await poll("the publish after the thaw", live, 30)
        finally:
            again.kill()
            again.wait()
