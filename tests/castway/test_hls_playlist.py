"""castway.hls.playlist: master and media playlists (RFC 8216, rfc8216bis LL-HLS)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import m3u8
import pytest

from archiver.vod import render_vod_master_playlist
from castway.hls.playlist import (
    PlaylistType,
    RenditionReport,
    last_part,
    render_master_playlist,
    render_media_playlist,
    rendition_report,
    target_duration,
)
from castway.hls.timing import round_duration
from castway.live.base import RenditionWindow
from castway.model import Part, Rendition, Segment
from tests.hls_validator import validate_playlist

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
INIT = "broadcasts/b1/720p/init.mp4"


def uri(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def parts_of(msn: int, durations: list[float]) -> tuple[Part, ...]:
    return tuple(Part(msn=msn, index=i, duration_s=d, independent=(i == 0),
                      key=f"broadcasts/b1/720p/{msn}.{i}.m4s")
                 for i, d in enumerate(durations))


def make_window(durations: list[float], *, first_msn: int = 100, parts_per_segment: int = 4,
                live_parts: int = 2, init: str | None = INIT, ended: bool = False,
                discontinuity_at: int | None = None, new_init: str | None = None,
                target: float = 2.0, part_target: float = 0.5) -> RenditionWindow:
    segments = []
    start = 0.0
    disc_seq = 0
    current_init = init
    for i, d in enumerate(durations):
        msn = first_msn + i
        disc = discontinuity_at == i
        if disc:
            disc_seq += 1
            current_init = new_init or current_init
        ext = "m4s" if init else "ts"
        segments.append(Segment(
            msn=msn, duration_s=d, key=f"broadcasts/b1/720p/{msn}.{ext}", start_pts_s=start,
            program_date_time=T0 + timedelta(seconds=start), discontinuity=disc,
            discontinuity_seq=disc_seq, init_key=current_init,
            parts=parts_of(msn, [d / parts_per_segment] * parts_per_segment) if init else ()))
        start += d
    next_msn = first_msn + len(durations)
    progress = parts_of(next_msn, [part_target] * live_parts) if init and not ended else ()
    hint = (f"broadcasts/b1/720p/{next_msn}.{live_parts}.m4s" if init and not ended else None)
    return RenditionWindow(segments=tuple(segments), next_msn=next_msn, parts=progress,
                           preload_hint=hint, target_duration_s=target,
                           part_target_s=part_target, init_key=current_init, ended=ended)


# --- target duration -----------------------------------------------------------------

@pytest.mark.parametrize(("value", "rounded"), [(2.0, 2), (2.4999, 2), (2.5, 3), (3.5, 4),
                                                (0.2, 0), (1.5, 2)])
def test_round_duration_rounds_half_up(value: float, rounded: int) -> None:
    assert round_duration(value) == rounded


@pytest.mark.parametrize(("durations", "target", "expected"), [
    ([2.0, 2.0, 2.0], 2.0, 2),
    ([2.0, 2.4, 2.0], 2.0, 2),   # 2.4 rounds to 2: fits
    ([2.0, 2.5, 2.0], 2.0, 3),   # 2.5 rounds to 3: the target must grow
    ([4.1, 1.0], 2.0, 4),
    ([], 2.0, 2),
    ([0.3], 0.4, 1),             # never below 1
    ([6.0], 6.0, 6),
])
def test_target_duration_is_max_rounded_extinf(durations: list[float], target: float,
                                               expected: int) -> None:
    window = make_window(durations, target=target, init=None)
    assert target_duration(window) == expected
    text = render_media_playlist(window, uri_for_key=uri)
    assert f"#EXT-X-TARGETDURATION:{expected}\n" in text
    assert validate_playlist(text) == []


# --- master playlist -------------------------------------------------------------------

LADDER = (
    Rendition("source", 1280, 720, 29.97, None, "avc1.64001f,mp4a.40.2", 3_100_000, 2_600_000),
    Rendition("360p", 640, 360, 30.0, 800.0, "avc1.4d401e,mp4a.40.2"),
    Rendition("540p", 960, 540, 30.0, 1800.0, "avc1.4d401f,mp4a.40.2", 2_300_000, 1_900_000),
)


def test_master_playlist_lists_every_rendition_by_ascending_bandwidth() -> None:
    text = render_master_playlist(LADDER, uri_for=lambda r: f"{r.name}/index.m3u8")
    assert text.startswith("#EXTM3U\n")
    # each media playlist says whether its segments are independent, not the master
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in text
    assert validate_playlist(text) == []
    parsed = m3u8.loads(text)
    assert parsed.is_variant
    assert [p.uri for p in parsed.playlists] == ["360p/index.m3u8", "540p/index.m3u8",
                                                 "source/index.m3u8"]
    source = parsed.playlists[2].stream_info
    assert source.bandwidth == 3_100_000
    assert source.average_bandwidth == 2_600_000
    assert source.resolution == (1280, 720)
    assert source.codecs == "avc1.64001f,mp4a.40.2"
    assert "FRAME-RATE=29.970" in text


def test_master_playlist_estimates_bandwidth_from_the_nominal_bitrate() -> None:
    text = render_master_playlist(LADDER[1:2], uri_for=lambda r: "a.m3u8")
    info = m3u8.loads(text).playlists[0].stream_info
    assert info.bandwidth == int((800_000 + 128_000) * 1.2)
    assert info.average_bandwidth == 928_000


def test_master_playlist_puts_the_preferred_rendition_first() -> None:
    text = render_master_playlist(LADDER, uri_for=lambda r: r.name, first="540p")
    assert [p.uri for p in m3u8.loads(text).playlists] == ["540p", "360p", "source"]


VIDEO_ONLY = tuple(replace(r, codecs=r.codecs.split(",")[0]) for r in LADDER)
AUDIO = (Rendition("audio-t1", None, None, None, None, "mp4a.40.5", 70_000, 64_000,
                   track=1, alternate_audio=True, channels=1),
         Rendition("audio-t0", None, None, None, None, "mp4a.40.2", 150_000, 130_000,
                   track=0, alternate_audio=True, channels=2))


def test_audio_renditions_make_an_audio_group_every_variant_names() -> None:
    text = render_master_playlist((*VIDEO_ONLY, *AUDIO), uri_for=lambda r: f"{r.name}/i.m3u8")
    assert validate_playlist(text) == []
    parsed = m3u8.loads(text)
    # Not variants: a player would switch video to them.
    assert [p.uri for p in parsed.playlists] == ["360p/i.m3u8", "540p/i.m3u8", "source/i.m3u8"]
    main, other = parsed.media
    # The broadcast's own audio (track 0) is the default, whatever order they came in.
    assert (main.type, main.group_id, main.name, main.default, main.autoselect, main.uri) == \
        ("AUDIO", "audio", "Main", "YES", "YES", "audio-t0/i.m3u8")
    assert (other.name, other.default, other.autoselect, other.uri) == \
        ("Track 1", "NO", "NO", "audio-t1/i.m3u8")
    assert (main.channels, other.channels) == ("2", "1")
    source = parsed.playlists[2].stream_info
    assert source.audio == "audio"
    # The largest combination a player may fetch, and every format of it.
    assert (source.bandwidth, source.average_bandwidth) == (3_250_000, 2_730_000)
    assert source.codecs == "avc1.64001f,mp4a.40.2,mp4a.40.5"


def test_an_audio_rendition_is_never_the_first_variant() -> None:
    text = render_vod_master_playlist("b1", (*AUDIO, *VIDEO_ONLY))
    assert m3u8.loads(text).playlists[0].uri.startswith("source/")


def test_without_audio_renditions_the_master_has_no_audio_group() -> None:
    text = render_master_playlist(LADDER, uri_for=lambda r: r.name)
    assert "#EXT-X-MEDIA" not in text and "AUDIO=" not in text


def test_master_playlist_without_a_measured_or_nominal_bitrate_still_has_bandwidth() -> None:
    bare = Rendition("source", None, None, None, None)
    text = render_master_playlist([bare], uri_for=lambda r: "s.m3u8")
    assert "BANDWIDTH=" in text and "RESOLUTION" not in text and "CODECS" not in text
    assert validate_playlist(text) == []


def test_quote_characters_are_refused_not_emitted() -> None:
    bad = Rendition("x", 1, 1, 1.0, 1.0, codecs='avc1"')
    with pytest.raises(ValueError):
        render_master_playlist([bad], uri_for=lambda r: "x")


# --- media playlists ---------------------------------------------------------------------

def test_live_playlist_has_sequence_map_pdt_and_precise_extinf() -> None:
    window = make_window([2.0, 2.002, 1.998])
    text = render_media_playlist(window, uri_for_key=uri)
    assert validate_playlist(text) == []
    assert "#EXT-X-VERSION:6\n" in text  # EXT-X-MAP
    assert "#EXT-X-MEDIA-SEQUENCE:100\n" in text
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0\n" in text
    assert text.count("#EXT-X-MAP:") == 1
    assert "#EXTINF:2.00200," in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-01-02T03:04:05.678Z" in text
    assert "#EXT-X-PART" not in text and "ENDLIST" not in text and "PLAYLIST-TYPE" not in text
    parsed = m3u8.loads(text)
    assert parsed.media_sequence == 100
    assert [s.uri for s in parsed.segments] == ["100.m4s", "101.m4s", "102.m4s"]
    assert parsed.segments[0].init_section.uri == "init.mp4"
    assert all(s.program_date_time is not None for s in parsed.segments)
    assert parsed.segments[1].duration == pytest.approx(2.002)


def test_mpegts_playlist_needs_no_map_and_only_version_3() -> None:
    text = render_media_playlist(make_window([2.0, 2.0], init=None), uri_for_key=uri)
    assert "#EXT-X-VERSION:3\n" in text and "EXT-X-MAP" not in text
    assert validate_playlist(text) == []


@pytest.mark.parametrize(("new_init", "maps"), [(None, 1), ("broadcasts/b1/720p/init-2.mp4", 2)])
def test_discontinuity_reemits_the_map_only_when_the_init_changes(new_init: str | None,
                                                                   maps: int) -> None:
    window = make_window([2.0, 2.0, 2.0, 2.0], discontinuity_at=2, new_init=new_init)
    text = render_media_playlist(window, uri_for_key=uri)
    assert validate_playlist(text) == []
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert text.count("#EXT-X-MAP:") == maps
    parsed = m3u8.loads(text)
    assert [s.discontinuity for s in parsed.segments] == [False, False, True, False]
    if new_init:
        assert parsed.segments[2].init_section.uri == "init-2.mp4"


def test_discontinuity_sequence_comes_from_the_window() -> None:
    window = make_window([2.0])
    window = RenditionWindow(segments=window.segments, next_msn=window.next_msn,
                             init_key=INIT, discontinuity_seq=7)
    text = render_media_playlist(window, uri_for_key=uri)
    assert m3u8.loads(text).discontinuity_sequence == 7


@pytest.mark.parametrize(("playlist_type", "ended", "type_tag", "endlist"), [
    (PlaylistType.LIVE, False, None, False),
    (PlaylistType.LIVE, True, None, True),
    (PlaylistType.EVENT, False, "EVENT", False),
    (PlaylistType.EVENT, True, "EVENT", True),
    (PlaylistType.VOD, False, "VOD", True),  # VOD always ends
    (PlaylistType.VOD, True, "VOD", True),
])
def test_playlist_type_and_endlist(playlist_type: PlaylistType, ended: bool,
                                   type_tag: str | None, endlist: bool) -> None:
    window = make_window([2.0, 2.0], ended=ended)
    text = render_media_playlist(window, uri_for_key=uri, playlist_type=playlist_type,
                                 low_latency=True)
    assert validate_playlist(text) == []
    parsed = m3u8.loads(text)
    assert parsed.playlist_type == (type_tag.lower() if type_tag else None)
    assert parsed.is_endlist is endlist
    assert text.rstrip().endswith("#EXT-X-ENDLIST") is endlist
    if endlist:  # nothing in progress is advertised once the playlist is over
        assert "PRELOAD-HINT" not in text and "SERVER-CONTROL" not in text


# --- LL-HLS ------------------------------------------------------------------------------

def test_low_latency_playlist_has_server_control_parts_and_hint() -> None:
    window = make_window([2.0] * 6)
    text = render_media_playlist(window, uri_for_key=uri, low_latency=True)
    assert validate_playlist(text) == []
    assert ("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,"
            "HOLD-BACK=6.000,PART-HOLD-BACK=1.500\n") in text
    assert "#EXT-X-PART-INF:PART-TARGET=0.50000\n" in text
    parsed = m3u8.loads(text)
    assert parsed.server_control.can_block_reload == "YES"
    assert parsed.part_inf.part_target == 0.5
    # Parts only for the segments that start within 3 target durations of the end:
    # the in-progress segment holds 1.0 s, so segments 104 and 105 (start 3.0/5.0 s
    # before the edge) keep theirs, 103 (7.0 s) does not.
    with_parts = [s.uri for s in parsed.segments if s.parts and s.uri]
    assert with_parts == ["104.m4s", "105.m4s"]
    assert "106.0.m4s" in text and "106.1.m4s" in text
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="106.2.m4s"\n' in text
    assert '#EXT-X-PART:DURATION=0.50000,URI="104.0.m4s",INDEPENDENT=YES\n' in text
    assert '#EXT-X-PART:DURATION=0.50000,URI="104.1.m4s"\n' in text
    assert parsed.preload_hint.uri == "106.2.m4s"


def test_hold_backs_honour_requested_values_but_never_go_below_the_spec() -> None:
    window = make_window([2.0] * 3)
    text = render_media_playlist(window, uri_for_key=uri, low_latency=True,
                                 hold_back_s=1.0, part_hold_back_s=2.5)
    assert "HOLD-BACK=6.000" in text and "PART-HOLD-BACK=2.500" in text


def test_part_target_grows_to_the_longest_part() -> None:
    window = make_window([2.0, 2.0], parts_per_segment=2)  # 1.0 s parts
    text = render_media_playlist(window, uri_for_key=uri, low_latency=True)
    assert "#EXT-X-PART-INF:PART-TARGET=1.00000\n" in text
    assert "PART-HOLD-BACK=3.000" in text
    assert validate_playlist(text) == []


def test_rendition_reports_follow_the_parts() -> None:
    window = make_window([2.0] * 3)
    other = make_window([2.0] * 3, live_parts=0)
    reports = [rendition_report(other, "../360p/index.m3u8"),
               RenditionReport("../source/index.m3u8", 102, None)]
    text = render_media_playlist(window, uri_for_key=uri, low_latency=True,
                                 rendition_reports=reports)
    assert validate_playlist(text) == []
    assert ('#EXT-X-RENDITION-REPORT:URI="../360p/index.m3u8",LAST-MSN=102,LAST-PART=3\n'
            in text)
    assert '#EXT-X-RENDITION-REPORT:URI="../source/index.m3u8",LAST-MSN=102\n' in text
    assert len(m3u8.loads(text).rendition_reports) == 2


@pytest.mark.parametrize(("live_parts", "expected"), [(0, (102, 3)), (1, (103, 0)),
                                                      (3, (103, 2))])
def test_last_part(live_parts: int, expected: tuple[int, int]) -> None:
    assert last_part(make_window([2.0] * 3, live_parts=live_parts)) == expected


def test_last_part_of_an_empty_window() -> None:
    assert last_part(RenditionWindow(segments=(), next_msn=5)) == (4, None)


def test_rendition_reports_are_not_emitted_without_low_latency() -> None:
    text = render_media_playlist(make_window([2.0]), uri_for_key=uri,
                                 rendition_reports=[RenditionReport("x", 1, 1)])
    assert "RENDITION-REPORT" not in text and "PART" not in text


@pytest.mark.parametrize(("count", "skipped"), [(3, 0), (6, 0), (7, 1), (12, 6), (20, 14)])
def test_delta_update_skips_segments_older_than_the_skip_boundary(count: int,
                                                                  skipped: int) -> None:
    window = make_window([2.0] * count)  # edge = 2 * count + 1.0 (two live parts)
    full = render_media_playlist(window, uri_for_key=uri, low_latency=True)
    delta = render_media_playlist(window, uri_for_key=uri, low_latency=True, skip=True)
    assert validate_playlist(delta) == []
    if skipped == 0:
        assert delta == full
        return
    assert f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}\n" in delta
    assert "#EXT-X-VERSION:9\n" in delta
    parsed = m3u8.loads(delta)
    assert parsed.media_sequence == 100  # MEDIA-SEQUENCE stays that of the full playlist
    assert parsed.skip.skipped_segments == skipped
    listed = [s for s in parsed.segments if s.uri]  # m3u8 lists trailing parts as a segment
    assert len(listed) == count - skipped
    # What remains after the skip covers at least CAN-SKIP-UNTIL (12 s).
    assert sum(s.duration for s in listed) + 1.0 >= 12.0
    assert listed[0].init_section is not None  # the map is repeated
    # Apart from the repeated map, the full playlist ends exactly like the delta update.
    tail = delta.split(f"SKIPPED-SEGMENTS={skipped}\n", 1)[1]
    assert full.endswith(tail.removeprefix('#EXT-X-MAP:URI="init.mp4"\n'))


def test_no_skip_without_low_latency_or_when_skipping_is_not_offered() -> None:
    window = make_window([2.0] * 20)
    for text in (render_media_playlist(window, uri_for_key=uri, skip=True),
                 render_media_playlist(window, uri_for_key=uri, low_latency=True, skip=True,
                                       can_skip=False)):
        assert "EXT-X-SKIP" not in text and "CAN-SKIP-UNTIL" not in text


def test_an_empty_live_window_renders_only_the_segment_in_progress() -> None:
    window = RenditionWindow(segments=(), next_msn=0, parts=parts_of(0, [0.5]),
                             preload_hint="broadcasts/b1/720p/0.1.m4s", init_key=INIT)
    text = render_media_playlist(window, uri_for_key=uri, low_latency=True)
    assert "#EXT-X-MEDIA-SEQUENCE:0\n" in text
    assert '#EXT-X-MAP:URI="init.mp4"\n#EXT-X-PART:DURATION=0.50000,URI="0.0.m4s"' in text
    assert validate_playlist(text) == []


def test_naive_program_date_time_is_taken_as_utc() -> None:
    window = make_window([2.0], init=None)
    seg = window.segments[0]
    naive = Segment(msn=seg.msn, duration_s=2.0, key=seg.key, start_pts_s=0.0,
                    program_date_time=datetime(2026, 1, 1, 0, 0, 0))
    window = RenditionWindow(segments=(naive,), next_msn=101)
    text = render_media_playlist(window, uri_for_key=uri)
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n" in text


def test_vod_playlist_of_a_long_broadcast() -> None:
    window = make_window([2.0] * 500, ended=True, first_msn=0)
    text = render_media_playlist(window, uri_for_key=uri, playlist_type=PlaylistType.VOD)
    assert validate_playlist(text) == []
    parsed = m3u8.loads(text)
    assert len(parsed.segments) == 500 and parsed.is_endlist
    assert "#EXT-X-PART" not in text


def test_a_media_playlist_claims_independent_segments_only_when_every_one_is() -> None:
    window = make_window([2.0, 2.0, 2.0])
    assert "#EXT-X-INDEPENDENT-SEGMENTS\n" in render_media_playlist(window, uri_for_key=uri)
    # a passthrough segment split without a keyframe (docs/transcoder.md)
    split = window.segments[1]
    parts = (replace(split.parts[0], independent=False), *split.parts[1:])
    segments = (window.segments[0], replace(split, parts=parts), window.segments[2])
    text = render_media_playlist(replace(window, segments=segments), uri_for_key=uri,
                                 low_latency=True)
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in text
    assert validate_playlist(text) == []
