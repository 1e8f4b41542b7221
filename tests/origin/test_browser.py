"""The pages in headless Chromium: the watch page plays the live broadcast with hls.js
(LL-HLS), and the admin page drives the control API.

The app runs under uvicorn; the page is opened while the broadcast has no media yet (it
retries), then a feeder publishes real fMP4 parts (ffmpeg-made) in real time, as a
transcoder would; the test passes when the video's currentTime advances, hls.js reports a
live latency, and the origin saw part requests and woken blocking reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from castway.catalog.sql import SqlCatalog
from castway.hls.playlist import PlaylistType, render_master_playlist, render_media_playlist
from castway.keys import hash_stream_key
from castway.live.base import RenditionWindow
from castway.live.memory import MemoryLiveState
from castway.model import Rendition, Segment, Visibility, Vod, VodState
from castway.storage.local import LocalStorage
from tests.origin.browser import launch_browser, wait_for_playback
from tests.origin.conftest import TOKEN
from tests.origin.feed import Clip, LiveFeeder, make_clip
from tests.support import require_hls_js

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


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """30 s of media: room for a slow browser start on a loaded machine."""
    return make_clip(tmp_path_factory.mktemp("long-clip"), seconds=30.0)


async def test_watch_page_plays_live_with_hls_js(server: str, live: MemoryLiveState,
                                                 long_clip: Clip, tmp_path: Path,
                                                 registry: CollectorRegistry) -> None:
    require_hls_js()
    feeder = LiveFeeder(live, long_clip)
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


# Resolves with the text of element `id` once it contains `needle`.
WAIT_FOR_TEXT = """
new Promise((resolve, reject) => {
  const element = document.getElementById(%(id)r);
  const check = () => element.textContent.includes(%(needle)r);
  if (check()) { resolve(element.textContent); return; }
  const observer = new MutationObserver(() => {
    if (check()) { observer.disconnect(); resolve(element.textContent); }
  });
  observer.observe(element, {childList: true, subtree: true, characterData: true});
  setTimeout(() => reject(new Error(%(id)r + ": " + element.textContent)), 15000);
})
"""


async def test_admin_page_creates_a_channel_and_shows_its_key_once(
        server: str, tmp_path: Path, catalog: SqlCatalog) -> None:
    async with launch_browser(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(f"{server}/admin")
        await page.evaluate(f"document.getElementById('token').value = {TOKEN!r};"
                            "document.getElementById('save').click()")
        await page.evaluate(WAIT_FOR_TEXT % {"id": "who", "needle": "token accepted"},
                            await_promise=True)
        await page.evaluate("document.getElementById('name').value = 'from-browser';"
                            "document.getElementById('title').value = '<i>Title</i>';"
                            "document.getElementById('create').requestSubmit()")
        key_text = await page.evaluate(WAIT_FOR_TEXT % {"id": "key", "needle": "cw_"},
                                       await_promise=True)
        listed = await page.evaluate(WAIT_FOR_TEXT % {"id": "channels",
                                                      "needle": "from-browser"},
                                     await_promise=True)
        assert "<i>Title</i>" in listed  # shown as text, never as markup
        assert not page.errors, page.errors
    key = key_text.split("(shown once): ", 1)[1].split()[0]
    assert catalog.channel_for_key_hash(hash_stream_key(key)) == "from-browser"


async def test_admin_page_reports_a_wrong_token(server: str, tmp_path: Path) -> None:
    async with launch_browser(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(f"{server}/admin")
        await page.evaluate("document.getElementById('token').value = 'wrong';"
                            "document.getElementById('save').click()")
        message = await page.evaluate(WAIT_FOR_TEXT % {"id": "who", "needle": "401"},
                                      await_promise=True)
        assert "invalid token" in message


async def test_vod_page_plays_from_storage(server: str, tmp_path: Path, clip: Clip,
                                           catalog: SqlCatalog, storage: LocalStorage) -> None:
    """An archived broadcast as the archiver stores it: init, segments and VOD playlists
    (rendered by castway.hls) in storage, the VOD in the catalog."""
    require_hls_js()
    prefix = "broadcasts/v1/360p"
    storage.put(f"{prefix}/init.mp4", clip.init)
    segments = []
    for msn in range(len(clip.parts) // 4):
        data = b"".join(clip.parts[4 * msn:4 * msn + 4])
        storage.put(f"{prefix}/{msn}.m4s", data)
        segments.append(Segment(msn=msn, duration_s=sum(clip.durations[4 * msn:4 * msn + 4]),
                                key=f"{prefix}/{msn}.m4s", start_pts_s=2.0 * msn,
                                program_date_time=datetime.now(UTC) + timedelta(seconds=2 * msn),
                                init_key=f"{prefix}/init.mp4", size=len(data)))
    window = RenditionWindow(segments=tuple(segments), next_msn=len(segments),
                             init_key=f"{prefix}/init.mp4", ended=True)
    storage.put(f"{prefix}/vod.m3u8", render_media_playlist(
        window, uri_for_key=lambda k: k.rsplit("/", 1)[1],
        playlist_type=PlaylistType.VOD).encode())
    rendition = Rendition("360p", clip.width, clip.height, 30.0, 300.0, clip.codecs)
    storage.put("broadcasts/v1/master.m3u8", render_master_playlist(
        [rendition], uri_for=lambda r: f"{r.name}/vod.m3u8").encode())
    catalog.save_vod(Vod(id="v1", broadcast_id="v1", channel="demo",
                         visibility=Visibility.PUBLIC, state=VodState.COMPLETE,
                         duration_s=2.0 * len(segments)))
    async with launch_browser(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(f"{server}/watch/vod/v1")
        result = await wait_for_playback(page, advance_s=1.5, timeout_s=20)
        assert result["hls"] and not result["errors"], result
        assert not page.errors, page.errors
