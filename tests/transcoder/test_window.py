from __future__ import annotations

from datetime import UTC, datetime, timedelta

from castway.hls.playlist import PlaylistType, render_media_playlist
from castway.hls.timing import target_duration_of as target_duration
from castway.layout import init_generation, init_key
from tests.hls_validator import validate_playlist
from transcoder.window import RenditionLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _segment(log: RenditionLog, start: float, duration: float = 2.0, parts: int = 4) -> None:
    for i in range(parts):
        log.add_part(i, duration / parts, independent=i == 0)
    log.add_segment(duration, start, 1000, T0)


def test_keys_follow_the_storage_layout() -> None:
    log = RenditionLog("broadcasts/b1", "720p")
    key, new = log.set_init(b"init")
    assert (key, new) == ("broadcasts/b1/720p/init.mp4", True)
    assert log.set_init(b"init") == (key, False)
    part = log.add_part(0, 0.5, True)
    assert part.key == "broadcasts/b1/720p/0.0.m4s"
    segment = log.add_segment(0.5, 0.0, 10, T0)
    assert segment.key == "broadcasts/b1/720p/0.m4s"
    assert segment.init_key == key and segment.parts == (part,)
    # A changed init segment gets a new key; the old one stays valid for old segments.
    assert log.set_init(b"other") == ("broadcasts/b1/720p/init.1.mp4", True)


def test_sliding_window_and_preload_hint() -> None:
    log = RenditionLog("p", "source", window_segments=3)
    for n in range(5):
        _segment(log, 2.0 * n)
    log.add_part(0, 0.5, True)
    window = log.window()
    assert [s.msn for s in window.segments] == [2, 3, 4]
    assert window.next_msn == 5
    assert [p.key for p in window.parts] == ["p/source/5.0.m4s"]
    assert window.preload_hint == "p/source/5.1.m4s"
    assert window.target_duration_s == 2.0


def test_program_date_time_follows_pts_and_reanchors_after_a_break() -> None:
    log = RenditionLog("p", "source")
    log.add_segment(2.0, 10.0, 1, T0)
    assert log.add_segment(2.0, 12.0, 1, T0 + timedelta(hours=1)).program_date_time == \
        T0 + timedelta(seconds=2)
    log.mark_discontinuity()
    later = T0 + timedelta(seconds=30)
    seg = log.add_segment(2.0, 0.0, 1, later)
    assert seg.program_date_time == later and seg.discontinuity


def test_discontinuity_sequence_counts_breaks_that_slid_out() -> None:
    log = RenditionLog("p", "r", window_segments=3)
    _segment(log, 0.0)
    log.mark_discontinuity()
    _segment(log, 0.0)  # msn 1, after a break
    assert log.window().discontinuity_seq == 0
    assert [s.discontinuity for s in log.window().segments] == [False, True]
    _segment(log, 2.0)
    _segment(log, 4.0)  # msn 3: the break is now the first segment of the window
    window = log.window()
    assert [s.msn for s in window.segments] == [1, 2, 3]
    assert window.discontinuity_seq == 0
    _segment(log, 6.0)  # the tagged segment slid out
    window = log.window()
    assert window.discontinuity_seq == 1
    assert all(not s.discontinuity for s in window.segments)


def test_sequence_numbers_continue_from_a_start_value() -> None:
    log = RenditionLog("p", "r", start_msn=41)
    log.mark_discontinuity()
    _segment(log, 0.0)
    assert log.window().segments[0].msn == 41
    assert log.window().segments[0].discontinuity


def test_measured_bandwidth() -> None:
    log = RenditionLog("p", "r")
    log.add_segment(2.0, 0.0, 250_000, T0)  # 1 Mb/s
    log.add_segment(1.0, 2.0, 250_000, T0)  # 2 Mb/s
    assert log.peak_bps == 2_000_000
    assert log.average_bps == 1_333_333


def test_a_short_segment_alone_does_not_set_the_peak() -> None:
    """rfc8216bis 4.4.6.2: BANDWIDTH is the peak over runs of 0.5 to 1.5 target
    durations; a 0.2 s segment (a keyframe-drought split's tail) holding an IDR is
    measured together with the segment before it, not alone (10 Mb/s)."""
    log = RenditionLog("p", "r", target_segment_s=2.0)
    log.add_segment(2.0, 0.0, 250_000, T0)  # 1 Mb/s
    log.add_segment(0.2, 2.0, 250_000, T0)  # 10 Mb/s alone
    assert log.peak_bps == 1_818_182  # both: 4 Mb over 2.2 s
    for n in range(3):
        log.add_segment(2.0, 2.2 + 2 * n, 250_000, T0)
    assert log.peak_bps == 1_818_182


