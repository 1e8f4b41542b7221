"""Segment logs followed while a broadcast is live, completed by their tails when its VOD
is made (real back ends and real fMP4 segments)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from archiver.context import ArchiveContext
from archiver.instant_vod import make_vod
from archiver.segment_logs import FollowedLogs, follow_logs
from castway.layout import master_key
from tests.archiver.helpers import HlsRun, publish

pytestmark = pytest.mark.peer


async def test_logs_followed_while_live_are_completed_by_their_tail(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    known = FollowedLogs()
    assert await follow_logs(ctx, "b1", known) == 7
    assert known.renditions == published.broadcast.renditions
    # The broadcast record ends up without its ladder (and the live record is gone): the
    # ladder seen while live still makes the master playlist.
    ctx.catalog.save_broadcast(replace(published.broadcast, renditions=()))
    await ctx.live.remove_broadcast("b1")
    vod = await make_vod(ctx, "b1", known=known)
    assert vod is not None and vod.duration_s == pytest.approx(7.0)
    master = ctx.storage.get(master_key("b1"))
    assert master is not None and b"source/vod.m3u8" in master
