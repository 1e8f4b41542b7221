"""castway.health.asgi: liveness, readiness over the real dependencies, Prometheus metrics."""

from __future__ import annotations

import shutil

import httpx

from castway.catalog.sql import SqlCatalog
from castway.live.memory import MemoryLiveState
from castway.storage.local import LocalStorage
from tests.origin.feed import LiveFeeder


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_when_everything_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "failing": []}
    assert response.headers["cache-control"] == "no-store"


async def test_readyz_lists_failing_dependencies(client: httpx.AsyncClient,
                                                 live: MemoryLiveState,
                                                 storage: LocalStorage) -> None:
    shutil.rmtree(storage.root)
    await live.close()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failing": ["live", "storage"]}


async def test_readyz_with_a_broken_catalog(client: httpx.AsyncClient,
                                            catalog: SqlCatalog) -> None:
    from sqlalchemy import create_engine

    catalog._engine = create_engine("sqlite:////nonexistent-dir/x.db")
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["catalog"]


async def test_metrics_count_requests_blocked_reloads_and_wakeups(
        client: httpx.AsyncClient, feeder: LiveFeeder) -> None:
    import asyncio

    await feeder.push_segments(1)
    await client.get("/hls/b/b0001/360p/0.m4s")
    await client.get("/hls/b/b0001/360p/99.m4s")
    blocked = asyncio.create_task(client.get("/hls/demo/360p/index.m3u8",
                                             params={"_HLS_msn": "1", "_HLS_part": "0"}))
    await asyncio.sleep(0.01)
    await feeder.push_part()
    assert (await blocked).status_code == 200
    text = (await client.get("/metrics")).text
    assert 'castway_origin_requests_total{kind="media",status="200"} 1.0' in text
    assert 'castway_origin_requests_total{kind="media",status="404"} 1.0' in text
    assert 'castway_origin_requests_total{kind="playlist",status="200"} 1.0' in text
    assert "castway_origin_blocked_reloads 0.0" in text
    assert "castway_origin_wakeup_seconds_count 1.0" in text


async def test_health_app_of_its_own(catalog: SqlCatalog, live: MemoryLiveState,
                                     storage: LocalStorage) -> None:
    from prometheus_client import CollectorRegistry, Counter

    from castway.health.asgi import create_health_app

    registry = CollectorRegistry()
    Counter("castway_ingest_test", "a metric of the ingest node", registry=registry).inc()
    app = create_health_app(catalog, live, storage, registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).json()["status"] == "ready"
        assert "castway_ingest_test_total 1.0" in (await c.get("/metrics")).text
        assert (await c.get("/hls/x/master.m3u8")).status_code == 404
