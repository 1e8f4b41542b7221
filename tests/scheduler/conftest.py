"""Shared by the local-fleet tests: the live state their ``settings`` point at (the real
redis-server of tests/fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from castway.live.base import LiveState
from castway.settings import Settings


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveState]:
    from castway.live import open_live_state

    state = open_live_state(settings)
    yield state
    await state.close()
