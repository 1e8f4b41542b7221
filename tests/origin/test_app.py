"""origin.app: CDN-facing behaviour of the whole app (caching, validators, ranges, CORS,
gzip, HEAD, errors), and the app served by uvicorn on a real socket."""

from __future__ import annotations

import asyncio
import json
import subprocess

import httpx

from tests.origin.feed import LiveFeeder
from tests.support import require_tool

SEGMENT = "/hls/b/b0001/360p/0.m4s"


async def test_etag_and_if_none_match_give_304(client: httpx.AsyncClient,
                                               feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    for path in (SEGMENT, "/hls/demo/360p/index.m3u8", "/hls/demo/master.m3u8"):
        first = await client.get(path)
        etag = first.headers["etag"]
        again = await client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304, path
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
        other = await client.get(path, headers={"If-None-Match": '"nope"'})
        assert other.status_code == 200


async def test_byte_ranges(client: httpx.AsyncClient, feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    whole = (await client.get(SEGMENT)).content
    assert (await client.get(SEGMENT)).headers["accept-ranges"] == "bytes"
    part = await client.get(SEGMENT, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == whole[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole)}"
    assert part.headers["content-length"] == "10"
    tail = await client.get(SEGMENT, headers={"Range": "bytes=-4"})
    assert tail.content == whole[-4:]
    bad = await client.get(SEGMENT, headers={"Range": f"bytes={len(whole)}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{len(whole)}"
    assert bad.headers["cache-control"] == "public, max-age=1"  # an error, not the media
    stale = await client.get(SEGMENT, headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == whole


async def test_head_has_headers_without_a_body(client: httpx.AsyncClient,
                                               feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    whole = (await client.get(SEGMENT)).content
    head = await client.head(SEGMENT)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(whole))
    assert head.headers["content-type"] == "video/iso.segment"


async def test_cors_for_players_on_other_origins(client: httpx.AsyncClient,
                                                 feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    response = await client.get(SEGMENT, headers={"Origin": "https://player.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    exposed = response.headers["access-control-expose-headers"].lower()
    for header in ("content-length", "content-range", "accept-ranges", "etag"):
        assert header in exposed
    preflight = await client.options(SEGMENT, headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range"})
    assert preflight.status_code == 200
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert "range" in preflight.headers["access-control-allow-headers"].lower()
    refused = await client.options("/api/v1/channels", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"})
    assert refused.status_code == 400


async def test_playlists_are_gzipped_but_media_is_not(client: httpx.AsyncClient,
                                                      feeder: LiveFeeder) -> None:
    await feeder.push_segments(5)
    playlist = await client.get("/hls/demo/360p/index.m3u8",
                                headers={"Accept-Encoding": "gzip"})
    assert playlist.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in playlist.headers["vary"].lower()
    assert playlist.text.startswith("#EXTM3U")  # httpx decoded it
    media = await client.get(SEGMENT, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in media.headers


async def test_unknown_paths_are_short_lived_404s(client: httpx.AsyncClient) -> None:
    for path in ("/nope", "/hls", "/hls/a/b/c/d/e/f", "/static/../origin/app.py"):
        response = await client.get(path)
        assert response.status_code == 404, path
    response = await client.get("/nope")
    assert response.headers["cache-control"] == "public, max-age=1"


async def test_static_files_are_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/player.js")
    assert response.status_code == 200
    assert "lowLatencyMode: true" in response.text


async def test_real_socket_head_range_and_keepalive(server: str, feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    async with httpx.AsyncClient(base_url=server) as c:
        head = await c.head(SEGMENT)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 1000
        ranged = await c.get(SEGMENT, headers={"Range": "bytes=0-7"})
        assert ranged.status_code == 206 and len(ranged.content) == 8
        blocked = asyncio.create_task(c.get("/hls/demo/360p/index.m3u8",
                                            params={"_HLS_msn": "1", "_HLS_part": "0"}))
        await asyncio.sleep(0.05)
        await feeder.push_part()
        assert (await asyncio.wait_for(blocked, 5)).status_code == 200



async def test_ffmpeg_hls_demuxer_reads_the_whole_broadcast(server: str,
                                                            feeder: LiveFeeder) -> None:
    """A real player other than hls.js: ffmpeg's HLS demuxer, over the LL-HLS playlists
    (it ignores the LL tags), decodes every frame of an ended broadcast."""
    ffprobe = require_tool("ffprobe")
    feeder.other_renditions = ()
    await feeder.push_segments(3)
    await feeder.end()
    result = await asyncio.to_thread(
        subprocess.run,
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=nb_read_frames,codec_name,width,height", "-of", "json",
         f"{server}/hls/demo/360p/index.m3u8"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    stream = json.loads(result.stdout)["streams"][0]
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (320, 180)
    assert int(stream["nb_read_frames"]) == 3 * 2 * 30  # three 2 s segments at 30 fps
