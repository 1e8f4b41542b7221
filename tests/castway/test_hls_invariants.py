"""castway.hls.invariants: each rule, on the smallest playlist that breaks it, and the
renderer's own playlists keeping them."""

from __future__ import annotations

import pytest

from castway.hls.invariants import (
    BroadcastWatch,
    Finding,
    Rule,
    check_bandwidth,
    check_media,
    check_media_update,
    check_multivariant,
    check_multivariant_update,
    check_renditions,
    parse_media,
    parse_multivariant,
    peak_segment_bitrate,
)

HEAD = ("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,HOLD-BACK=6.000,PART-HOLD-BACK=1.530\n"
        "#EXT-X-PART-INF:PART-TARGET=0.51000\n")


def media(*segments: float, msn: int = 0, head: str = HEAD, dseq: int = 0,
          tail: str = "") -> str:
    lines = [head + f"#EXT-X-MEDIA-SEQUENCE:{msn}\n#EXT-X-DISCONTINUITY-SEQUENCE:{dseq}\n"
             '#EXT-X-MAP:URI="init.mp4"']
    for n, duration in enumerate(segments):
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:{2 * (msn + n):02d}.000Z")
        lines.append(f"#EXTINF:{duration:.5f},\n{msn + n}.m4s")
    return "\n".join(lines) + "\n" + tail


def rules(findings: list[Finding]) -> set[Rule]:
    return {f.rule for f in findings}


def test_a_castway_like_playlist_has_no_findings() -> None:
    text = media(2.0, 2.0, 2.0, tail='#EXT-X-PART:DURATION=0.50000,URI="3.0.m4s",'
                 'INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="3.1.m4s"\n')
    assert check_media(parse_media(text)) == []


@pytest.mark.parametrize(("text", "rule"), [
    (media(2.5), Rule.EXTINF_OVER_TARGET),
    (media(2.0, head=HEAD.replace("HOLD-BACK=6.000", "HOLD-BACK=5.000")), Rule.HOLD_BACK),
    (media(2.0, head=HEAD.replace("PART-HOLD-BACK=1.530", "PART-HOLD-BACK=1.0")),
     Rule.PART_HOLD_BACK),
    (media(2.0, tail='#EXT-X-PART:DURATION=0.60000,URI="1.0.m4s"\n'), Rule.PART_OVER_TARGET),
    (media(2.0, tail='#EXT-X-PART:DURATION=0.50000,URI="1.0.m4s"\n'
           '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.0.m4s"\n'), Rule.PRELOAD_HINT),
    (media(2.0, tail="#EXT-X-RENDITION-REPORT:URI=\"../a/index.m3u8\",LAST-MSN=x\n"),
     Rule.RENDITION_REPORT),
])
def test_one_revision(text: str, rule: Rule) -> None:
    findings = check_media(parse_media(text))
    assert rule in rules(findings)
    assert all(f.line is not None for f in findings if f.rule is rule)


def test_a_finding_names_the_offending_line() -> None:
    (finding,) = check_media(parse_media(media(2.0, 2.6)))
    assert finding.rule is Rule.EXTINF_OVER_TARGET
    assert (finding.line, finding.text) == (13, "#EXTINF:2.60000,")


def test_reloads() -> None:
    first = parse_media(media(2.0, 2.0, 2.0))
    assert check_media_update(first, parse_media(media(2.0, 2.0, 2.0, msn=1))) == []
    grown = parse_media(media(2.0, 2.0, 2.0, msn=1).replace("TARGETDURATION:2",
                                                             "TARGETDURATION:3"))
    assert Rule.TARGET_FIXED in rules(check_media_update(first, grown))
    short = parse_media(media(2.0, 2.0, msn=1))
    assert rules(check_media_update(first, short)) == {Rule.WINDOW_TOO_SHORT}
    back = parse_media(media(2.0, 2.0, 2.0, msn=1))
    assert Rule.MEDIA_SEQUENCE in rules(check_media_update(back, first))
    recounted = parse_media(media(2.0, 2.0, 2.0, msn=1, dseq=1))
    assert Rule.DISCONTINUITY_SEQUENCE in rules(check_media_update(first, recounted))
    control = parse_media(media(2.0, 2.0, 2.0, msn=1, head=HEAD.replace("1.530", "1.600")))
    assert Rule.SERVER_CONTROL_FIXED in rules(check_media_update(first, control))


def test_renditions_side_by_side() -> None:
    a = parse_media(media(2.0, 2.0))
    b = parse_media(media(2.0, 2.0, head=HEAD.replace("0.51000", "0.50100")))
    assert Rule.RENDITIONS_DIFFER in rules(check_renditions({"a": a, "b": b}))
    c = parse_media(media(2.0, 2.0, dseq=1))
    assert Rule.DISCONTINUITY_SEQUENCE in rules(check_renditions({"a": a, "c": c}))


MASTER = ('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=500000,CODECS="avc1.64000c,mp4a.40.2",'
          'RESOLUTION=284x160\n160p/index.m3u8\n'
          '#EXT-X-STREAM-INF:BANDWIDTH=4000000,CODECS="avc1.42c01f,mp4a.40.2",'
          'RESOLUTION=854x480\nsource/index.m3u8\n')


def test_the_master() -> None:
    master = parse_multivariant(MASTER)
    assert check_multivariant(master) == []
    fewer = parse_multivariant(MASTER.split("#EXT-X-STREAM-INF:BANDWIDTH=4")[0])
    assert rules(check_multivariant_update(fewer, master)) == {Rule.VARIANT_SET_CHANGED}
    resized = parse_multivariant(MASTER.replace("854x480", "640x360"))
    assert rules(check_multivariant_update(master, resized)) == {Rule.VARIANT_CHANGED}
    no_codecs = parse_multivariant(MASTER.replace(',CODECS="avc1.64000c,mp4a.40.2"', ""))
    assert rules(check_multivariant(no_codecs)) == {Rule.VARIANT_ATTRIBUTES}


def test_bandwidth_is_the_peak_over_runs_of_half_to_one_and_a_half_targets() -> None:
    # A 0.2 s segment of 250 kB alone is 10 Mb/s; in a run with the 2 s one before it,
    # 1.8 Mb/s.
    assert peak_segment_bitrate([(2.0, 250_000), (0.2, 250_000)], 2) == 1_818_182
    source = parse_multivariant(MASTER).variants[1]
    assert check_bandwidth(source, 4_400_000) == []
    assert rules(check_bandwidth(source, 4_500_000)) == {Rule.BANDWIDTH}


def test_the_watch_checks_every_scope() -> None:
    watch = BroadcastWatch()
    assert watch.observe_master(MASTER) == []
    assert watch.observe_media("a", media(2.0, 2.0, 2.0)) == []
    assert watch.observe_media("b", media(2.0, 2.0, 2.0)) == []
    findings = watch.observe_media("a", media(2.0, 2.0, msn=1))
    assert [(f.rule, f.playlist) for f in findings] == [(Rule.WINDOW_TOO_SHORT, "a")]
