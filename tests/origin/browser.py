"""The headless Chromium of the page tests (:mod:`benchmarks.browser`, the CDP client the
player benchmark shares), and a wait for castway's own watch page to play.

    async with launch_browser(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8080/watch/demo")
        played = await wait_for_playback(page, advance_s=2, timeout_s=30)

``page.console`` and ``page.errors`` keep what the page logged, for failure messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks import browser
from benchmarks.browser import Browser, CdpError, Page
from tests.support import require_tool

__all__ = ["Browser", "CdpError", "Page", "launch_browser", "wait_for_playback"]


@contextlib.asynccontextmanager
async def launch_browser(workdir: Path | None = None, *,
                         flags: tuple[str, ...] = ()) -> AsyncIterator[Browser]:
    """Debian's chromium, headless, with a fresh profile (a failure in CI if missing)."""
    async with browser.launch_browser(require_tool("chromium"), workdir,
                                      flags=flags) as launched:
        yield launched


# Resolves once the watch page's video has advanced by `advance` seconds of playback.
_WAIT_FOR_PLAYBACK = """
new Promise((resolve, reject) => {
  const video = document.getElementById("video");
  const player = window.castwayPlayer || {hls: null, errors: []};
  let first = null;
  const check = () => {
    if (first === null && video.currentTime > 0) { first = video.currentTime; }
    if (first !== null && video.currentTime - first >= %(advance)s) {
      resolve({start: first, now: video.currentTime, hls: !!player.hls,
               latency: player.hls ? player.hls.latency : null,
               status: document.getElementById("status").textContent,
               errors: player.errors});
    }
  };
  video.addEventListener("timeupdate", check);
  setTimeout(() => reject(new Error("no playback: currentTime=" + video.currentTime +
      " readyState=" + video.readyState + " errors=" + JSON.stringify(player.errors))),
      %(limit)d);
  check();
})
"""


async def wait_for_playback(page: Page, *, advance_s: float,
                            timeout_s: float) -> dict[str, Any]:
    """Wait until the castway watch page (``/watch/...``) on ``page`` has played
    ``advance_s`` seconds; returns {start, now, hls (used hls.js), latency (hls.js's live
    latency estimate), status (the page's status line), errors (hls.js errors)}."""
    script = _WAIT_FOR_PLAYBACK % {"advance": advance_s, "limit": int(timeout_s * 1000)}
    result: dict[str, Any] = await page.evaluate(script, await_promise=True,
                                                 timeout_s=timeout_s + 10)
    return result


