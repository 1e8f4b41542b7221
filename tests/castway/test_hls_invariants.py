"""castway.hls.invariants: each rule, on the smallest playlist that breaks it (the
format's rules, once tests/hls_validator.py's own, included), and the watch running them."""

from __future__ import annotations

import pytest

from castway.hls.findings import Finding, Rule, Severity
from castway.hls.invariants import (
    check_dated,
    check_media,
    check_media_update,
    check_multivariant,
    check_multivariant_update,
    check_playlist,
    check_renditions,
)
from castway.hls.measured import check_bandwidth, peak_segment_bitrate
from castway.hls.reading import parse_media, parse_multivariant
from castway.hls.watch import BroadcastWatch

HEAD = ("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,HOLD-BACK=6.000,PART-HOLD-BACK=1.530\n"
        "#EXT-X-PART-INF:PART-TARGET=0.51000\n")


# What a live LL-HLS playlist ends with (rfc8216bis 4.4.5.3, 4.4.5.4).
TAIL = ('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="next.m4s"\n'
        '#EXT-X-RENDITION-REPORT:URI="../other/index.m3u8",LAST-MSN=1\n')


def media(*segments: float, msn: int = 0, head: str = HEAD, dseq: int = 0,
          tail: str = TAIL) -> str:
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
    assert all(f.lines for f in findings if f.rule is rule)


def test_a_finding_names_the_offending_line() -> None:
    (finding,) = check_media(parse_media(media(2.0, 2.6)))
    assert finding.rule is Rule.EXTINF_OVER_TARGET
    assert [(ln.number, ln.text) for ln in finding.lines] == \
        [(3, "#EXT-X-TARGETDURATION:2"), (13, "#EXTINF:2.60000,")]


def test_reloads() -> None:
    first = parse_media(media(2.0, 2.0, 2.0))
    assert check_media_update(first, parse_media(media(2.0, 2.0, 2.0, msn=1))) == []
    grown = parse_media(media(2.0, 2.0, 2.0, msn=1).replace("TARGETDURATION:2",
                                                             "TARGETDURATION:3"))
    assert Rule.TARGET_DURATION_CHANGED in rules(check_media_update(first, grown))
    short = parse_media(media(2.0, 2.0, msn=1))
    assert rules(check_media_update(first, short)) == {Rule.SEGMENT_REMOVED_EARLY}
    back = parse_media(media(2.0, 2.0, 2.0, msn=1))
    assert Rule.MEDIA_SEQUENCE in rules(check_media_update(back, first))
    recounted = parse_media(media(2.0, 2.0, 2.0, msn=1, dseq=1))
    assert Rule.DISCONTINUITY_SEQUENCE in rules(check_media_update(first, recounted))
    control = parse_media(media(2.0, 2.0, 2.0, msn=1, head=HEAD.replace("1.530", "1.600")))
    assert Rule.SERVER_CONTROL_CHANGED in rules(check_media_update(first, control))


def test_renditions_side_by_side() -> None:
    a = parse_media(media(2.0, 2.0), "a")
    b = parse_media(media(2.0, 2.0, head=HEAD.replace("0.51000", "0.50100")), "b")
    assert Rule.DIFFERS_ACROSS_RENDITIONS in rules(check_renditions(a, [b]))
    c = parse_media(media(2.0, 2.0, dseq=1), "c")
    assert Rule.DISCONTINUITY_SEQUENCE in rules(check_renditions(a, [c]))
    assert check_renditions(a, [parse_media(media(2.0, 2.0), "d")]) == []


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
    assert rules(check_multivariant_update(master, resized)) == \
        {Rule.VARIANT_ATTRIBUTES_CHANGED}
    measured = parse_multivariant(MASTER.replace("4000000", "3000000"))
    assert rules(check_multivariant_update(master, measured)) == \
        {Rule.VARIANT_BANDWIDTH_CHANGED}
    no_codecs = parse_multivariant(MASTER.replace(',CODECS="avc1.64000c,mp4a.40.2"', ""))
    [finding] = check_multivariant(no_codecs)
    assert (finding.rule, finding.severity) == (Rule.VARIANT_ATTRIBUTES, Severity.WARNING)


def test_bandwidth_is_the_peak_over_runs_of_half_to_one_and_a_half_targets() -> None:
    # A 0.2 s segment of 250 kB alone is 10 Mb/s; in a run with the 2 s one before it,
    # 1.8 Mb/s.
    assert peak_segment_bitrate([(2.0, 250_000), (0.2, 250_000)], 2) == 1_818_182
    source = parse_multivariant(MASTER).variants[1]
    assert check_bandwidth(source, 4_400_000) == []
    assert rules(check_bandwidth(source, 4_500_000)) == {Rule.BANDWIDTH_BELOW_PEAK}
    assert check_bandwidth(source, 1_900_000) == []  # too few segments to judge
    assert rules(check_bandwidth(source, 1_900_000, segments=3)) == \
        {Rule.BANDWIDTH_FAR_ABOVE_PEAK}


