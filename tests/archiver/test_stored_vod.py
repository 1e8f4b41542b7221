"""Reading back the VOD playlists make_vod writes: pure parsing."""

from __future__ import annotations

from archiver.stored_vod import MediaRef, parse_media_playlist, referenced_keys


def test_playlist_parsing_round_trips_what_make_vod_writes() -> None:
    text = ('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2.00000,\n0.m4s\n'
            '#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init.1.mp4"\n#EXTINF:1.50000,\n1.m4s\n'
            '#EXT-X-ENDLIST\n')
    refs = parse_media_playlist("broadcasts/b/source/vod.m3u8", text)
    assert refs == [
        MediaRef("broadcasts/b/source/0.m4s", "broadcasts/b/source/init.mp4", 2.0, False),
        MediaRef("broadcasts/b/source/1.m4s", "broadcasts/b/source/init.1.mp4", 1.5,
                       True)]
    assert referenced_keys("broadcasts/b/source/vod.m3u8", text) == [
        "broadcasts/b/source/init.mp4", "broadcasts/b/source/0.m4s",
        "broadcasts/b/source/init.1.mp4", "broadcasts/b/source/1.m4s"]
