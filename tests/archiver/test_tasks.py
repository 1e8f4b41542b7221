"""The archive tasks on real back ends: SQLite catalog, in-process live state, local
storage, real fMP4 segments from ffmpeg, and ffmpeg/ffprobe as the player."""

from __future__ import annotations

import struct
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from archiver import tasks
from castway.layout import master_key, media_playlist_key
from castway.model import BroadcastState, Visibility, Vod, VodState, utcnow
from castway.storage.base import VOD_PLAYLIST
from castway.storage.local import LocalStorage
from tests.archiver.helpers import HlsRun, count_frames, probe_duration, publish

pytestmark = pytest.mark.peer


def local_path(ctx: tasks.ArchiveContext, key: str) -> str:
    assert isinstance(ctx.storage, LocalStorage)
    return str(ctx.storage.root / key)


def top_level_boxes(path: Path) -> list[str]:
    names: list[str] = []
    with path.open("rb") as f:
        while header := f.read(8):
            size, name = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
                f.seek(size - 16, 1)
            else:
                f.seek(size - 8, 1)
            names.append(name.decode())
    return names


async def test_the_vod_is_written_at_once_and_plays_every_published_frame(
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    run = two_runs[0]
    await publish("b1", [run], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    started = time.monotonic()
    vod = await tasks.make_vod(ctx, "b1")
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
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    vod = await tasks.make_vod(ctx, "b1")
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
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                  storage=ctx.storage, visibility=Visibility.PRIVATE)
    first = await tasks.make_vod(ctx, "b1")
    assert first is not None and first.visibility is Visibility.PRIVATE  # channel default
    text = ctx.storage.get(media_playlist_key("b1", "source"))
    ctx.catalog.save_vod(replace(first, visibility=Visibility.PUBLIC))  # the broadcaster
    again = await tasks.make_vod(ctx, "b1")
    assert again is not None and again.visibility is Visibility.PUBLIC
    assert again.created_at == first.created_at
    assert ctx.storage.get(media_playlist_key("b1", "source")) == text


async def test_an_unknown_broadcast_is_not_ready_and_an_empty_one_has_no_vod(
        ctx: tasks.ArchiveContext) -> None:
    with pytest.raises(tasks.NotReady):
        await tasks.make_vod(ctx, "nope")
    await publish("b2", [], live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    assert await tasks.make_vod(ctx, "b2") is None
    assert ctx.storage.get(master_key("b2")) is None
    # Ended with nothing to archive: the live state forgets it.
    assert await ctx.live.get_broadcast("b2") is None


async def test_a_live_broadcast_without_segments_yet_stays_in_the_live_state(
        ctx: tasks.ArchiveContext) -> None:
    published = await publish("b2", [], live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    live = replace(published.broadcast, state=BroadcastState.LIVE, ended_at=None)
    ctx.catalog.save_broadcast(live)
    await ctx.live.put_broadcast(live)
    assert await tasks.make_vod(ctx, "b2") is None
    assert await ctx.live.get_broadcast("b2") == live


async def test_a_vod_is_complete_only_when_every_segment_is_in_storage(
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    held_back = "broadcasts/b1/source/5.m4s"
    ctx.storage.delete(held_back)  # still on its way (spooled by an uploader)
    vod = await tasks.make_vod(ctx, "b1")
    assert vod is not None
    with pytest.raises(tasks.VodIncomplete) as caught:
        await tasks.verify_vod(ctx, "b1")
    assert caught.value.missing == (held_back,)
    result = await tasks.verify_vod(ctx, "b1", raise_incomplete=False)
    assert not result.complete
    stored = ctx.catalog.get_vod("b1")
    assert stored is not None and stored.state is VodState.PENDING

    ctx.storage.put(held_back, published.payloads[held_back][:-1])  # wrong size: not it
    with pytest.raises(tasks.VodIncomplete):
        await tasks.verify_vod(ctx, "b1")
    ctx.storage.put(held_back, published.payloads[held_back])
    result = await tasks.verify_vod(ctx, "b1")
    assert result.complete and result.checked == 9  # 7 segments + 2 init segments
    stored = ctx.catalog.get_vod("b1")
    assert stored is not None and stored.state is VodState.COMPLETE
    # The ended broadcast's segment log has served its purpose, and so has the rest of
    # what the live state held of it (else every broadcast ever run stays there).
    assert await ctx.live.segment_log("b1", "source") == []
    assert await ctx.live.get_broadcast("b1") is None
    assert "b1" not in [b.id for b in await ctx.live.list_broadcasts()]
    # ... and making the VOD again (a redelivered task) changes nothing.
    again = await tasks.make_vod(ctx, "b1")
    assert again is not None and again.state is VodState.COMPLETE


async def test_mp4_export_remuxes_every_frame_into_a_fast_start_file(
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun], tmp_path: Path) -> None:
    await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    await tasks.make_vod(ctx, "b1")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    vod = await tasks.export_mp4(ctx, "b1", workdir=scratch)
    assert vod.mp4_key == "broadcasts/b1/export.mp4" and vod.mp4_progress == 1.0
    saved = ctx.catalog.get_vod("b1")
    assert saved is not None and saved.mp4_key == vod.mp4_key
    info = ctx.storage.head(vod.mp4_key)
    assert info is not None and info.content_type == "video/mp4"
    path = Path(local_path(ctx, vod.mp4_key))
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat")  # fast start
    assert count_frames(str(path)) == sum(r.frames for r in two_runs)
    assert probe_duration(str(path)) == pytest.approx(7.0, abs=0.15)
    assert list(scratch.iterdir()) == []  # its scratch space is gone


async def test_export_of_a_missing_vod(ctx: tasks.ArchiveContext) -> None:
    with pytest.raises(tasks.VodNotFound):
        await tasks.export_mp4(ctx, "nope")


async def test_thumbnails_a_sprite_and_a_webvtt_track_from_keyframes(
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    await tasks.make_vod(ctx, "b1")
    assert await tasks.make_thumbnails(ctx, "b1", min_interval_s=2.0) == 4
    vtt = ctx.storage.get("broadcasts/b1/thumbs.vtt")
    assert vtt is not None
    text = vtt.decode()
    assert text.startswith("WEBVTT")
    assert "00:00:00.000 --> 00:00:02.000\nthumbs.jpg#xywh=0,0,160,90" in text
    assert "00:00:06.000 --> 00:00:07.000\nthumbs.jpg#xywh=480,0,160,90" in text
    sprite = ctx.storage.head("broadcasts/b1/thumbs.jpg")
    assert sprite is not None and sprite.content_type == "image/jpeg"
    sprite_bytes = ctx.storage.get("broadcasts/b1/thumbs.jpg")
    assert sprite_bytes is not None and sprite_bytes[:2] == b"\xff\xd8"
    poster = ctx.storage.get("broadcasts/b1/poster.jpg")
    assert poster is not None and poster[:2] == b"\xff\xd8"


def test_thumbnail_picks_follow_segment_boundaries() -> None:
    refs = [tasks.MediaRef(f"k{i}", None, 2.0, False) for i in range(10)]
    plan = tasks.plan_thumbnails(refs, min_interval_s=5.0)
    assert [(t, r.key) for t, r in plan.picks] == [(0.0, "k0"), (5.0, "k2"), (10.0, "k5"),
                                                    (15.0, "k7")]
    many = [tasks.MediaRef(f"k{i}", None, 2.0, False) for i in range(43_200)]  # 24 h
    big = tasks.plan_thumbnails(many)
    assert len(big.picks) <= tasks.MAX_THUMBS and big.interval_s == pytest.approx(96.0)


async def test_the_poster_of_a_live_broadcast_is_refreshed(
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    await ctx.live.put_broadcast(replace(published.broadcast, state=BroadcastState.LIVE))
    assert await tasks.make_poster(ctx, "b1")
    poster = ctx.storage.head("broadcasts/b1/poster.jpg")
    assert poster is not None and poster.cache_control == VOD_PLAYLIST
    assert not await tasks.make_poster(ctx, "unknown")


async def test_expiry_deletes_vods_past_retention_only(
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("old", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                  storage=ctx.storage)
    await publish("new", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                  storage=ctx.storage)
    for broadcast_id in ("old", "new"):
        await tasks.make_vod(ctx, broadcast_id)
    old = ctx.catalog.get_vod("old")
    assert old is not None
    now = utcnow()
    ctx.catalog.save_vod(replace(old, created_at=now - timedelta(days=8)))

    assert await tasks.expire_vods(ctx, now) == []  # no retention setting: keep forever
    retained = replace(ctx, settings=ctx.settings.model_copy(update={"vod_retention_days": 7}))
    assert await tasks.expire_vods(retained, now) == ["old"]
    assert ctx.catalog.get_vod("old") is None
    assert list(ctx.storage.list("broadcasts/old/")) == []
    assert ctx.catalog.get_vod("new") is not None
    assert ctx.storage.exists(master_key("new"))
    assert await tasks.expire_vods(retained, now) == []  # a repeated run is a no-op


def test_playlist_parsing_round_trips_what_make_vod_writes() -> None:
    text = ('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2.00000,\n0.m4s\n'
            '#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init.1.mp4"\n#EXTINF:1.50000,\n1.m4s\n'
            '#EXT-X-ENDLIST\n')
    refs = tasks.parse_media_playlist("broadcasts/b/source/vod.m3u8", text)
    assert refs == [
        tasks.MediaRef("broadcasts/b/source/0.m4s", "broadcasts/b/source/init.mp4", 2.0, False),
        tasks.MediaRef("broadcasts/b/source/1.m4s", "broadcasts/b/source/init.1.mp4", 1.5,
                       True)]
    assert tasks.referenced_keys("broadcasts/b/source/vod.m3u8", text) == [
        "broadcasts/b/source/init.mp4", "broadcasts/b/source/0.m4s",
        "broadcasts/b/source/init.1.mp4", "broadcasts/b/source/1.m4s"]


def test_vod_type_is_the_models() -> None:
    assert Vod.__dataclass_params__.frozen  # type: ignore[attr-defined]


async def test_logs_followed_while_live_are_completed_by_their_tail(
        ctx: tasks.ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    known = tasks.FollowedLogs()
    assert await tasks.follow_logs(ctx, "b1", known) == 7
    assert known.renditions == published.broadcast.renditions
    # The broadcast record ends up without its ladder (and the live record is gone): the
    # ladder seen while live still makes the master playlist.
    ctx.catalog.save_broadcast(replace(published.broadcast, renditions=()))
    await ctx.live.remove_broadcast("b1")
    vod = await tasks.make_vod(ctx, "b1", known=known)
    assert vod is not None and vod.duration_s == pytest.approx(7.0)
    master = ctx.storage.get(master_key("b1"))
    assert master is not None and b"source/vod.m3u8" in master
