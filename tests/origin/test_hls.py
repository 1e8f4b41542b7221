"""origin.hls: live LL-HLS playlists, blocking reloads, media, time-shift and VOD."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import m3u8
import pytest

from castway.catalog.sql import SqlCatalog
from castway.live.memory import MemoryLiveState
from castway.model import Broadcast, BroadcastState, SourceInfo, Visibility, Vod, VodState
from castway.settings import FirstVariant, Settings
from castway.storage.local import LocalStorage
from tests.hls_validator import validate_playlist, validate_update
from tests.origin.feed import Clip, LiveFeeder
from transcoder.packager import SegmentOut
from transcoder.pipeline import RenditionInfo
from transcoder.sink import BroadcastSink

PLAYLIST = "/hls/demo/360p/index.m3u8"
MEDIA = "/hls/b/b0001/360p"


def _not_ready(response: httpx.Response) -> bool:
    """A refusal a player retries and a CDN keeps for a second at most."""
    return (response.status_code == 503 and response.headers["retry-after"] == "1"
            and response.headers["cache-control"] == "public, max-age=1")


async def test_the_master_lists_the_whole_ladder_from_its_first_byte(
        client: httpx.AsyncClient, live: MemoryLiveState, clip: Clip) -> None:
    """No master (and no media playlist) until every rendition has its first segment: a
    player reads the master once, so a master listing part of the ladder would keep
    its viewers off the rest for the whole broadcast; and a media playlist of parts only
    holds no Media Segment, which players take for an empty playlist."""
    high = LiveFeeder(live, clip, broadcast_id="b0002", other_renditions=("180p",))
    await high.start()
    low = LiveFeeder(live, clip, broadcast_id="b0002", rendition="180p")
    assert _not_ready(await client.get("/hls/demo/master.m3u8"))
    await high.push_segments(1)
    await low.push_part()
    # 360p has a segment, 180p only a part: still nothing, whichever way it is asked.
    assert _not_ready(await client.get("/hls/demo/master.m3u8"))
    for path in ("/hls/demo/360p/index.m3u8", "/hls/demo/360p/index.m3u8?_HLS_msn=0",
                 "/hls/demo/360p/index.m3u8?_HLS_msn=0&_HLS_part=0",
                 "/hls/demo/360p/index.m3u8?ll=0"):
        assert _not_ready(await client.get(path)), path
    while low.parts:  # the rest of 180p's first segment
        await low.push_part()
    response = await client.get("/hls/demo/master.m3u8")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert response.headers["cache-control"] == "public, max-age=1"
    assert validate_playlist(response.text) == []
    first = m3u8.loads(response.text).playlists
    assert sorted(p.uri for p in first) == ["180p/index.m3u8", "360p/index.m3u8"]
    # Not measured yet: the ladder's targets (300 kb/s + audio, with the peak margin).
    assert {p.stream_info.bandwidth for p in first} == {(300_000 + 128_000) * 6 // 5}
    assert clip.codecs in response.text
    blocked = await client.get("/hls/demo/360p/index.m3u8?_HLS_msn=0&_HLS_part=0")
    assert blocked.status_code == 200
    assert '#EXT-X-RENDITION-REPORT:URI="../180p/index.m3u8"' in blocked.text
    await high.push_segments(1)
    later = m3u8.loads((await client.get("/hls/demo/master.m3u8")).text).playlists
    assert sorted(p.uri for p in later) == sorted(p.uri for p in first)


async def test_a_passthrough_is_listed_at_the_publishers_bitrate_until_measured(
        client: httpx.AsyncClient, live: MemoryLiveState, clip: Clip) -> None:
    """The source rendition has no target bitrate: onMetaData's videodatarate (else
    what ingest observes) stands for it, never a placeholder."""
    feeder = LiveFeeder(live, clip, rendition="source")
    broadcast = await feeder.start()
    await live.put_broadcast(replace(broadcast, renditions=tuple(
        replace(r, video_bitrate_kbps=None) for r in broadcast.renditions)))
    await feeder.push_segments(1)
    await feeder.push_part()  # the first master waits for the source's second segment
    await live.put_stats(feeder.broadcast_id, {"bitrate_kbps": 2500.0})
    observed = m3u8.loads((await client.get("/hls/demo/master.m3u8")).text)
    assert observed.playlists[0].stream_info.bandwidth == (2_500_000 + 128_000) * 6 // 5
    await live.put_broadcast(replace(broadcast, renditions=tuple(
        replace(r, video_bitrate_kbps=None) for r in broadcast.renditions),
        source=SourceInfo(video_bitrate_kbps=4000.0)))
    declared = m3u8.loads((await client.get("/hls/demo/master.m3u8")).text)
    assert declared.playlists[0].stream_info.bandwidth == (4_000_000 + 128_000) * 6 // 5


async def _ladder_with_source(live: MemoryLiveState, clip: Clip, *,
                              keyframe_drought: bool = False) -> LiveFeeder:
    """Channel 'demo' live with source (4 Mbit/s), 180p and 360p, each with its first
    segment; the source's second segment not begun yet."""
    source = LiveFeeder(live, clip, broadcast_id="b0003", rendition="source",
                        other_renditions=("180p", "360p"), keyframe_drought=keyframe_drought)
    broadcast = await source.start()
    kbps = {"source": 4000.0, "180p": 300.0, "360p": 800.0}
    await live.put_broadcast(replace(broadcast, renditions=tuple(
        replace(r, video_bitrate_kbps=kbps[r.name]) for r in broadcast.renditions)))
    for name in ("180p", "360p"):
        await LiveFeeder(live, clip, broadcast_id="b0003", rendition=name).push_segments(1)
    await source.push_segments(1)
    return source