def test_the_window_never_holds_less_than_three_target_durations() -> None:
    """rfc8216bis 6.2.2: short segments keep more of them in the window."""
    log = RenditionLog("p", "r", window_segments=3, target_segment_s=2.0)
    for n in range(20):
        log.add_segment(0.5, 0.5 * n, 1000, T0)
    window = log.window()
    assert sum(s.duration_s for s in window.segments) == 6.0
    assert [s.msn for s in window.segments] == list(range(8, 20))


def test_target_duration_rounds_half_up() -> None:
    assert target_duration([2.0, 2.4], 2.0) == 2
    assert target_duration([2.5], 2.0) == 3
    assert target_duration([0.5], 0.5) == 1


def test_live_and_vod_playlists_of_a_window_are_valid() -> None:
    log = RenditionLog("p", "r", window_segments=3)
    log.set_init(b"x")
    for n in range(4):
        _segment(log, 2.0 * n)
    log.mark_discontinuity()
    _segment(log, 0.0, duration=2.4)
    log.add_part(0, 0.5, True)
    live = render_media_playlist(log.window(), uri_for_key=lambda k: k, low_latency=True)
    assert validate_playlist(live) == []
    log.end()
    vod = render_media_playlist(log.window(), uri_for_key=lambda k: k,
                                playlist_type=PlaylistType.VOD)
    assert validate_playlist(vod) == []
    assert vod.rstrip().endswith("#EXT-X-ENDLIST")


def test_init_generation_reads_init_keys() -> None:
    assert init_generation(init_key("b", "720p", 0)) == 0
    assert init_generation(init_key("b", "720p", 12)) == 12
    assert init_generation("broadcasts/b/720p/3.m4s") is None
    assert init_generation("broadcasts/b/720p/init.x.mp4") is None


def test_another_node_continues_a_window_where_it_stands() -> None:
    """A cross-node handover: the new node's log goes on from the old node's window."""
    old = RenditionLog("p", "source", window_segments=3)
    old.set_init(b"init")
    _segment(old, 0.0)
    old.mark_discontinuity()
    old.set_init(b"init-after-a-restart")  # generation 1
    for n in range(3):
        _segment(old, 2.0 * n, duration=3.2 if n == 0 else 2.0)
    window = old.window()
    assert window.next_msn == 4 and window.target_duration_s == 3.0

    new = RenditionLog("p", "source", window_segments=3, target_segment_s=2.0)
    new.continue_from(window, peak_bps=9000, average_bps=4000)
    new.mark_discontinuity()
    assert new.window().segments == window.segments  # the same playlist until new media
    # Same encoder output or not, the new node's init segment gets a key never used.
    key, fresh = new.set_init(b"init-after-a-restart")
    assert (key, fresh) == ("p/source/init.2.mp4", True)
    part = new.add_part(0, 0.5, True)
    assert part.key == window.preload_hint == "p/source/4.0.m4s"
    seg = new.add_segment(0.5, 0.0, 10, T0)  # the new node's clock says T0: too early
    assert seg.msn == 4 and seg.discontinuity and seg.discontinuity_seq == 2
    assert seg.init_key == key
    last = window.segments[-1]
    assert seg.program_date_time == last.program_date_time + timedelta(seconds=last.duration_s)
    after = new.window()
    assert [s.msn for s in after.segments] == [0, 1, 2, 3, 4]  # 3 x 3 s at least
    assert (window.discontinuity_seq, after.discontinuity_seq) == (0, 0)  # none slid out
    assert after.target_duration_s == 3.0  # never shrinks
    assert new.peak_bps == 9000 and new.average_bps > 0
    text = render_media_playlist(after, uri_for_key=lambda k: k)
    assert validate_playlist(text) == []


def test_a_rendition_joining_after_a_break_is_numbered_and_counted_as_the_others() -> None:
    leader = RenditionLog("b", "source")
    for i in range(3):
        _segment(leader, 2.0 * i)
    leader.mark_discontinuity()
    joined = RenditionLog("b", "288p")
    joined.join(leader)
    a, b = leader.add_segment(2.0, 0.0, 1000, T0), joined.add_segment(2.0, 0.0, 1000, T0)
    assert (a.msn, a.discontinuity_seq, a.discontinuity) == (3, 1, True)
    assert (b.msn, b.discontinuity_seq, b.discontinuity) == (3, 1, True)
    # both playlists number the break alike (RFC 8216bis 6.2.2)
    assert joined.window().discontinuity_seq == 0
