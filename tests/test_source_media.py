"""Sources that are not a plain audio+video stream, through the real platform: the ffmpeg
CLI (or a raw RTMP client) publishes to the embedded platform's ingest, its transcoder
child makes the ladder, and the origin's playlists and ffmpeg's HLS demuxer show what a
viewer gets (docs/transcoder.md, "Sources that are not a plain stream")."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from castway.media import MediaKind
from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.ingest.helpers import AsyncTestPublisher
from tests.support import finish_process, make_test_media, packet_counts, require_tool
from transcoder.demux import read_packets

pytestmark = [pytest.mark.peer, pytest.mark.slow]

# 288p exists only for sources taller than 288 lines: a size change adds or removes it.
LADDER = ('{"rungs": [{"name": "288p", "height": 288, "video_bitrate_kbps": 300},'
          ' {"name": "160p", "height": 160, "video_bitrate_kbps": 200}]}')


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[EmbeddedPlatform]:
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=2, ladder=str(ladder), x264_preset="ultrafast")
    async with EmbeddedPlatform(settings) as running:
        yield running


def _rtmp_url(platform: EmbeddedPlatform) -> str:
    return (f"rtmp://127.0.0.1:{platform.rtmp_port}/{platform.settings.rtmp_app}/"
            f"{platform.default_stream_key}")


def _client(platform: EmbeddedPlatform) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}", timeout=30)


async def _poll(client: httpx.AsyncClient, url: str, until: Any, timeout_s: float,
                headers: dict[str, str] | None = None) -> httpx.Response:
    """Poll the origin from outside (a client has no event to wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: httpx.Response | None = None
    while loop.time() < deadline:
        last = await client.get(url, headers=headers)
        if until(last):
            return last
        await asyncio.sleep(0.2)
    detail = f"{last.status_code} {last.text[:500]!r}" if last is not None else "no answer"
    raise AssertionError(f"{url} never satisfied the condition; last: {detail}")


async def _publish(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


def _variants(master: str) -> list[tuple[str, str]]:
    """(EXT-X-STREAM-INF attributes, URI) of every variant of a master playlist."""
    lines = master.splitlines()
    return [(line, lines[i + 1]) for i, line in enumerate(lines)
            if line.startswith("#EXT-X-STREAM-INF:")]


async def test_an_audio_only_publish_gets_an_audio_only_ladder_live_and_as_vod(
        platform: EmbeddedPlatform, tmp_path: Path) -> None:
    clip = tmp_path / "radio.flv"
    subprocess.run([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
                    "-c:a", "aac", "-b:a", "96k", "-ac", "2", str(clip)], check=True)
    published = packet_counts(str(clip))
    assert list(published) == ["audio"]
    base = f"http://127.0.0.1:{platform.http_port}"
    auth = {"Authorization": f"Bearer {platform.admin_token}"}
    publisher = await _publish("-re", "-i", str(clip), "-c", "copy", "-f", "flv",
                               _rtmp_url(platform))
    async with _client(platform) as client:
        try:
            master = await _poll(client, "/hls/default/master.m3u8",
                                 lambda r: r.status_code == 200, timeout_s=20)
            variants = _variants(master.text)
            assert len(variants) == 1, master.text
            attrs, uri = variants[0]
            assert 'CODECS="mp4a.40.2"' in attrs, attrs
            assert "RESOLUTION" not in attrs and "FRAME-RATE" not in attrs, attrs
            media = await _poll(client, f"/hls/default/{uri}",
                                lambda r: r.status_code == 200 and "#EXTINF" in r.text,
                                timeout_s=20)
            assert "#EXT-X-MAP" in media.text
            assert re.search(r"#EXT-X-PART:DURATION=[\d.]+,URI=\"[^\"]+\",INDEPENDENT=YES",
                             media.text), media.text
            # ffmpeg's HLS demuxer plays the live master (following it to its end).
            live = await asyncio.to_thread(packet_counts, f"{base}/hls/default/master.m3u8")
            assert list(live) == ["audio"] and live["audio"][0] > 0, live
        finally:
            await finish_process(publisher, 30)
        vods = await _poll(client, "/api/v1/vods",
                           lambda r: r.status_code == 200 and r.json(), timeout_s=60,
                           headers=auth)
        vod_id = vods.json()[0]["id"]
        await _poll(client, f"/api/v1/vods/{vod_id}",
                    lambda r: r.status_code == 200 and r.json()["state"] == "complete",
                    timeout_s=60, headers=auth)
        vod_master = (await client.get(f"/vod/{vod_id}/master.m3u8")).text
        assert "RESOLUTION" not in vod_master and 'CODECS="mp4a.40.2"' in vod_master
    vod = await asyncio.to_thread(packet_counts, f"{base}/vod/{vod_id}/master.m3u8")
    # every AAC frame that was published is in the VOD
    assert vod == published, (vod, published)


async def _send_video(publisher: AsyncTestPublisher, clip: Path, *,
                      sequence_header: bool = True, offset_ms: int = 0) -> None:
    """FLV video tags (legacy AVC) of ``clip`` paced at real time, timestamps shifted by
    ``offset_ms``; without ``sequence_header`` the AVC sequence header is left out, as a
    broken encoder does."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for packet in read_packets(clip):
        if packet.kind != MediaKind.VIDEO:
            continue
        if packet.is_config:
            if sequence_header:
                await publisher.send(publisher.enc.video(
                    1, offset_ms, b"\x17\x00\x00\x00\x00" + packet.payload))
            continue
        # Pacing like a live encoder (ffmpeg -re), not synchronisation.
        delay = start + packet.dts_ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        cts = packet.pts_ms - packet.dts_ms
        body = (bytes([0x17 if packet.is_keyframe else 0x27, 1])
                + cts.to_bytes(3, "big", signed=True) + packet.payload)
        await publisher.send(publisher.enc.video(1, packet.dts_ms + offset_ms, body))


async def test_video_without_a_sequence_header_is_a_health_warning_not_silence(
        platform: EmbeddedPlatform, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = await asyncio.to_thread(make_test_media, tmp_path / "video.flv", seconds=20,
                                   audio=False)
    caplog.set_level(logging.WARNING, logger="transcoder.supervisor")
    publisher = await AsyncTestPublisher.open(platform.rtmp_port)
    sender: asyncio.Task[None] | None = None
    auth = {"Authorization": f"Bearer {platform.admin_token}"}
    key = platform.default_stream_key
    assert key is not None
    try:
        assert await publisher.publish(key) == "NetStream.Publish.Start"
        sender = asyncio.create_task(_send_video(publisher, clip, sequence_header=False))
        async with _client(platform) as client:
            def warned(r: httpx.Response) -> bool:
                live = r.json() if r.status_code == 200 else []
                return bool(live) and set(str(live[0]["stats"].get("warnings", "")).split(
                    ",")) >= {"no_video_config", "no_media"}
            listed = await _poll(client, "/api/v1/broadcasts?state=live", warned,
                                 timeout_s=18, headers=auth)
            broadcast_id = listed.json()[0]["id"]
            # nothing is served meanwhile: never a master without its ladder
            master = await client.get("/hls/default/master.m3u8")
            assert master.status_code == 503 and master.headers["retry-after"]
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await publisher.close()
    logged = {getattr(r, "warning", None) for r in caplog.records
              if getattr(r, "broadcast_id", None) == broadcast_id}
    assert {"no_video_config", "no_media"} <= logged, caplog.text


def _segments(playlist: str) -> list[tuple[int, int, str, bool]]:
    """(MSN, discontinuity sequence number, EXT-X-MAP URI, after EXT-X-DISCONTINUITY) of
    every complete segment of a media playlist (RFC 8216bis 6.2.1's numbering)."""
    msn = disc = 0
    init = ""
    pending = False
    out: list[tuple[int, int, str, bool]] = []
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            disc = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            disc += 1
            pending = True
        elif line.startswith("#EXT-X-MAP:"):
            init = line.split('URI="', 1)[1].split('"', 1)[0]
        elif line and not line.startswith("#"):
            out.append((msn, disc, init, pending))
            msn += 1
            pending = False
    return out


async def _renditions_after_break(client: httpx.AsyncClient,
                                  ) -> dict[str, list[tuple[int, int, str, bool]]]:
    """Every rendition's segments, once each has a complete segment after a break."""
    master = (await client.get("/hls/default/master.m3u8")).text
    out = {}
    for _, uri in _variants(master):
        response = await _poll(
            client, f"/hls/default/{uri}",
            lambda r: r.status_code == 200 and any(s[3] for s in _segments(r.text)),
            timeout_s=20)
        out[uri.split("/", 1)[0]] = _segments(response.text)
    return out


def _assert_aligned_break(renditions: dict[str, list[tuple[int, int, str, bool]]]) -> None:
    """The break is the same media sequence number and discontinuity sequence in every
    rendition, and each gets a new init segment there."""
    breaks = {}
    for name, segments in renditions.items():
        index = next(i for i, s in enumerate(segments) if s[3])
        msn, disc, init, _ = segments[index]
        if index > 0:
            assert init != segments[index - 1][2], (name, segments)
        breaks[name] = (msn, disc)
    assert len(set(breaks.values())) == 1, breaks


def _resolutions(master: str) -> dict[str, str]:
    out = {}
    for attrs, uri in _variants(master):
        match = re.search(r"RESOLUTION=(\d+x\d+)", attrs)
        out[uri.split("/", 1)[0]] = match.group(1) if match else ""
    return out


async def test_a_new_size_inside_one_connection_is_an_aligned_break_with_a_new_master(
        platform: EmbeddedPlatform, tmp_path: Path) -> None:
    wide = await asyncio.to_thread(make_test_media, tmp_path / "wide.flv", seconds=4,
                                   audio=False)
    square = await asyncio.to_thread(make_test_media, tmp_path / "square.flv", seconds=5,
                                     width=320, height=240, audio=False)
    publisher = await AsyncTestPublisher.open(platform.rtmp_port)
    key = platform.default_stream_key
    assert key is not None
    sender: asyncio.Task[None] | None = None
    try:
        assert await publisher.publish(key) == "NetStream.Publish.Start"

        async def send_both() -> None:
            await _send_video(publisher, wide)
            # a new AVC sequence header with another size, timestamps going on
            await _send_video(publisher, square, offset_ms=4000)

        sender = asyncio.create_task(send_both())
        async with _client(platform) as client:
            await _poll(client, "/hls/default/master.m3u8",
                        lambda r: _resolutions(r.text) == {"source": "640x360",
                                                           "288p": "512x288",
                                                           "160p": "284x160"},
                        timeout_s=20)
            await _poll(client, "/hls/default/master.m3u8",
                        # 288p goes on (upscaled): players hold the variant
                        lambda r: _resolutions(r.text) == {"source": "320x240",
                                                           "288p": "384x288",
                                                           "160p": "214x160"},
                        timeout_s=20)
            _assert_aligned_break(await _renditions_after_break(client))
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await publisher.close()


async def test_a_restart_at_another_size_within_the_grace_window_is_an_aligned_break(
        platform: EmbeddedPlatform, tmp_path: Path) -> None:
    small = await asyncio.to_thread(make_test_media, tmp_path / "small.flv", seconds=5,
                                    width=320, height=240)
    large = await asyncio.to_thread(make_test_media, tmp_path / "large.flv", seconds=5)
    url = _rtmp_url(platform)
    async with _client(platform) as client:
        await finish_process(await _publish("-re", "-i", str(small), "-c", "copy", "-f", "flv",
                                     url), 30)
        # again within the 2 s grace window: the same broadcast, now 640x360, whose
        # ladder would have a 288p rung; players hold the master they loaded, so the
        # variant set stays what it was (issue #18): no 288p
        second = await _publish("-re", "-i", str(large), "-c", "copy", "-f", "flv", url)
        try:
            await _poll(client, "/hls/default/master.m3u8",
                        lambda r: _resolutions(r.text) == {"source": "640x360",
                                                           "160p": "284x160"},
                        timeout_s=20)
            renditions = await _renditions_after_break(client)
            _assert_aligned_break(renditions)
            assert set(renditions) == {"source", "160p"}
        finally:
            await finish_process(second, 30)


def _extinfs(playlist: str) -> list[float]:
    return [float(line.split(":", 1)[1].split(",", 1)[0]) for line in playlist.splitlines()
            if line.startswith("#EXTINF:")]


def _target_duration(playlist: str) -> int:
    match = re.search(r"^#EXT-X-TARGETDURATION:(\d+)$", playlist, re.MULTILINE)
    assert match, playlist
    return int(match.group(1))


async def test_a_keyframe_drought_keeps_the_target_duration_and_the_variants_aligned(
        platform: EmbeddedPlatform, tmp_path: Path) -> None:
    # a 10 s GOP (a publisher's keyframe interval set far too long), 12 s long
    clip = await asyncio.to_thread(make_test_media, tmp_path / "gop10.flv", seconds=12,
                                   gop=300)
    published = await asyncio.to_thread(packet_counts, str(clip))
    auth = {"Authorization": f"Bearer {platform.admin_token}"}
    publisher = await _publish("-re", "-i", str(clip), "-c", "copy", "-f", "flv",
                               _rtmp_url(platform))
    seen: dict[str, str] = {}
    target_durations: set[int] = set()
    async with _client(platform) as client:
        try:
            master = await _poll(client, "/hls/default/master.m3u8",
                                 lambda r: len(_variants(r.text)) == 3, timeout_s=20)
            uris = [uri for _, uri in _variants(master.text)]

            async def every_rendition_has(segments: int) -> bool:
                for uri in uris:
                    response = await client.get(f"/hls/default/{uri}")
                    if response.status_code != 200:
                        return False
                    seen[uri.split("/", 1)[0]] = response.text
                    target_durations.add(_target_duration(response.text))
                return all(len(_extinfs(text)) >= segments for text in seen.values())

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not await every_rendition_has(3):
                assert loop.time() < deadline, seen
                await asyncio.sleep(0.2)
            stats = (await client.get("/api/v1/broadcasts?state=live",
                                      headers=auth)).json()[0]["stats"]
        finally:
            await finish_process(publisher, 30)
        vods = await _poll(client, "/api/v1/vods",
                           lambda r: r.status_code == 200 and r.json(), timeout_s=60,
                           headers=auth)
        vod_id = vods.json()[0]["id"]
        vod_master = (await client.get(f"/vod/{vod_id}/master.m3u8")).text
        vod_playlists = {uri.split("/", 1)[0]: (await client.get(f"/vod/{vod_id}/{uri}")).text
                         for _, uri in _variants(vod_master)}
        assert set(vod_playlists) == set(seen), vod_master
    base = f"http://127.0.0.1:{platform.http_port}"
    # EXT-X-TARGETDURATION never moved off the target, and no EXTINF rounds above it
    assert target_durations == {2}, target_durations
    for name, text in {**seen, **{f"vod {n}": t for n, t in vod_playlists.items()}}.items():
        assert max(_extinfs(text)) < 2.5, (name, text)
    # every rendition is cut at the same instants
    durations = {name: {s[0]: d for s, d in zip(_segments(text), _extinfs(text),
                                                strict=True)}
                 for name, text in vod_playlists.items()}
    assert len({tuple(sorted(d)) for d in durations.values()}) == 1, durations
    for msn in durations["source"]:
        assert max(d[msn] for d in durations.values()) - \
            min(d[msn] for d in durations.values()) < 0.1, durations
    # the passthrough cannot start its split segments with a keyframe, so it does not
    # claim independence; the encoded rungs start each with an IDR and do
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in seen["source"]
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in seen["160p"]
    assert "keyframe_drought" in str(stats.get("warnings")), stats
    # nothing published is lost: every rendition of the VOD holds every frame
    vod = await asyncio.to_thread(packet_counts, f"{base}/vod/{vod_id}/master.m3u8")
    assert set(vod["video"]) == set(published["video"]), (vod, published)
    assert set(vod["audio"]) == set(published["audio"]), (vod, published)
