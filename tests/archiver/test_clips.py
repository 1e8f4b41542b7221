"""archiver.clips: which segments a clip takes, and its playlists over its source's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from archiver.clips import ClipError, ClipRange, choose_segments, plan_clip
from archiver.stored_vod import parse_media_playlist, rebase_media_key, stored_segments
from archiver.vod import render_vod_media_playlist
from castway.model import Rendition, Segment

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def log(rendition: str, durations: list[float], *, first_msn: int = 0) -> list[Segment]:
    segments = []
    at = 0.0
    for i, d in enumerate(durations):
        msn = first_msn + i
        segments.append(Segment(msn=msn, duration_s=d, key=f"broadcasts/b1/{rendition}/{msn}.m4s",
                                start_pts_s=at, program_date_time=T0 + timedelta(seconds=at),
                                init_key=f"broadcasts/b1/{rendition}/init.mp4"))
        at += d
    return segments


@pytest.mark.parametrize(("durations", "wanted", "expected"), [
    # the last N seconds: the count of last segments nearest N, at least one
    ([2.0] * 20, ClipRange(last_s=30.0), (5, 19)),
    ([2.0] * 20, ClipRange(last_s=31.0), (5, 19)),  # 30 is as near as 32: fewer wins
    ([2.0] * 20, ClipRange(last_s=0.5), (19, 19)),
    ([2.0] * 5, ClipRange(last_s=30.0), (0, 4)),  # shorter than asked: all of it
    # a range: the segments whose middle is in it
    ([2.0] * 20, ClipRange(start_s=10.0, end_s=20.0), (5, 9)),
    ([2.0] * 20, ClipRange(start_s=9.5, end_s=20.5), (5, 9)),
    ([2.0] * 20, ClipRange(start_s=100.0, end_s=120.0), None),
])
def test_choose_segments(durations: list[float], wanted: ClipRange,
                         expected: tuple[int, int] | None) -> None:
    assert choose_segments(log("source", durations), wanted) == expected


@pytest.mark.parametrize("kwargs", [
    {}, {"last_s": 0.0}, {"last_s": 10.0, "start_s": 0.0}, {"start_s": 5.0},
    {"start_s": 5.0, "end_s": 5.0}, {"start_s": 0.0, "end_s": 7200.0},
])
def test_a_range_must_say_one_thing(kwargs: dict[str, float]) -> None:
    with pytest.raises(ClipError):
        ClipRange(**kwargs)


def test_a_clips_playlists_are_its_own_and_name_its_sources_segments() -> None:
    renditions = (Rendition("source", 320, 180, 30.0, None),
                  Rendition("90p", 160, 90, 30.0, 100.0))
    logs = {"source": log("source", [1.0] * 40), "90p": log("90p", [1.0] * 40)}
    plan = plan_clip("c1", "b1", renditions, logs, ClipRange(last_s=30.0),
                     target_duration_s=1.0)
    keys = [key for key, _ in plan.playlists]
    assert keys == ["broadcasts/c1/source/vod.m3u8", "broadcasts/c1/90p/vod.m3u8",
                    "broadcasts/c1/master.m3u8"]
    assert plan.duration_s == pytest.approx(30.0) and plan.segments == 60
    media = dict(plan.playlists)["broadcasts/c1/source/vod.m3u8"]
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in media and "#EXT-X-ENDLIST" in media
    refs = parse_media_playlist("broadcasts/c1/source/vod.m3u8", media)
    assert [r.key for r in refs][0] == "broadcasts/c1/source/10.m4s"  # as the origin sees
    # ...which is the source's object.
    assert rebase_media_key(refs[0].key, "c1", "b1") == "broadcasts/b1/source/10.m4s"
    assert rebase_media_key(refs[0].init_key or "", "c1", "b1") == \
        "broadcasts/b1/source/init.mp4"


def test_an_ended_broadcast_is_clipped_from_its_stored_vod_playlist() -> None:
    source = log("source", [2.0] * 10, first_msn=3)
    text = render_vod_media_playlist("b1", "source", source, target_duration_s=2.0)
    back = stored_segments("broadcasts/b1/source/vod.m3u8", text)
    assert [s.msn for s in back] == [s.msn for s in source]
    assert [s.key for s in back] == [s.key for s in source]
    assert [s.program_date_time for s in back] == [s.program_date_time for s in source]
    assert choose_segments(back, ClipRange(start_s=4.0, end_s=10.0)) == (5, 7)
