"""tests/hls_validator.py: each rule catches its violation; valid playlists pass."""

from __future__ import annotations

import pytest

from tests.hls_validator import media_info, validate_playlist, validate_update

PDT = "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:{:02d}.000Z"


def media(*body: str, header: tuple[str, ...] = ("#EXT-X-VERSION:6",
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


VALID = [
    media(MAP, *seg(0), *seg(1)),
    media(*seg(0), *seg(1), header=("#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2")),
    media(MAP, *seg(0), *seg(1), "#EXT-X-ENDLIST",
          header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2", "#EXT-X-PLAYLIST-TYPE:VOD")),
    media(MAP, *seg(0, "2.499")),
    media(MAP, PDT.format(0), *parts(0), "#EXTINF:2.0,", "0.m4s", *parts(1, 2),
          '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.2.m4s"',
          '#EXT-X-RENDITION-REPORT:URI="../a/index.m3u8",LAST-MSN=1,LAST-PART=1',
          header=LL_HEADER),
    media("#EXT-X-SKIP:SKIPPED-SEGMENTS=3", MAP, *seg(3), *seg(4),
          header=("#EXT-X-VERSION:9", *LL_HEADER[1:])),
    "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=1000,AVERAGE-BANDWIDTH=900,CODECS="avc1.64001f",'
    "RESOLUTION=640x360,FRAME-RATE=30.000\na/index.m3u8\n",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_playlists_pass(text: str) -> None:
    assert validate_playlist(text) == []


INVALID = [
    ("no header", "#EXT-X-TARGETDURATION:2\n", "#EXTM3U"),
    ("no target duration", "#EXTM3U\n#EXT-X-VERSION:3\n" + "\n".join(seg(0)) + "\n",
     "TARGETDURATION missing"),
    ("extinf rounds above target", media(MAP, *seg(0, "2.5")), "rounds above"),
    ("missing pdt", media(MAP, "#EXTINF:2.0,", "0.m4s"), "without EXT-X-PROGRAM-DATE-TIME"),
    ("pdt backwards", media(MAP, *seg(0, second=10), *seg(1, second=4)), "backwards"),
    ("map needs version 6", media(MAP, *seg(0), header=("#EXT-X-VERSION:3",
                                                        "#EXT-X-TARGETDURATION:2")),
     "VERSION >= 6"),
    ("float extinf needs version 3", media(*seg(0), header=("#EXT-X-TARGETDURATION:2",)),
     "VERSION >= 3"),
    ("vod without endlist", media(MAP, *seg(0), header=("#EXT-X-VERSION:6",
                                                         "#EXT-X-TARGETDURATION:2",
                                                         "#EXT-X-PLAYLIST-TYPE:VOD")),
     "requires EXT-X-ENDLIST"),
    ("uri without extinf", media(MAP, "0.m4s"), "URI without EXTINF"),
    ("extinf without uri", media(MAP, PDT.format(0), "#EXTINF:2.0,"), "without a URI"),
    ("part longer than part target",
     media(MAP, PDT.format(0), *parts(0, 2, "1.0"), "#EXTINF:2.0,", "0.m4s",
           header=LL_HEADER), "exceeds PART-TARGET"),
    ("part hold back too small",
     media(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2",
                                 "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                                 "PART-HOLD-BACK=1.0", "#EXT-X-PART-INF:PART-TARGET=0.5")),
     "PART-HOLD-BACK 1.0 < 3x"),
    ("hold back too small",
     media(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2",
                                 "#EXT-X-SERVER-CONTROL:HOLD-BACK=4.0")), "HOLD-BACK 4.0"),
    ("skip until too small",
     media(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2",
                                 "#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=6.0")), "CAN-SKIP-UNTIL"),
    ("skip needs version 9", media("#EXT-X-SKIP:SKIPPED-SEGMENTS=3", MAP, *seg(3),
                                   header=LL_HEADER), "VERSION >= 9"),
    ("part without part-inf", media(MAP, PDT.format(0), *parts(0), "#EXTINF:2.0,", "0.m4s"),
     "without EXT-X-PART-INF"),
    ("parts too old",
     media(MAP, PDT.format(0), *parts(0), "#EXTINF:2.0,", "0.m4s", *seg(1), *seg(2), *seg(3),
           header=LL_HEADER), "more than 3 target durations"),
    ("parts do not add up",
     media(MAP, PDT.format(0), *parts(0, 2), "#EXTINF:2.0,", "0.m4s", header=LL_HEADER),
     "parts sum to"),
    ("duplicate version", media(MAP, *seg(0), header=("#EXT-X-VERSION:6", "#EXT-X-VERSION:6",
                                                      "#EXT-X-TARGETDURATION:2")),
     "appears 2 times"),
    ("hint in ended playlist",
     media(MAP, *seg(0), '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="x"', "#EXT-X-ENDLIST"),
     "PRELOAD-HINT in an ended"),
    ("first segment without map", media(*seg(0), MAP, *seg(1)), "preceded by EXT-X-MAP"),
    ("media sequence late", media(MAP, *seg(0), "#EXT-X-MEDIA-SEQUENCE:4"),
     "MEDIA-SEQUENCE after"),
    ("master without bandwidth", "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n",
     "BANDWIDTH missing"),
    ("master frame rate", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,FRAME-RATE=29.9700\na\n",
     "FRAME-RATE"),
    ("master variant without uri", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", "without a URI"),
    ("mixed", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na\n#EXTINF:2,\nb\n", "mixes"),
]


@pytest.mark.parametrize(("name", "text", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_playlists_are_reported(name: str, text: str, expected: str) -> None:
    errors = validate_playlist(text)
    assert any(expected in e for e in errors), errors


def test_pdt_can_be_optional() -> None:
    assert validate_playlist(media(MAP, "#EXTINF:2.0,", "0.m4s"), require_pdt=False) == []


def test_media_info_accounts_for_skipped_segments() -> None:
    info = media_info(media("#EXT-X-MEDIA-SEQUENCE:10", "#EXT-X-SKIP:SKIPPED-SEGMENTS=3",
                            MAP, *seg(13), "#EXT-X-ENDLIST"))
    assert (info.media_sequence, info.skipped, info.uris, info.ended) == (10, 3, ["13.m4s"],
                                                                         True)


def test_updates_must_move_forward_and_keep_uris() -> None:
    old = media("#EXT-X-MEDIA-SEQUENCE:0", MAP, *seg(0), *seg(1))
    good = media("#EXT-X-MEDIA-SEQUENCE:1", MAP, *seg(1), *seg(2))
    assert validate_update(old, good) == []
    renamed = media("#EXT-X-MEDIA-SEQUENCE:1", MAP, *seg(5))
    assert any("changed URI" in e for e in validate_update(good, renamed))
    assert any("went from 1 to 0" in e for e in validate_update(good, old))
    ended = old + "#EXT-X-ENDLIST\n"
    assert any("ENDLIST disappeared" in e for e in validate_update(ended, good))
    longer = good.replace("TARGETDURATION:2", "TARGETDURATION:4")
    assert any("TARGETDURATION changed" in e for e in validate_update(good, longer))
