"""The watch page plays the live broadcast in headless Chromium with hls.js (LL-HLS).

The app runs under uvicorn; the page is opened while the broadcast has no media yet (it
retries), then a feeder publishes real fMP4 parts (ffmpeg-made) in real time, as a
transcoder would; the test passes when the video's currentTime advances, hls.js reports a
live latency, and the origin saw part requests and woken blocking reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from castway.live.memory import MemoryLiveState
from origin import pages
from tests.origin.browser import launch_browser, wait_for_playback
from tests.origin.feed import Clip, LiveFeeder

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PART_PERIOD_S = 0.5  # a live source produces media in real time

WAIT_FOR_MANIFEST_ERROR = """
new Promise((resolve, reject) => {
  const check = () => window.castwayPlayer && window.castwayPlayer.errors.length > 0;
  if (check()) { resolve(true); return; }
  const timer = setInterval(() => { if (check()) { clearInterval(timer); resolve(true); } }, 50);
  setTimeout(() => reject(new Error("no manifest error")), 20000);
})
"""


async def _feed_in_real_time(feeder: LiveFeeder) -> None:
    while feeder.remaining > 0:
        await asyncio.sleep(PART_PERIOD_S)
        await feeder.push_part()


async def test_watch_page_plays_live_with_hls_js(server: str, live: MemoryLiveState,
                                                 clip: Clip, tmp_path: Path,
                                                 registry: CollectorRegistry) -> None:
    if not pages.HLS_JS.exists():
        pytest.skip("hls.js is not installed (sh web/install.sh)")
    feeder = LiveFeeder(live, clip)
    await feeder.start()  # live, but the transcoder has produced nothing yet
    feeding: asyncio.Task[None] | None = None
    try:
        async with launch_browser(tmp_path) as browser:
            page = await browser.new_page()
            await page.goto(f"{server}/watch/demo")
            # The page keeps trying until media appears.
            await page.evaluate(WAIT_FOR_MANIFEST_ERROR, await_promise=True, timeout_s=30)
            await feeder.push_segments(2)
            feeding = asyncio.create_task(_feed_in_real_time(feeder))
            result = await wait_for_playback(page, advance_s=1.5, timeout_s=20)
            assert result["hls"], "the page did not use hls.js"
            assert result["now"] - result["start"] >= 1.5
            assert "t=" in result["status"]
            assert not page.errors, page.errors
            assert all("manifestLoadError" in e for e in result["errors"]), result["errors"]
            # hls.js's live latency estimate: LL-HLS keeps it near PART-HOLD-BACK (1.5 s).
            assert 0 < result["latency"] < 6, result
            # hls.js really used LL-HLS: parts, and blocking reloads woken by new parts.
            parts = registry.get_sample_value("castway_origin_requests_total",
                                              {"kind": "part", "status": "200"})
            assert parts is not None and parts > 0
            woken = registry.get_sample_value("castway_origin_wakeup_seconds_count")
            assert woken is not None and woken > 0
    finally:
        if feeding is not None:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