def test_the_watch_checks_every_scope() -> None:
    watch = BroadcastWatch()
    assert watch.observe_master(MASTER) == []
    assert watch.observe_media("a", media(2.0, 2.0, 2.0)) == []
    assert watch.observe_media("b", media(2.0, 2.0, 2.0)) == []
    findings = watch.observe_media("a", media(2.0, 2.0, msn=1))
    assert [(f.rule, f.subject) for f in findings] == [(Rule.SEGMENT_REMOVED_EARLY, "a")]
    # The same fault on the next reload is not reported again.
    assert watch.observe_media("a", media(2.0, 2.0, msn=1)) == []


# --- the format (rfc8216bis 4), and what tests/hls_validator.py held -----------------

PDT = "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:{:02d}.000Z"


def text(*body: str, header: tuple[str, ...] = ("#EXT-X-VERSION:6",
                                                  "#EXT-X-TARGETDURATION:2")) -> str:
    return "\n".join(("#EXTM3U", *header, *body)) + "\n"


def seg(n: int, duration: str = "2.000", second: int | None = None) -> tuple[str, ...]:
    return (PDT.format(second if second is not None else 2 * n), f"#EXTINF:{duration},",
            f"{n}.m4s")


MAP = '#EXT-X-MAP:URI="init.mp4"'
LL_HEADER = ("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2",
             "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,"
             "PART-HOLD-BACK=1.5", "#EXT-X-PART-INF:PART-TARGET=0.5")


def parts(n: int, count: int = 4, duration: str = "0.5") -> tuple[str, ...]:
    return tuple(f'#EXT-X-PART:DURATION={duration},URI="{n}.{i}.m4s"' for i in range(count))


