"""Fixtures of the archiver's tests: real fMP4 HLS runs, and a task context on real
back ends (SQLite catalog, in-process live state, local storage)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archiver.context import ArchiveContext
from castway.catalog import open_catalog
from castway.live.memory import MemoryLiveState
from castway.settings import Settings
from castway.storage.local import LocalStorage
from tests.archiver.helpers import HlsRun, make_hls_run


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[HlsRun, HlsRun]:
    """A publisher session of 4 s and, after a reconnect, one of 3 s (another pattern)."""
    base = tmp_path_factory.mktemp("hls")
    return (make_hls_run(base / "a", seconds=4.0),
            make_hls_run(base / "b", seconds=3.0, pattern="smptebars"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", target_segment_s=1.0)


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[ArchiveContext]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(settings)
    live = MemoryLiveState()
    storage = LocalStorage(settings.data_dir / "storage")
    try:
        yield ArchiveContext(settings, catalog, live, storage)
    finally:
        await live.close()
        catalog.close()
