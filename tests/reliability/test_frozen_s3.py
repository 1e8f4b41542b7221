"""S3 stops answering (SIGSTOP: connections are accepted, nothing ever replies) for a
while during a real publish through the embedded platform: live must not notice, and
nothing may be lost.

Players here are LL-HLS clients as hls.js is one: blocking playlist reloads and a
request for the preload-hinted part, so the origin's storage reads run during the
freeze as they do in production.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.fixtures.s3_server import S3Server, create_bucket
from tests.support import make_test_media, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

CLIP_S = 30.0
FREEZE_S = 10.0
SEGMENT_S = 1.0  # CASTWAY_TARGET_SEGMENT_S here: many segments during the freeze
PLAYERS = 6
_MSN = re.compile(r"#EXT-X-MEDIA-SEQUENCE:(\d+)")
_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"')
_SEGMENT = re.compile(r"^[^#\s].*$", re.MULTILINE)


def _last_msn(playlist: str) -> int:
    """The sequence number of the newest complete segment in a media playlist."""
    match = _MSN.search(playlist)
    assert match is not None, playlist
    return int(match.group(1)) + len(_SEGMENT.findall(playlist)) - 1


def _metric(text: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)


async def _player(client: httpx.AsyncClient, url: str, stop: asyncio.Event) -> None:
    """An LL-HLS player: blocking reload of the next part, then the hinted part."""
    while not stop.is_set():
        try:
            response = await client.get(url)
            if response.status_code != 200:
                await asyncio.sleep(0.1)
                continue
            hint = _HINT.search(response.text)
            if hint is not None:
                await client.get(urljoin(url, hint.group(1)))
        except httpx.HTTPError:
            await asyncio.sleep(0.1)


async def test_a_frozen_s3_stalls_no_playlist_and_loses_no_media(
        tmp_path: Path, s3_server_restartable: S3Server, aws_credentials: None) -> None:
    ffmpeg = require_tool("ffmpeg")
    s3 = s3_server_restartable
    bucket = await asyncio.to_thread(create_bucket, s3.client())
    clip = await asyncio.to_thread(make_test_media, tmp_path / "clip.flv", seconds=CLIP_S,
                                   width=320, height=180, gop=30)
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1, ladder="source", target_segment_s=SEGMENT_S,
                        storage_url=f"s3://{bucket}/media", s3_endpoint_url=s3.endpoint_url)
    loop = asyncio.get_running_loop()
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=60) as client:
        url = (f"rtmp://127.0.0.1:{platform.rtmp_port}/{settings.rtmp_app}/"
               f"{platform.default_stream_key}")
        publisher = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
            "-f", "flv", url, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        stop = asyncio.Event()
        players: list[asyncio.Task[None]] = []
        try:
            playlist = "/hls/default/source/index.m3u8"
            deadline = loop.time() + 30
            while True:  # live, with a few segments
                response = await client.get(playlist)
                if response.status_code == 200 and _last_msn(response.text) >= 2:
                    break
                assert loop.time() < deadline, "the broadcast never went live"
                await asyncio.sleep(0.2)
            players = [asyncio.create_task(_player(client, f"{client.base_url}{playlist}",
                                                   stop)) for _ in range(PLAYERS)]
            before = _last_msn((await client.get(playlist)).text)

            s3.freeze()
            try:
                # Poll as a plain (non-blocking) client: the newest segment must keep
                # coming, never stalled for more than a few segment durations.
                newest, last_advance = before, loop.time()
                longest_stall = 0.0
                freeze_end = loop.time() + FREEZE_S
                while loop.time() < freeze_end:
                    msn = _last_msn((await client.get(playlist)).text)
                    now = loop.time()
                    if msn > newest:
                        newest, last_advance = msn, now
                    longest_stall = max(longest_stall, now - last_advance)
                    await asyncio.sleep(0.2)
            finally:
                s3.thaw()
            print(f"during the {FREEZE_S:.0f} s freeze: {newest - before} new segments, "
                  f"longest stall {longest_stall:.1f} s")
            # (Before storage had threads of its own: no new segment at all, 10 s stalled.)
            assert newest - before >= FREEZE_S / SEGMENT_S / 2, (before, newest)
            assert longest_stall < FREEZE_S / 2, longest_stall

            _, stderr = await asyncio.wait_for(publisher.communicate(), CLIP_S + 60)
            assert publisher.returncode == 0, stderr.decode()
        finally:
            stop.set()
            for task in players:
                task.cancel()
            await asyncio.gather(*players, return_exceptions=True)
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()

        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "castway_transcoder_dropped_packets_total") == 0

        # The broadcast ends after the grace; its VOD is complete only once every
        # segment is verified in S3: the spooled ones too.
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        deadline = loop.time() + 120
        while True:
            vods = (await client.get("/api/v1/vods", headers=auth)).json()
            if vods and vods[0]["state"] == "complete":
                break
            assert loop.time() < deadline, f"no complete VOD: {vods}"
            await asyncio.sleep(0.5)
        assert vods[0]["duration_s"] == pytest.approx(CLIP_S, abs=1.5)
        broadcast_id = vods[0]["broadcast_id"]
        vod_playlist = await client.get(f"/vod/{vods[0]['id']}/source/vod.m3u8")
        assert vod_playlist.status_code == 200, vod_playlist.text
        names = [line.rsplit("/", 1)[-1] for line in _SEGMENT.findall(vod_playlist.text)]
        listed = await asyncio.to_thread(
            s3.client().list_objects_v2, Bucket=bucket,
            Prefix=f"media/broadcasts/{broadcast_id}/source/")
        stored = {o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])}
        assert names and set(names) <= stored, sorted(set(names) - stored)
