"""The instant VOD task on real back ends: SQLite catalog, in-process live state, local
storage, real fMP4 segments from ffmpeg, and ffmpeg/ffprobe as the player."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from archiver.context import ArchiveContext, NotReady
from archiver.instant_vod import make_vod
from castway.layout import master_key, media_playlist_key
from castway.model import BroadcastState, Visibility, Vod, VodState
from castway.storage.base import VOD_PLAYLIST
from tests.archiver.helpers import HlsRun, count_frames, local_path, publish

pytestmark = pytest.mark.peer


async def test_the_vod_is_written_at_once_and_plays_every_published_frame(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    run = two_runs[0]
    await publish("b1", [run], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    started = time.monotonic()
    vod = await make_vod(ctx, "b1")
    assert time.monotonic() - started < 1.0
    assert vod is not None
    assert vod.state is VodState.PENDING and vod.visibility is Visibility.PUBLIC
    assert vod.duration_s == pytest.approx(run.duration_s)
    for key in (master_key("b1"), media_playlist_key("b1", "source")):
        info = ctx.storage.head(key)
        assert info is not None
        assert info.content_type == "application/vnd.apple.mpegurl"
        assert info.cache_control == VOD_PLAYLIST
    media = ctx.storage.get(media_playlist_key("b1", "source"))
    assert media is not None and b"#EXT-X-PLAYLIST-TYPE:VOD" in media
    assert media.rstrip().endswith(b"#EXT-X-ENDLIST")
    assert count_frames(local_path(ctx, master_key("b1"))) == run.frames


async def test_a_reconnected_broadcast_keeps_both_sessions(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    vod = await make_vod(ctx, "b1")
    assert vod is not None
    assert vod.duration_s == pytest.approx(sum(r.duration_s for r in two_runs))
    media = ctx.storage.get(media_playlist_key("b1", "source"))
    assert media is not None
    lines = media.decode().splitlines()
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    assert '#EXT-X-MAP:URI="init.1.mp4"' in lines
    segments = sum(len(r.segments) for r in two_runs)
    assert [ln for ln in lines if ln.endswith(".m4s")] == [f"{i}.m4s" for i in range(segments)]


async def test_make_vod_is_idempotent_and_keeps_the_chosen_visibility(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                  storage=ctx.storage, visibility=Visibility.PRIVATE)
    first = await make_vod(ctx, "b1")
    assert first is not None and first.visibility is Visibility.PRIVATE  # channel default
    text = ctx.storage.get(media_playlist_key("b1", "source"))
    ctx.catalog.save_vod(replace(first, visibility=Visibility.PUBLIC))  # the broadcaster
    again = await make_vod(ctx, "b1")
    assert again is not None and again.visibility is Visibility.PUBLIC
    assert again.created_at == first.created_at
    assert ctx.storage.get(media_playlist_key("b1", "source")) == text


async def test_an_unknown_broadcast_is_not_ready_and_an_empty_one_has_no_vod(
        ctx: ArchiveContext) -> None:
    with pytest.raises(NotReady):
        await make_vod(ctx, "nope")
    await publish("b2", [], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    assert await make_vod(ctx, "b2") is None
    assert ctx.storage.get(master_key("b2")) is None
    # Ended with nothing to archive: the live state forgets it.
    assert await ctx.live.get_broadcast("b2") is None


async def test_a_live_broadcast_without_segments_yet_stays_in_the_live_state(
        ctx: ArchiveContext) -> None:
    published = await publish("b2", [], live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    live = replace(published.broadcast, state=BroadcastState.LIVE, ended_at=None)
    ctx.catalog.save_broadcast(live)
    await ctx.live.put_broadcast(live)
    assert await make_vod(ctx, "b2") is None
    assert await ctx.live.get_broadcast("b2") == live


def test_vod_type_is_the_models() -> None:
    assert Vod.__dataclass_params__.frozen  # type: ignore[attr-defined]
