"""Sources that are not a plain audio+video stream, through the real platform: the ffmpeg
CLI (or a raw RTMP client) publishes to the embedded platform's ingest, its transcoder
child makes the ladder, and the origin's playlists and ffmpeg's HLS demuxer show what a
viewer gets (docs/transcoder.md, "Sources that are not a plain stream")."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from castway.media import MediaKind
from castway.serve import EmbeddedPlatform
from castway.settings import Settings
from tests.ingest.helpers import AsyncTestPublisher
from tests.support import make_test_media, require_tool
from transcoder.demux import read_packets

pytestmark = [pytest.mark.peer, pytest.mark.slow]

LADDER = '{"rungs": [{"name": "160p", "height": 160, "video_bitrate_kbps": 200}]}'


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


async def _finish(publisher: asyncio.subprocess.Process, timeout_s: float) -> None:
    try:
        _, stderr = await asyncio.wait_for(publisher.communicate(), timeout_s)
        assert publisher.returncode == 0, stderr.decode()
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()


def _probe_packets(url: str) -> dict[str, list[int]]:
    """Packets per stream type as ffmpeg's demuxer (HLS for a playlist) reads them."""
    probe = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-count_packets", "-show_entries",
         "stream=codec_type,codec_name,nb_read_packets", "-of", "json", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr
    counts: dict[str, list[int]] = {}
    for stream in json.loads(probe.stdout)["streams"]:
        counts.setdefault(stream["codec_type"], []).append(int(stream["nb_read_packets"]))
    return counts


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
    published = _probe_packets(str(clip))
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
            live = await asyncio.to_thread(_probe_packets, f"{base}/hls/default/master.m3u8")
            assert list(live) == ["audio"] and live["audio"][0] > 0, live
        finally:
            await _finish(publisher, 30)
        vods = await _poll(client, "/api/v1/vods",
                           lambda r: r.status_code == 200 and r.json(), timeout_s=60,
                           headers=auth)
        vod_id = vods.json()[0]["id"]
        await _poll(client, f"/api/v1/vods/{vod_id}",
                    lambda r: r.status_code == 200 and r.json()["state"] == "complete",
                    timeout_s=60, headers=auth)
        vod_master = (await client.get(f"/vod/{vod_id}/master.m3u8")).text
        assert "RESOLUTION" not in vod_master and 'CODECS="mp4a.40.2"' in vod_master
    vod = await asyncio.to_thread(_probe_packets, f"{base}/vod/{vod_id}/master.m3u8")
    # every AAC frame that was published is in the VOD
    assert vod == published, (vod, published)


async def _send_video_without_sequence_header(publisher: AsyncTestPublisher,
                                              clip: Path) -> None:
    """FLV video tags (AVC NALUs, E-RTMP's legacy form) of ``clip`` paced at real time,
    with the AVC sequence header left out, as a broken encoder sends them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for packet in read_packets(clip):
        if packet.kind != MediaKind.VIDEO or packet.is_config:
            continue
        # Pacing like a live encoder (ffmpeg -re), not synchronisation.
        delay = start + packet.dts_ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        cts = packet.pts_ms - packet.dts_ms
        body = (bytes([0x17 if packet.is_keyframe else 0x27, 1])
                + cts.to_bytes(3, "big", signed=True) + packet.payload)
        await publisher.send(publisher.enc.video(1, packet.dts_ms, body))


async def test_video_without_a_sequence_header_is_a_health_warning_not_silence(
        platform: EmbeddedPlatform, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = await asyncio.to_thread(make_test_media, tmp_path / "video.flv", seconds=12,
                                   audio=False)
    caplog.set_level(logging.WARNING, logger="transcoder.supervisor")
    publisher = await AsyncTestPublisher.open(platform.rtmp_port)
    sender: asyncio.Task[None] | None = None
    auth = {"Authorization": f"Bearer {platform.admin_token}"}
    key = platform.default_stream_key
    assert key is not None
    try:
        assert await publisher.publish(key) == "NetStream.Publish.Start"
        sender = asyncio.create_task(_send_video_without_sequence_header(publisher, clip))
        async with _client(platform) as client:
            def warned(r: httpx.Response) -> bool:
                live = r.json() if r.status_code == 200 else []
                return bool(live) and set(str(live[0]["stats"].get("warnings", "")).split(
                    ",")) >= {"no_video_config", "no_media"}
            listed = await _poll(client, "/api/v1/broadcasts?state=live", warned,
                                 timeout_s=12, headers=auth)
            broadcast_id = listed.json()[0]["id"]
            # nothing is served meanwhile
            master = await client.get("/hls/default/master.m3u8")
            assert master.status_code == 404
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await publisher.close()
    logged = {getattr(r, "warning", None) for r in caplog.records
              if getattr(r, "broadcast_id", None) == broadcast_id}
    assert {"no_video_config", "no_media"} <= logged, caplog.text
