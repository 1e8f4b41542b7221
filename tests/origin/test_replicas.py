"""Distributed mode: origin replicas share nothing but Redis (a real redis-server) and the
storage; a part published by the transcoder's process wakes blocked reloads on every
replica, and any replica serves any broadcast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from fastapi import FastAPI

from castway.catalog.sql import SqlCatalog
from castway.settings import Settings
from castway.storage.local import LocalStorage
from origin.app import create_app
from tests.hls_validator import validate_playlist
from tests.origin.feed import Clip, LiveFeeder

pytestmark = pytest.mark.peer

PLAYLIST = "/hls/demo/360p/index.m3u8"


@pytest.fixture
async def replicas(redis_url: str, settings: Settings, catalog: SqlCatalog,
                   storage: LocalStorage) -> AsyncIterator[list[tuple[FastAPI, httpx.AsyncClient]]]:
    redis = pytest.importorskip("castway.live.redis")
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            live = redis.RedisLiveState(redis_url)  # one connection pool per "process"
            stack.push_async_callback(live.close)
            app = create_app(settings, catalog=catalog, live=live, storage=storage)
            stack.push_async_callback(app.state.origin.notifier.close)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                       base_url="http://origin.test")
            stack.push_async_callback(client.aclose)
            clients.append((app, client))
        yield clients


@pytest.fixture
async def redis_feeder(redis_url: str, clip: Clip) -> AsyncIterator[LiveFeeder]:
    redis = pytest.importorskip("castway.live.redis")
    live = redis.RedisLiveState(redis_url)
    try:
        feeder = LiveFeeder(live, clip)
        await feeder.start()
        yield feeder
    finally:
        await live.close()


async def test_a_part_wakes_blocked_reloads_on_every_replica(
        replicas: list[tuple[FastAPI, httpx.AsyncClient]], redis_feeder: LiveFeeder) -> None:
    await redis_feeder.push_segments(2)
    blocked = [asyncio.create_task(c.get(PLAYLIST, params={"_HLS_msn": "2",
                                                           "_HLS_part": "0"}))
               for _, c in replicas for _ in range(50)]
    for app, _ in replicas:  # every request subscribed and parked
        while app.state.origin.notifier.waiting < 50:
            await asyncio.sleep(0.001)
    assert not any(task.done() for task in blocked)
    await redis_feeder.push_part()
    responses = await asyncio.wait_for(asyncio.gather(*blocked), 10)
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1  # the replicas agree
    assert 'URI="../../b/b0001/360p/2.0.m4s"' in responses[0].text
    assert validate_playlist(responses[0].text) == []


async def test_any_replica_serves_the_media(
        replicas: list[tuple[FastAPI, httpx.AsyncClient]], redis_feeder: LiveFeeder) -> None:
    await redis_feeder.push_segments(1)
    bodies = [(await c.get("/hls/b/b0001/360p/0.m4s")).content for _, c in replicas]
    assert bodies[0] == bodies[1] == b"".join(redis_feeder.clip.parts[:4])
