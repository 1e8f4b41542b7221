"""VOD verification against real storage: complete only once every referenced object is
there with the recorded size."""

from __future__ import annotations

import pytest

from archiver.context import ArchiveContext, VodIncomplete
from archiver.instant_vod import make_vod
from archiver.verify import verify_vod
from castway.model import VodState
from tests.archiver.helpers import HlsRun, publish

pytestmark = pytest.mark.peer


async def test_a_vod_is_complete_only_when_every_segment_is_in_storage(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    held_back = "broadcasts/b1/source/5.m4s"
    ctx.storage.delete(held_back)  # still on its way (spooled by an uploader)
    vod = await make_vod(ctx, "b1")
    assert vod is not None
    with pytest.raises(VodIncomplete) as caught:
        await verify_vod(ctx, "b1")
    assert caught.value.missing == (held_back,)
    result = await verify_vod(ctx, "b1", raise_incomplete=False)
    assert not result.complete
    stored = ctx.catalog.get_vod("b1")
    assert stored is not None and stored.state is VodState.PENDING

    ctx.storage.put(held_back, published.payloads[held_back][:-1])  # wrong size: not it
    with pytest.raises(VodIncomplete):
        await verify_vod(ctx, "b1")
    ctx.storage.put(held_back, published.payloads[held_back])
    result = await verify_vod(ctx, "b1")
    assert result.complete and result.checked == 9  # 7 segments + 2 init segments
    stored = ctx.catalog.get_vod("b1")
    assert stored is not None and stored.state is VodState.COMPLETE
    # The ended broadcast's segment log has served its purpose, and so has the rest of
    # what the live state held of it (else every broadcast ever run stays there).
    assert await ctx.live.segment_log("b1", "source") == []
    assert await ctx.live.get_broadcast("b1") is None
    assert "b1" not in [b.id for b in await ctx.live.list_broadcasts()]
    # ... and making the VOD again (a redelivered task) changes nothing.
    again = await make_vod(ctx, "b1")
    assert again is not None and again.state is VodState.COMPLETE