async def _variants(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/hls/demo/master.m3u8")
    assert response.status_code == 200, response.text
    return [p.uri.split("/")[0] for p in m3u8.loads(response.text).playlists]


async def test_players_start_on_the_source_whose_segments_begin_with_keyframes(
        client: httpx.AsyncClient, live: MemoryLiveState, clip: Clip) -> None:
    """Players without a bandwidth estimate start on the first variant (Safari plays it,
    hls.js seeds its estimate with its bitrate). By default that is the passthrough: an
    encoded rung trails it by its encoder delay, and a player that starts there and
    switches up keeps that delay as latency. Whether the source's segments begin with
    keyframes shows at its second segment's start: the first master waits for it."""
    source = await _ladder_with_source(live, clip)
    assert _not_ready(await client.get("/hls/demo/master.m3u8"))
    await source.push_part()  # the second segment begins, on a keyframe
    assert await _variants(client) == ["source", "180p", "360p"]


async def test_a_source_split_in_a_keyframe_drought_is_not_listed_first(
        client: httpx.AsyncClient, live: MemoryLiveState, clip: Clip) -> None:
    """A player cannot start on a segment that begins without a keyframe (hls.js:
    bufferAppendNoProgress): the master lists by ascending bandwidth instead."""
    source = await _ladder_with_source(live, clip, keyframe_drought=True)
    await source.push_part()
    assert await _variants(client) == ["180p", "360p", "source"]


async def test_the_setting_lowest_lists_by_ascending_bandwidth_without_waiting(
        client: httpx.AsyncClient, live: MemoryLiveState, clip: Clip,
        settings: Settings) -> None:
    settings.master_first_variant = FirstVariant.LOWEST
    await _ladder_with_source(live, clip)
    assert await _variants(client) == ["180p", "360p", "source"]


async def test_offline_or_unknown_channel_is_a_short_lived_404(
        client: httpx.AsyncClient) -> None:
    for path in ("/hls/nobody/master.m3u8", "/hls/nobody/360p/index.m3u8",
                 "/hls/Bad..Name/master.m3u8"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["cache-control"] == "public, max-age=1"


async def test_live_media_playlist_is_valid_ll_hls(client: httpx.AsyncClient,
                                                   feeder: LiveFeeder) -> None:
    await feeder.push_segments(3)
    await feeder.push_part()
    response = await client.get(PLAYLIST)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=1"
    text = response.text
    assert validate_playlist(text) == []
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES" in text
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="../../b/b0001/360p/3.1.m4s"' in text
    parsed = m3u8.loads(text)
    assert [s.uri for s in parsed.segments if s.uri] == [f"../../b/b0001/360p/{n}.m4s"
                                                        for n in range(3)]
    # Every URI in it resolves, with the right content type, against the origin.
    base = httpx.URL("http://origin.test" + PLAYLIST)
    uris = [s.uri for s in parsed.segments if s.uri] + ["../../b/b0001/360p/init.mp4"]
    uris += [p.uri for s in parsed.segments for p in s.parts]
    for uri in uris:
        media = await client.get(base.join(uri))
        assert media.status_code == 200, uri
        assert media.headers["cache-control"] == "public, max-age=31536000, immutable"
        expected = "video/mp4" if uri.endswith(".mp4") else "video/iso.segment"
        assert media.headers["content-type"] == expected


async def test_plain_hls_is_available_for_players_without_ll_support(
        client: httpx.AsyncClient, feeder: LiveFeeder) -> None:
    await feeder.push_segments(2)
    master = await client.get("/hls/demo/master.m3u8?ll=0")
    assert "360p/index.m3u8?ll=0" in master.text
    text = (await client.get(PLAYLIST + "?ll=0")).text
    assert validate_playlist(text) == []
    assert "EXT-X-PART" not in text and "SERVER-CONTROL" not in text


async def test_segment_bytes_are_the_parts_concatenated(client: httpx.AsyncClient,
                                                        feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    segment = await client.get(f"{MEDIA}/0.m4s")
    parts = [await client.get(f"{MEDIA}/0.{i}.m4s") for i in range(4)]
    assert segment.content == b"".join(p.content for p in parts)
    assert segment.content == b"".join(feeder.clip.parts[:4])


def _ended(catalog: SqlCatalog, broadcast_id: str) -> None:
    """An ended broadcast of a channel the catalog does not know: its VOD is public
    (origin.access.MediaAccess), so its broadcast URLs still serve."""
    catalog.save_broadcast(Broadcast(id=broadcast_id, channel="gone", node_id="node-1",
                                     state=BroadcastState.ENDED))


async def test_media_falls_back_to_storage(client: httpx.AsyncClient, catalog: SqlCatalog,
                                           storage: LocalStorage) -> None:
    _ended(catalog, "old1")
    storage.put("broadcasts/old1/360p/7.m4s", b"archived bytes")
    response = await client.get("/hls/b/old1/360p/7.m4s")
    assert response.status_code == 200 and response.content == b"archived bytes"
    missing = await client.get("/hls/b/old1/360p/8.m4s")
    assert missing.status_code == 404
    assert missing.headers["cache-control"] == "public, max-age=1"


@pytest.mark.parametrize("path", [
    "/hls/b/b0001/360p/..", "/hls/b/b0001/360p/.hidden", "/hls/b/b0001/360p/..%2F..%2Fx",
    "/hls/b/b0001/..%2F360p/0.m4s", "/hls/b/..%2F..%2Fetc/360p/passwd",
    "/hls/b/b0001/360p/a%00b", "/vod/x/360p/..", "/hls/b/b0001/..",
])
async def test_path_traversal_is_refused(client: httpx.AsyncClient, storage: LocalStorage,
                                         path: str) -> None:
    storage.put("secret.m4s", b"secret")
    response = await client.get(path)
    assert response.status_code == 404
    assert b"secret" not in response.content


# --- blocking playlist reload (rfc8216bis 6.2.5.2) -----------------------------------

async def test_blocking_reload_returns_at_once_when_the_part_exists(
        client: httpx.AsyncClient, feeder: LiveFeeder) -> None:
    await feeder.push_segments(2)
    response = await client.get(PLAYLIST, params={"_HLS_msn": "1", "_HLS_part": "2"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=1"


async def test_blocking_reload_waits_for_the_part(client: httpx.AsyncClient,
                                                  feeder: LiveFeeder) -> None:
    await feeder.push_segments(2)
    before = (await client.get(PLAYLIST)).text
    request = asyncio.create_task(client.get(PLAYLIST, params={"_HLS_msn": "2",
                                                               "_HLS_part": "1"}))
    await feeder.push_part()  # 2.0: not enough
    await asyncio.sleep(0)
    assert not request.done()
    await feeder.push_part()  # 2.1: the one asked for
    response = await asyncio.wait_for(request, 5)
    assert response.status_code == 200
    assert 'URI="../../b/b0001/360p/2.1.m4s"' in response.text
    assert validate_playlist(response.text) == []
    assert validate_update(before, response.text) == []


async def test_blocking_for_a_whole_segment(client: httpx.AsyncClient,
                                            feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    request = asyncio.create_task(client.get(PLAYLIST, params={"_HLS_msn": "1"}))
    for _ in range(3):
        await feeder.push_part()
    await asyncio.sleep(0.01)
    assert not request.done()
    await feeder.push_part()  # closes segment 1
    response = await asyncio.wait_for(request, 5)
    assert "../../b/b0001/360p/1.m4s" in response.text


@pytest.mark.parametrize(("params", "detail"), [
    ({"_HLS_msn": "5"}, "more than 2 segments"),
    ({"_HLS_msn": "-1"}, "non-negative"),
    ({"_HLS_msn": "x"}, "non-negative"),
    # Unicode digits: int() takes '²' only to fail (was a 500), and takes '٣' as 3.
    ({"_HLS_msn": "\u00b2"}, "non-negative"),
    ({"_HLS_msn": "\u0663"}, "non-negative"),
    ({"_HLS_msn": "1", "_HLS_part": "\u00b9"}, "non-negative"),
    ({"_HLS_msn": "1", "_HLS_part": "\uff11"}, "non-negative"),
    ({"_HLS_msn": " 1"}, "non-negative"),
    ({"_HLS_msn": ""}, "non-negative"),
    ({"_HLS_msn": "1" * 19}, "non-negative"),
    ({"_HLS_skip": "yes"}, "YES or v2"),
    ({"_HLS_part": "1"}, "requires _HLS_msn"),
    ({"_HLS_skip": "NO"}, "YES or v2"),
])
async def test_bad_directives_are_400(client: httpx.AsyncClient, feeder: LiveFeeder,
                                      params: dict[str, str], detail: str) -> None:
    await feeder.push_segments(2)  # last segment: 1
    response = await client.get(PLAYLIST, params=params)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


async def test_msn_two_ahead_is_accepted(client: httpx.AsyncClient, feeder: LiveFeeder,
                                         app: object) -> None:
    await feeder.push_segments(2)
    request = asyncio.create_task(client.get(PLAYLIST, params={"_HLS_msn": "3"}))
    await feeder.push_segments(2)
    assert (await asyncio.wait_for(request, 5)).status_code == 200


async def test_blocked_reload_times_out_with_503(client: httpx.AsyncClient,
                                                 feeder: LiveFeeder) -> None:
    feeder.target_duration_s = 0.1  # TARGETDURATION 1: the wait gives up after ~3 s
    feeder.parts_per_segment = 1
    await feeder.push_part()
    response = await client.get(PLAYLIST, params={"_HLS_msn": "2"})
    assert response.status_code == 503
    assert response.headers["cache-control"] == "public, max-age=1"


async def test_ended_broadcast_releases_blocked_reloads(client: httpx.AsyncClient,
                                                        feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    request = asyncio.create_task(client.get(PLAYLIST, params={"_HLS_msn": "2"}))
    await asyncio.sleep(0.01)
    await feeder.end()
    response = await asyncio.wait_for(request, 5)
    assert response.status_code == 200
    assert response.text.rstrip().endswith("#EXT-X-ENDLIST")


@pytest.mark.parametrize("end", ["ended", "failed"])
async def test_the_end_answers_a_reload_blocked_past_the_last_part_within_200_ms(
        client: httpx.AsyncClient, feeder: LiveFeeder, live: MemoryLiveState,
        catalog: SqlCatalog, app: object, end: str) -> None:
    """The broadcast's end comes where the origin waits (``media:{id}``), as the
    broadcast's own event: ingest's end (its windows end, then ``ended``; here without
    the media update the transcoder also sends) or the archiver's sweep failing a
    broadcast whose node is gone (no window ever ends: the answer ends it)."""
    from fastapi import FastAPI

    from archiver.reconcile import fail_orphan
    from castway.events.announce import announce
    from castway.events.broadcasts import BroadcastEnded
    from castway.model import utcnow

    assert isinstance(app, FastAPI)
    broadcast = await live.get_broadcast(feeder.broadcast_id)
    assert broadcast is not None
    catalog.save_broadcast(broadcast)
    await feeder.push_segments(2)
    await feeder.push_part()
    past_the_last = {"_HLS_msn": str(feeder.next_msn), "_HLS_part": str(len(feeder.parts))}
    request = asyncio.create_task(client.get(PLAYLIST, params=past_the_last))
    while app.state.origin.notifier.waiting < 1:
        await asyncio.sleep(0.001)
    ended_at = time.perf_counter()
    if end == "ended":
        await live.put_window(feeder.broadcast_id, feeder.rendition, feeder.window(ended=True))
        await announce(live, BroadcastEnded(feeder.broadcast_id, feeder.channel))
    else:
        await fail_orphan(catalog, live, broadcast, utcnow())
    response = await asyncio.wait_for(request, 5)
    took = time.perf_counter() - ended_at
    assert response.status_code == 200
    assert response.text.rstrip().endswith("#EXT-X-ENDLIST")
    assert took < 0.2, f"{took * 1000:.0f} ms"


async def test_delta_update_skips_old_segments(client: httpx.AsyncClient,
                                               live: MemoryLiveState, clip: object) -> None:
    from tests.origin.feed import Clip

    assert isinstance(clip, Clip)
    feed = LiveFeeder(live, clip, parts_per_segment=1, target_duration_s=0.5,
                      window_segments=20)
    await feed.start()
    for _ in range(16):
        await feed.push_part()  # 16 segments of 0.5 s, TARGETDURATION 1
    full = (await client.get(PLAYLIST)).text
    delta = await client.get(PLAYLIST, params={"_HLS_msn": "15", "_HLS_skip": "YES"})
    assert validate_playlist(delta.text) == []
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta.text
    assert "CAN-SKIP-UNTIL=6.0" in full
    assert len(delta.text) < len(full)


async def test_rendition_reports_name_the_other_renditions(
        client: httpx.AsyncClient, live: MemoryLiveState, clip: object) -> None:
    from tests.origin.feed import Clip

    assert isinstance(clip, Clip)
    a = LiveFeeder(live, clip, other_renditions=("180p",))
    b = LiveFeeder(live, clip, rendition="180p", other_renditions=("360p",))
    await a.start()
    await a.push_segments(1)
    await b.push_segments(1)
    await b.push_part()
    text = (await client.get(PLAYLIST)).text
    assert '#EXT-X-RENDITION-REPORT:URI="../180p/index.m3u8",LAST-MSN=1,LAST-PART=0' in text


# --- blocking part requests (preload hints) --------------------------------------------

async def test_request_for_the_hinted_part_waits_for_it(client: httpx.AsyncClient,
                                                        feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    request = asyncio.create_task(client.get(f"{MEDIA}/1.0.m4s"))
    await asyncio.sleep(0.01)
    assert not request.done()
    await feeder.push_part()
    response = await asyncio.wait_for(request, 5)
    assert response.status_code == 200
    assert response.content == feeder.clip.parts[4]


async def test_request_far_ahead_of_the_edge_is_404_at_once(client: httpx.AsyncClient,
                                                            feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    assert (await client.get(f"{MEDIA}/9.0.m4s")).status_code == 404
    assert (await client.get(f"{MEDIA}/1.3.m4s")).status_code == 404


# --- time-shift and VOD ----------------------------------------------------------------

async def test_dvr_playlist_covers_the_whole_broadcast(client: httpx.AsyncClient,
                                                       feeder: LiveFeeder) -> None:
    feeder.window_segments = 2
    await feeder.push_segments(5)
    live_text = (await client.get(PLAYLIST)).text
    dvr = await client.get("/hls/demo/360p/dvr.m3u8")
    assert dvr.status_code == 200
    assert validate_playlist(dvr.text) == []
    parsed = m3u8.loads(dvr.text)
    assert parsed.playlist_type == "event"
    assert len(parsed.segments) == 5
    assert len([s for s in m3u8.loads(live_text).segments if s.uri]) == 2


async def test_dvr_playlist_starting_at_a_discontinuity_counts_it_once(
        client: httpx.AsyncClient, feeder: LiveFeeder, live: MemoryLiveState) -> None:
    # The publisher reconnected just before the log's first segment: that segment carries
    # the discontinuity (and its sequence number already counts it).
    await feeder.push_segments(3)
    log = await live.segment_log(feeder.broadcast_id, feeder.rendition)
    await live.drop_segment_log(feeder.broadcast_id)
    for index, segment in enumerate(log):
        await live.append_segment_log(feeder.broadcast_id, feeder.rendition, replace(
            segment, discontinuity=index == 0, discontinuity_seq=1))
    dvr = (await client.get("/hls/demo/360p/dvr.m3u8")).text
    assert validate_playlist(dvr) == []
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in dvr
    assert "#EXT-X-DISCONTINUITY\n" not in dvr
    assert len(m3u8.loads(dvr).segments) == 3


async def test_vod_is_served_from_storage(client: httpx.AsyncClient, catalog: SqlCatalog,
                                          storage: LocalStorage) -> None:
    storage.put("broadcasts/b9/master.m3u8", b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n"
                b"360p/vod.m3u8\n", cache_control="public, max-age=60")
    storage.put("broadcasts/b9/360p/vod.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n"
                b"#EXTINF:2.0,\n0.m4s\n#EXT-X-ENDLIST\n")
    storage.put("broadcasts/b9/360p/0.m4s", b"segment")
    catalog.save_vod(Vod(id="b9", broadcast_id="b9", channel="demo",
                         visibility=Visibility.PUBLIC, state=VodState.COMPLETE,
                         duration_s=2.0))
    master = await client.get("/vod/b9/master.m3u8")
    assert master.status_code == 200
    assert master.headers["cache-control"] == "public, max-age=60"
    assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
    media = await client.get("/vod/b9/360p/vod.m3u8")
    assert media.status_code == 200 and "0.m4s" in media.text
    segment = await client.get("/vod/b9/360p/0.m4s")
    assert segment.content == b"segment"
    assert segment.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(("visibility", "state"), [(Visibility.PRIVATE, VodState.COMPLETE),
                                                   (Visibility.PUBLIC, VodState.DELETED)])
async def test_private_or_deleted_vods_are_not_served(client: httpx.AsyncClient,
                                                      catalog: SqlCatalog,
                                                      storage: LocalStorage,
                                                      visibility: Visibility,
                                                      state: VodState) -> None:
    storage.put("broadcasts/b8/master.m3u8", b"#EXTM3U\n")
    catalog.save_vod(Vod(id="b8", broadcast_id="b8", channel="demo", visibility=visibility,
                         state=state, duration_s=2.0))
    assert (await client.get("/vod/b8/master.m3u8")).status_code == 404
    assert (await client.get("/vod/unknown/master.m3u8")).status_code == 404


async def test_poster_is_served_from_storage(client: httpx.AsyncClient, catalog: SqlCatalog,
                                             storage: LocalStorage) -> None:
    _ended(catalog, "b7")
    storage.put("broadcasts/b7/poster.jpg", b"\xff\xd8jpeg")
    response = await client.get("/hls/b/b7/poster.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert (await client.get("/hls/b/b7/secret.txt")).status_code == 404


async def test_a_thousand_blocked_reloads_are_woken_by_one_event(
        client: httpx.AsyncClient, feeder: LiveFeeder, live: MemoryLiveState,
        app: object) -> None:
    from fastapi import FastAPI

    from castway.events.media import media_topic

    assert isinstance(app, FastAPI)
    metrics = app.state.origin.metrics
    await feeder.push_segments(2)
    requests = [asyncio.create_task(client.get(PLAYLIST, params={"_HLS_msn": "2",
                                                                 "_HLS_part": "0"}))
                for _ in range(1000)]
    while app.state.origin.notifier.waiting < 1000:
        await asyncio.sleep(0.001)
    assert metrics.blocked_reloads._value.get() == 1000
    assert live.subscriber_count(media_topic(feeder.broadcast_id)) == 1
    await feeder.push_part()
    responses = await asyncio.wait_for(asyncio.gather(*requests), 60)
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    assert 'URI="../../b/b0001/360p/2.0.m4s"' in responses[0].text
    assert metrics.blocked_reloads._value.get() == 0


async def test_without_a_signing_key_a_private_ended_broadcast_is_not_found(
        client: httpx.AsyncClient, catalog: SqlCatalog, storage: LocalStorage) -> None:
    # As /vod answers for a private VOD when no grant can ever be made.
    _ended(catalog, "pv1")
    catalog.save_vod(Vod(id="pv1", broadcast_id="pv1", channel="gone",
                         visibility=Visibility.PRIVATE, state=VodState.COMPLETE,
                         duration_s=2.0))
    storage.put("broadcasts/pv1/360p/0.m4s", b"private bytes")
    for url in ("/hls/b/pv1/360p/0.m4s", "/vod/pv1/360p/0.m4s"):
        response = await client.get(url)
        assert response.status_code == 404, url
        assert response.content != b"private bytes"


async def test_a_rendition_stopped_under_overload_sends_its_players_elsewhere_at_once(
        client: httpx.AsyncClient, feeder: LiveFeeder, live: MemoryLiveState,
        settings: Settings) -> None:
    """transcoder.overload stops a rung while the broadcast goes on: its playlist
    answers 410 (a player switches variant on a 4xx; it would end the presentation on an
    EXT-X-ENDLIST), a reload blocked on it is answered at once, and the broadcast lists
    it no more (new masters, the VOD)."""
    sink = BroadcastSink(feeder.broadcast_id, settings, live, _discard)
    await sink.on_ladder([RenditionInfo("360p", feeder.clip.codecs, feeder.clip.width,
                                        feeder.clip.height, 30.0, 300.0)])
    await feeder.push_segments(2)
    assert (await client.get(PLAYLIST)).status_code == 200
    blocked = asyncio.create_task(client.get(PLAYLIST, params={"_HLS_msn": "3"}))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    started = time.monotonic()
    await sink.stop_rendition("360p")
    response = await asyncio.wait_for(blocked, 5)
    assert response.status_code == 410, response.text
    assert time.monotonic() - started < 1.0
    assert "stopped" in response.json()["detail"]
    assert (await client.get(PLAYLIST)).status_code == 410
    broadcast = await live.get_broadcast(feeder.broadcast_id)
    assert broadcast is not None and broadcast.renditions == ()
    # A successor child's output for it goes nowhere.
    await sink.on_output(SegmentOut("360p", 2.0, 4.0, b"late"))
    window = await live.get_window(feeder.broadcast_id, "360p")
    assert window is not None and window.stopped and window.ended


async def _discard(key: str, data: bytes, *, on_durable: Callable[[], None] | None = None
                   ) -> None:
    del key, data
    if on_durable is not None:
        on_durable()
