"""Retention: VODs past the setting are deleted, objects and records, and only those."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from archiver.context import ArchiveContext
from archiver.instant_vod import make_vod
from archiver.retention import expire_vods
from castway.layout import master_key
from castway.model import utcnow
from tests.archiver.helpers import HlsRun, publish

pytestmark = pytest.mark.peer


async def test_expiry_deletes_vods_past_retention_only(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("old", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                  storage=ctx.storage)
    await publish("new", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                  storage=ctx.storage)
    for broadcast_id in ("old", "new"):
        await make_vod(ctx, broadcast_id)
    old = ctx.catalog.get_vod("old")
    assert old is not None
    now = utcnow()
    ctx.catalog.save_vod(replace(old, created_at=now - timedelta(days=8)))

    assert await expire_vods(ctx, now) == []  # no retention setting: keep forever
    retained = replace(ctx, settings=ctx.settings.model_copy(update={"vod_retention_days": 7}))
    assert await expire_vods(retained, now) == ["old"]
    assert ctx.catalog.get_vod("old") is None
    assert list(ctx.storage.list("broadcasts/old/")) == []
    assert ctx.catalog.get_vod("new") is not None
    assert ctx.storage.exists(master_key("new"))
    assert await expire_vods(retained, now) == []  # a repeated run is a no-op
