"""Posters of live broadcasts from the newest real fMP4 segment."""

from __future__ import annotations

from dataclasses import replace

import pytest

from archiver.context import ArchiveContext
from archiver.posters import make_poster
from castway.model import BroadcastState
from castway.storage.base import VOD_PLAYLIST
from tests.archiver.helpers import HlsRun, publish

pytestmark = pytest.mark.peer


async def test_the_poster_of_a_live_broadcast_is_refreshed(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    await ctx.live.put_broadcast(replace(published.broadcast, state=BroadcastState.LIVE))
    assert await make_poster(ctx, "b1")
    poster = ctx.storage.head("broadcasts/b1/poster.jpg")
    assert poster is not None and poster.cache_control == VOD_PLAYLIST
    assert not await make_poster(ctx, "unknown")
