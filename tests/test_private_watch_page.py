"""A private live channel, watched the way its viewers watch it: headless Chromium opens the
grant's watch URL, the page sets the grant's cookies and hls.js plays the live broadcast
with them. Without a grant the page and the media are refused (issue #20's acceptance:
"the watch page plays it in Chromium with a grant").
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.origin.browser import launch_browser, wait_for_playback
from tests.support import require_hls_js, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PUBLISH_S = 30


async def _live(client: httpx.AsyncClient, auth: dict[str, str], timeout_s: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        response = await client.get("/api/v1/broadcasts?state=live", headers=auth)
        if response.status_code == 200 and response.json():
            return response.json()[0]
        await asyncio.sleep(0.2)
    raise AssertionError("the broadcast never went live")


async def _ready(client: httpx.AsyncClient, url: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if (await client.get(url)).status_code == 200:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never answered 200")


async def test_a_private_channel_plays_in_chromium_with_a_grant_and_not_without(
        tmp_path: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    require_hls_js()
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1, x264_preset="ultrafast")
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client, \
            launch_browser(tmp_path) as browser:
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        made = await client.patch("/api/v1/channels/default", headers=auth,
                                  json={"live_visibility": "private"})
        assert made.status_code == 200, made.text
        grant = (await client.post("/api/v1/channels/default/grant", headers=auth,
                                   json={"ttl_s": 900})).json()
        url = f"rtmp://127.0.0.1:{platform.rtmp_port}/live/{platform.default_stream_key}"
        publisher = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(PUBLISH_S), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            await _live(client, auth, 15)
            # Without a grant: no page, no playlist (what a viewer who guessed the name gets).
            assert (await client.get("/watch/default")).status_code == 404
            assert (await client.get("/hls/default/master.m3u8")).status_code == 403

            # The viewer arrives once the master is out (before that the page retries: a
            # refusal of its own kind, tested with the first master).
            master = grant["master_url"] if grant["master_url"].startswith("http") \
                else f"{client.base_url}{grant['master_url']}"
            await _ready(client, master, 15)

            stranger = await browser.new_page()
            await stranger.goto(f"{client.base_url}/watch/default")
            assert await stranger.evaluate("!document.getElementById('video')")

            viewer = await browser.new_page()
            watch_url = grant["watch_url"]
            await viewer.goto(watch_url if watch_url.startswith("http")
                              else f"{client.base_url}{watch_url}")
            played = await wait_for_playback(viewer, advance_s=2.0, timeout_s=20)
            assert played["hls"], played  # hls.js, fetching with the grant's cookies
            assert not played["errors"], played
            # The page's URL carried the grant; the media requests carried only cookies.
            assert await viewer.evaluate("document.getElementById('video').currentTime") > 2
        finally:
            if publisher.returncode is None:
                publisher.kill()
            await publisher.wait()
