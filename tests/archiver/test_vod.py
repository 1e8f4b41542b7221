"""VOD playlists from segment logs: pure functions, tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from archiver.vod import (
    normalize_log,
    plan_vod,
    relative_uri,
    render_vod_media_playlist,
    smallest_rendition,
    source_rendition,
    vod_window,
)
from castway.layout import master_key, media_playlist_key
from castway.model import Rendition, Segment
from tests.hls_validator import validate_playlist

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seg(msn: int, *, rendition: str = "source", duration: float = 2.0,
        discontinuity: bool = False, dseq: int = 0, init: str = "init.mp4",
        size: int = 100) -> Segment:
    prefix = f"broadcasts/b1/{rendition}"
    return Segment(msn=msn, duration_s=duration, key=f"{prefix}/{msn}.m4s",
                   start_pts_s=msn * 2.0, program_date_time=T0 + timedelta(seconds=2 * msn),
                   discontinuity=discontinuity, discontinuity_seq=dseq,
                   init_key=f"{prefix}/{init}", size=size)


def rend(name: str, width: int | None = None, height: int | None = None,
         bandwidth: int = 1_000_000) -> Rendition:
    return Rendition(name=name, width=width, height=height, fps=30.0, video_bitrate_kbps=None,
                     codecs="avc1.64001f,mp4a.40.2", bandwidth_bps=bandwidth)


@pytest.mark.parametrize(("from_key", "to_key", "uri"), [
    ("broadcasts/b1/source/vod.m3u8", "broadcasts/b1/source/12.m4s", "12.m4s"),
    ("broadcasts/b1/source/vod.m3u8", "broadcasts/b1/source/init.1.mp4", "init.1.mp4"),
    ("broadcasts/b1/master.m3u8", "broadcasts/b1/720p/vod.m3u8", "720p/vod.m3u8"),
    ("broadcasts/b1/source/vod.m3u8", "broadcasts/b1/shared/init.mp4", "../shared/init.mp4"),
])
def test_uris_are_relative_to_the_playlist(from_key: str, to_key: str, uri: str) -> None:
    assert relative_uri(from_key, to_key) == uri


def test_the_key_layout() -> None:
    assert master_key("b1") == "broadcasts/b1/master.m3u8"
    assert media_playlist_key("b1", "720p") == "broadcasts/b1/720p/vod.m3u8"


def test_the_log_is_ordered_and_a_repeated_segment_counted_once() -> None:
    log = [seg(0), seg(2), seg(1), seg(2, size=200)]
    assert [(s.msn, s.size) for s in normalize_log(log)] == [(0, 100), (1, 100), (2, 200)]


def test_a_vod_playlist_lists_every_segment_and_ends() -> None:
    text = render_vod_media_playlist("b1", "source", [seg(i) for i in range(5)],
                                     target_duration_s=2.0)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert [line for line in text.splitlines() if line.endswith(".m4s")] == \
        [f"{i}.m4s" for i in range(5)]
    assert '#EXT-X-MAP:URI="init.mp4"' in text
    assert validate_playlist(text) == []


def test_segments_from_before_a_reconnect_are_kept_behind_a_discontinuity() -> None:
    log = [seg(0), seg(1), seg(2, discontinuity=True, dseq=1, init="init.1.mp4"),
           seg(3, dseq=1, init="init.1.mp4")]
    text = render_vod_media_playlist("b1", "source", log, target_duration_s=2.0)
    lines = text.splitlines()
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    at = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[at + 1] == '#EXT-X-MAP:URI="init.1.mp4"'
    assert lines.index("1.m4s") < at < lines.index("2.m4s")
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0" in lines
    assert validate_playlist(text) == []


def test_a_log_starting_after_a_discontinuity_needs_no_tag_there() -> None:
    window = vod_window([seg(7, discontinuity=True, dseq=3), seg(8, dseq=3)],
                        target_duration_s=2.0)
    assert window.discontinuity_seq == 3
    assert not window.segments[0].discontinuity
    assert window.ended and window.next_msn == 9


def test_long_segments_raise_the_target_duration() -> None:
    text = render_vod_media_playlist("b1", "source", [seg(0, duration=4.6), seg(1)],
                                     target_duration_s=2.0)
    assert "#EXT-X-TARGETDURATION:5" in text


def test_a_plan_covers_every_rendition_with_segments_and_the_master_last() -> None:
    renditions = [rend("source", 1280, 720, 3_000_000), rend("360p", 640, 360, 800_000),
                  rend("audio_only")]
    logs = {"source": [seg(i) for i in range(3)],
            "360p": [seg(i, rendition="360p") for i in range(3)],
            "unlisted": [seg(0, rendition="unlisted")]}
    plan = plan_vod("b1", renditions, logs, target_duration_s=2.0)
    assert plan.renditions == ("source", "360p")
    assert [k for k, _ in plan.playlists] == [
        "broadcasts/b1/source/vod.m3u8", "broadcasts/b1/360p/vod.m3u8",
        "broadcasts/b1/master.m3u8"]
    master = plan.playlists[-1][1]
    uris = [line for line in master.splitlines() if line and not line.startswith("#")]
    assert uris[0] == "source/vod.m3u8"  # the first rendition leads
    assert "360p/vod.m3u8" in master and "audio_only" not in master
    assert plan.segments == 6 and plan.duration_s == 6.0


def test_a_broadcast_without_segments_plans_nothing() -> None:
    plan = plan_vod("b1", [rend("source")], {"source": []}, target_duration_s=2.0)
    assert plan.empty and plan.playlists == ()


def test_which_rendition_exports_and_which_makes_thumbnails() -> None:
    ladder = [rend("720p", 1280, 720), rend("source", 1920, 1080), rend("360p", 640, 360)]
    assert source_rendition(ladder) == ladder[1]
    assert source_rendition(ladder[:1] + ladder[2:]) == ladder[0]
    assert smallest_rendition(ladder) == ladder[2]
    assert source_rendition([]) is None and smallest_rendition([]) is None
