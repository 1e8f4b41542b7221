"""Origin fixtures: the real SqlCatalog on SQLite, MemoryLiveState, LocalStorage, the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from castway.catalog import open_catalog
from castway.catalog.sql import SqlCatalog
from castway.live.memory import MemoryLiveState
from castway.settings import Settings
from castway.storage.local import LocalStorage
from launch.http_app import create_platform_app
from origin.context import OriginContext
from tests.origin.feed import Clip, LiveFeeder, make_clip
from tests.support import serve_app

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """12 s of 320x180 fMP4 in 0.5 s independent parts (ffmpeg CLI)."""
    return make_clip(tmp_path_factory.mktemp("clip"), seconds=12.0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token=TOKEN, host="127.0.0.1",
                    http_port=8080, public_url="http://origin.test")


@pytest.fixture
def catalog(settings: Settings) -> Iterator[SqlCatalog]:
    catalog = open_catalog(settings)
    try:
        yield catalog
    finally:
        catalog.close()


@pytest.fixture
async def live() -> AsyncIterator[MemoryLiveState]:
    state = MemoryLiveState()
    try:
        yield state
    finally:
        await state.close()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def app(settings: Settings, catalog: SqlCatalog, live: MemoryLiveState,
              storage: LocalStorage, registry: CollectorRegistry) -> AsyncIterator[FastAPI]:
    # The app as castway's processes serve it: the origin with chat (launch/http_app.py).
    application = create_platform_app(settings, catalog=catalog, live=live, storage=storage,
                                      registry=registry)
    try:
        yield application
    finally:
        ctx: OriginContext = application.state.origin
        await ctx.notifier.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://origin.test") as c:
        yield c


@pytest.fixture
async def feeder(live: MemoryLiveState, clip: Clip) -> LiveFeeder:
    """A live broadcast on channel 'demo' with one rendition, 360p."""
    feed = LiveFeeder(live, clip)
    await feed.start()
    return feed


@pytest.fixture
async def server(app: FastAPI) -> AsyncIterator[str]:
    """The app under uvicorn on a free loopback port (same event loop as the test)."""
    async with serve_app(app) as url:
        yield url
