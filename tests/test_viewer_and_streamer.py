"""What the streamer and the viewer see, from a real publish: ffmpeg's CLI with a
keyframe every 250 frames (10 s: ffmpeg's default GOP, like OBS's "auto") publishes to
the embedded platform; the API's broadcast health says so within seconds, with what to
change in OBS; the channel page opened while offline plays in headless Chromium with the
offline notice gone and no error text; then the VOD page plays with no error text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.origin.browser import Page, launch_browser, wait_for_playback
from tests.support import require_hls_js, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PUBLISH_S = 20
# The warning must come from the first keyframes, long before the second one (at 10 s).
WARNING_WITHIN_S = 6.0

# What a viewer sees besides the video: the problem box (if shown) and the offline notice.
VISIBLE_TEXT = """
(function () {
  const shown = (id) => { const e = document.getElementById(id);
                          return e && !e.hidden ? e.textContent : null; };
  return {problem: shown("problem"), offline: shown("offline"),
          status: document.getElementById("status").textContent};
})()
"""


async def _poll(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                until: Any, timeout_s: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    body: Any = None
    while loop.time() < deadline:
        response = await client.get(url, headers=headers)
        if response.status_code == 200:
            body = response.json()
            if until(body):
                return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never satisfied the condition; last body: {body!r}")


def _long_keyframes(broadcasts: list[dict[str, Any]]) -> bool:
    return any(w["code"] == "long_keyframe_interval"
               for b in broadcasts for w in b["health"]["warnings"])


async def _no_error_text(page: Page) -> dict[str, Any]:
    seen: dict[str, Any] = await page.evaluate(VISIBLE_TEXT)
    assert seen["problem"] is None, seen
    for name in ("levelLoad", "bufferSeekOverHole", "Error", "fatal"):
        assert name not in seen["status"], seen
    return seen


async def test_the_streamer_is_told_and_the_viewer_sees_no_errors(tmp_path: Any) -> None:
    ffmpeg = require_tool("ffmpeg")
    require_hls_js()
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1)
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client, \
            launch_browser(tmp_path) as browser:
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        page = await browser.new_page()
        await page.goto(f"{client.base_url}/watch/default")  # offline yet
        assert (await page.evaluate(VISIBLE_TEXT))["offline"]
        url = (f"rtmp://127.0.0.1:{platform.rtmp_port}/{settings.rtmp_app}/"
               f"{platform.default_stream_key}")
        publisher = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(PUBLISH_S), "-c:v", "libx264", "-preset", "ultrafast", "-g", "250",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            live = await _poll(client, "/api/v1/broadcasts?state=live", auth, bool, 15)
            started = asyncio.get_running_loop().time()
            broadcasts = await _poll(client, "/api/v1/broadcasts?state=live", auth,
                                     _long_keyframes, WARNING_WITHIN_S + 2)
            assert asyncio.get_running_loop().time() - started < WARNING_WITHIN_S
            health = broadcasts[0]["health"]
            assert health["status"] == "warning"
            warning = next(w for w in health["warnings"]
                           if w["code"] == "long_keyframe_interval")
            assert "Keyframe Interval: 2 s" in warning["advice"]
            assert health["keyframe_interval_s"] > 2 and health["audio"] is True
            assert health["fps"] == pytest.approx(25, abs=1)
            assert live[0]["channel"] == "default"

            played = await wait_for_playback(page, advance_s=1.5, timeout_s=PUBLISH_S)
            assert played["hls"]
            seen = await _no_error_text(page)
            assert seen["offline"] is None  # hidden once playing
            _, stderr = await asyncio.wait_for(publisher.communicate(), PUBLISH_S + 30)
            assert publisher.returncode == 0, stderr.decode()
        finally:
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()

        vods = await _poll(client, "/api/v1/vods", auth,
                           lambda v: bool(v) and v[0]["state"] == "complete", 60)
        assert vods[0]["title"].startswith("default, ")
        vod_page = await browser.new_page()
        await vod_page.goto(f"{client.base_url}/watch/vod/{vods[0]['id']}")
        await wait_for_playback(vod_page, advance_s=1.5, timeout_s=30)
        await _no_error_text(vod_page)
        assert not vod_page.errors, vod_page.errors
