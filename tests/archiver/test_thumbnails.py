"""Thumbnail sprites and WebVTT tracks from the keyframes of real fMP4 segments, and the
choice of which keyframes."""

from __future__ import annotations

import pytest

from archiver.context import ArchiveContext
from archiver.instant_vod import make_vod
from archiver.stored_vod import MediaRef
from archiver.thumbnails import MAX_THUMBS, make_thumbnails, plan_thumbnails
from tests.archiver.helpers import HlsRun, publish

pytestmark = pytest.mark.peer


async def test_thumbnails_a_sprite_and_a_webvtt_track_from_keyframes(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    await make_vod(ctx, "b1")
    assert await make_thumbnails(ctx, "b1", min_interval_s=2.0) == 4
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
    refs = [MediaRef(f"k{i}", None, 2.0, False) for i in range(10)]
    plan = plan_thumbnails(refs, min_interval_s=5.0)
    assert [(t, r.key) for t, r in plan.picks] == [(0.0, "k0"), (5.0, "k2"), (10.0, "k5"),
                                                    (15.0, "k7")]
    many = [MediaRef(f"k{i}", None, 2.0, False) for i in range(43_200)]  # 24 h
    big = plan_thumbnails(many)
    assert len(big.picks) <= MAX_THUMBS and big.interval_s == pytest.approx(96.0)