FORMAT_VALID = [
    text(MAP, *seg(0), *seg(1)),
    text(*seg(0), *seg(1), header=("#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2")),
    text(MAP, *seg(0), *seg(1), "#EXT-X-ENDLIST",
          header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2", "#EXT-X-PLAYLIST-TYPE:VOD")),
    text(MAP, *seg(0, "2.499")),
    text(MAP, PDT.format(0), *parts(0), "#EXTINF:2.0,", "0.m4s", *parts(1, 2),
          '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.2.m4s"',
          '#EXT-X-RENDITION-REPORT:URI="../a/index.m3u8",LAST-MSN=1,LAST-PART=1',
          header=LL_HEADER),
    text("#EXT-X-SKIP:SKIPPED-SEGMENTS=3", MAP, *seg(3), *seg(4),
          header=("#EXT-X-VERSION:9", *LL_HEADER[1:])),
    "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=1000,AVERAGE-BANDWIDTH=900,CODECS="avc1.64001f",'
    "RESOLUTION=640x360,FRAME-RATE=30.000\na/index.m3u8\n",
]


FORMAT_INVALID = [
    ("no header", "#EXT-X-TARGETDURATION:2\n", Rule.SYNTAX),
    ("no target duration", "#EXTM3U\n#EXT-X-VERSION:3\n" + "\n".join(seg(0)) + "\n",
     Rule.SYNTAX),
    ("extinf rounds above target", text(MAP, *seg(0, "2.5")), Rule.EXTINF_OVER_TARGET),
    ("missing pdt", text(MAP, "#EXTINF:2.0,", "0.m4s"), Rule.PROGRAM_DATE_TIME),
    ("pdt backwards", text(MAP, *seg(0, second=10), *seg(1, second=4)), Rule.PROGRAM_DATE_TIME),
    ("map needs version 6", text(MAP, *seg(0), header=("#EXT-X-VERSION:3",
                                                        "#EXT-X-TARGETDURATION:2")),
     Rule.VERSION),
    ("float extinf needs version 3", text(*seg(0), header=("#EXT-X-TARGETDURATION:2",)),
     Rule.VERSION),
    ("vod without endlist", text(MAP, *seg(0), header=("#EXT-X-VERSION:6",
                                                         "#EXT-X-TARGETDURATION:2",
                                                         "#EXT-X-PLAYLIST-TYPE:VOD")),
     Rule.PLAYLIST_TYPE),
    ("uri without extinf", text(MAP, "0.m4s"), Rule.SYNTAX),
    ("extinf without uri", text(MAP, PDT.format(0), "#EXTINF:2.0,"), Rule.SYNTAX),
    ("part longer than part target",
     text(MAP, PDT.format(0), *parts(0, 2, "1.0"), "#EXTINF:2.0,", "0.m4s",
           header=LL_HEADER), Rule.PART_OVER_TARGET),
    ("part hold back too small",
     text(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2",
                                 "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                                 "PART-HOLD-BACK=1.0", "#EXT-X-PART-INF:PART-TARGET=0.5")),
     Rule.PART_HOLD_BACK),
    ("hold back too small",
     text(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2",
                                 "#EXT-X-SERVER-CONTROL:HOLD-BACK=4.0")), Rule.HOLD_BACK),
    ("skip until too small",
     text(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2",
                                 "#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=6.0")), Rule.SKIP_UNTIL),
    ("skip needs version 9", text("#EXT-X-SKIP:SKIPPED-SEGMENTS=3", MAP, *seg(3),
                                   header=LL_HEADER), Rule.VERSION),
    ("part without part-inf", text(MAP, PDT.format(0), *parts(0), "#EXTINF:2.0,", "0.m4s"),
     Rule.SYNTAX),
    ("parts too old",
     text(MAP, PDT.format(0), *parts(0), "#EXTINF:2.0,", "0.m4s", *seg(1), *seg(2), *seg(3),
           header=LL_HEADER), Rule.PARTS_WINDOW),
    ("parts do not add up",
     text(MAP, PDT.format(0), *parts(0, 2), "#EXTINF:2.0,", "0.m4s", header=LL_HEADER),
     Rule.PARTS_VS_EXTINF),
    ("duplicate version", text(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-VERSION:6",
                                                      "#EXT-X-TARGETDURATION:2")),
     Rule.SYNTAX),
    ("hint in ended playlist",
     text(MAP, *seg(0), '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="x"', "#EXT-X-ENDLIST"),
     Rule.PRELOAD_HINT),
    ("first segment without map", text(*seg(0), MAP, *seg(1)), Rule.MAP),
    ("media sequence late", text(MAP, *seg(0), "#EXT-X-MEDIA-SEQUENCE:4"),
     Rule.SYNTAX),
    ("master without bandwidth", "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n",
     Rule.VARIANT_ATTRIBUTES),
    ("master frame rate", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,FRAME-RATE=29.9700\na\n",
     Rule.SYNTAX),
    ("master variant without uri", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", Rule.SYNTAX),
    ("mixed", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na\n#EXTINF:2,\nb\n", Rule.SYNTAX),
]


def _format(text: str, *, dated: bool = True) -> list[Finding]:
    findings = check_playlist(text)
    return findings + (check_dated(parse_media(text)) if dated and "#EXTINF" in text else [])


@pytest.mark.parametrize("text", FORMAT_VALID)
def test_valid_playlists_pass(text: str) -> None:
    assert [f for f in _format(text) if f.severity is Severity.VIOLATION] == []


@pytest.mark.parametrize(("name", "text", "rule"), FORMAT_INVALID,
                         ids=[c[0] for c in FORMAT_INVALID])
def test_each_format_rule_catches_its_violation(name: str, text: str, rule: Rule) -> None:
    assert rule in rules(_format(text)), _format(text)


def test_undated_segments_are_castways_own_rule() -> None:
    undated = text(MAP, "#EXTINF:2.0,", "0.m4s")
    assert check_playlist(undated) == []
    assert rules(check_dated(parse_media(undated))) == {Rule.PROGRAM_DATE_TIME}


def test_media_sequence_numbers_account_for_skipped_segments() -> None:
    playlist = parse_media(text("#EXT-X-MEDIA-SEQUENCE:10", "#EXT-X-SKIP:SKIPPED-SEGMENTS=3",
                                MAP, *seg(13), "#EXT-X-ENDLIST"))
    assert (playlist.media_sequence, playlist.skipped, playlist.ended) == (10, 3, True)
    assert [(s.msn, s.uri) for s in playlist.segments] == [(13, "13.m4s")]


def test_updates_must_move_forward_and_keep_segments() -> None:
    def update(old: str, new: str) -> set[Rule]:
        return rules(check_media_update(parse_media(old), parse_media(new)))

    old = text("#EXT-X-MEDIA-SEQUENCE:0", MAP, *seg(0), *seg(1), *seg(2))
    good = text("#EXT-X-MEDIA-SEQUENCE:1", MAP, *seg(1), *seg(2), *seg(3))
    assert update(old, good) == set()
    renamed = text("#EXT-X-MEDIA-SEQUENCE:1", MAP, *seg(5), *seg(6), *seg(7))
    assert Rule.MEDIA_SEQUENCE in update(good, renamed)
    assert Rule.MEDIA_SEQUENCE in update(good, old)
    assert update(old + "#EXT-X-ENDLIST\n", good) == {Rule.ENDED_PLAYLIST_CHANGED}
    longer = good.replace("TARGETDURATION:2", "TARGETDURATION:4")
    assert Rule.TARGET_DURATION_CHANGED in update(good, longer)
