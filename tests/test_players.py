"""Real players play what castway serves: hls.js, Shaka Player and video.js (VHS), the
builds npm installs (web/package.json), each on a page of another origin in headless
Chromium (benchmarks/players.py); and ffmpeg's HLS demuxer reads every rendition of a VOD.

One ``castway serve`` for the module, an ABR ladder (a 640x360 source: the source
rendition and 160p), two publishers (the ffmpeg CLI): a live one looping for as long as
the module runs, and a short one whose broadcast ends and is archived as the VOD. For
each player, and for each of: the live LL-HLS ladder, the live standard-HLS ladder
(``?ll=0``: no parts, no blocking reloads) and the VOD, the player starts (retrying the
master while the broadcast has no media: 404, or 503 + Retry-After), plays, then is
forced through its API onto the other rendition: the new rendition's media is fetched
and its frames play, and the player reports no error.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from benchmarks import players
from benchmarks.browser import Browser, launch_browser
from benchmarks.players import PlayerPage, renditions_by_height, serve_pages
from tests.serve_process import Served, serve
from tests.support import make_test_media, poll, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

VOD_CHANNEL = "archive"
VOD_S = 8.0
START_TIMEOUT_S = 60.0  # the first case also waits for the broadcast to start
PLAY_S = 1.5
SWITCHED_PLAY_S = 1.0
SWITCH_TIMEOUT_S = 20.0
# Loose bounds for a loaded 2-core CI machine; `castway bench latency --players` measures.
LL_LATENCY_MAX_S = 6.0  # hls.js ~1.8 s, Shaka ~2.5 s, VHS ~3.2 s on loopback
STANDARD_LATENCY_MAX_S = 15.0


@dataclass(frozen=True)
class Stage:
    served: Served
    vod_id: str


def _publish(ffmpeg: str, clip: Path, url: str, *, loop: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-re",
         *(["-stream_loop", "-1"] if loop else []), "-i", str(clip), "-c", "copy",
         "-f", "flv", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    if not all(players.installed(p) for p in players.PLAYERS):
        pytest.fail("the web players are not installed (sh web/install.sh)")
    ffmpeg = require_tool("ffmpeg")
    workdir = tmp_path_factory.mktemp("players")
    live_clip = make_test_media(workdir / "live.flv", seconds=10.0, gop=30)
    vod_clip = make_test_media(workdir / "vod.flv", seconds=VOD_S, gop=30)
    with serve(workdir / "data") as served:
        with httpx.Client(base_url=served.base, headers=served.admin_headers()) as api:
            created = api.post("/api/v1/channels", json={"name": VOD_CHANNEL})
            assert created.status_code == 201, created.text
            vod_key = created.json()["stream_key"]["stream_key"]
        rtmp = f"rtmp://127.0.0.1:{served.rtmp_port}/live"
        live = _publish(ffmpeg, live_clip, f"{rtmp}/{served.stream_key()}", loop=True)
        archived = _publish(ffmpeg, vod_clip, f"{rtmp}/{vod_key}", loop=False)
        try:
            assert archived.wait(timeout=60) == 0

            def vod_id() -> str | None:
                found = httpx.get(f"{served.base}/api/v1/vods", params={"channel": VOD_CHANNEL},
                                  headers=served.admin_headers(), timeout=10).json()
                done = [v for v in found if v["channel"] == VOD_CHANNEL
                        and v["state"] == "complete"]
                return done[0]["id"] if done else None

            yield Stage(served, poll("the VOD", vod_id, timeout_s=60))
        finally:
            _stop(live)
            _stop(archived)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    async with launch_browser(require_tool("chromium"),
                              tmp_path_factory.mktemp("chromium")) as launched:
        yield launched


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pages(stage: Stage) -> AsyncIterator[str]:
    async with serve_pages(stage.served.base) as base:
        yield base


async def _play_and_switch(browser: Browser, pages: str, player: str, master_url: str,
                           *, live: bool) -> PlayerPage:
    """Play, then force the other rendition; returns the page (open) for more checks."""
    async with httpx.AsyncClient(timeout=10) as client:
        heights = renditions_by_height((await _master(client, master_url)).text)
    assert len(heights) >= 2, heights
    page = await PlayerPage.open(browser, pages, player, master_url)
    try:
        await page.wait_played(PLAY_S, START_TIMEOUT_S)
        before = await page.playback()
        assert not before.errors, before
        if live:
            assert before.latencies, f"{player} reported no PROGRAM-DATE-TIME: {before}"
        playing = (await page.state())["samples"][-1]["height"]
        target = next(h for h in heights if h != playing)
        await page.switch_to_height(target, played_s=SWITCHED_PLAY_S,
                                    timeout_s=SWITCH_TIMEOUT_S)
        fetched = await page.media_fetched(heights[target])
        assert fetched, f"{player}: no {heights[target]} media fetched"
        after = await page.playback()
        assert not after.errors, after
        assert not page.page.errors, page.page.errors
        return page
    except BaseException:
        await page.close()
        raise


async def _master(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """The master, waiting (as the players do) while the broadcast has no media yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        response = await client.get(url)
        if response.status_code == 200 or loop.time() > deadline:
            assert response.status_code == 200, response.text
            return response
        await asyncio.sleep(float(response.headers.get("retry-after", "0.5")))


@pytest.mark.parametrize("player", players.PLAYERS)
async def test_plays_the_live_ll_hls_ladder(stage: Stage, browser: Browser, pages: str,
                                            player: str) -> None:
    page = await _play_and_switch(browser, pages, player,
                                  f"{stage.served.base}/hls/default/master.m3u8", live=True)
    try:
        played = await page.playback(settle_s=0.5)
        assert 0 < played.median_latency_s < LL_LATENCY_MAX_S, played
    finally:
        await page.close()


@pytest.mark.parametrize("player", players.PLAYERS)
async def test_plays_the_live_standard_hls_ladder(stage: Stage, browser: Browser,
                                                  pages: str, player: str) -> None:
    page = await _play_and_switch(browser, pages, player,
                                  f"{stage.served.base}/hls/default/master.m3u8?ll=0",
                                  live=True)
    try:
        played = await page.playback(settle_s=0.5)
        assert 0 < played.median_latency_s < STANDARD_LATENCY_MAX_S, played
        # a plain RFC 8216 ladder: no part was ever asked for
        parts = await page.page.evaluate(
            "performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(u => /\\/\\d+\\.\\d+\\.m4s/.test(u))")
        assert not parts, parts[:5]
    finally:
        await page.close()


@pytest.mark.parametrize("player", players.PLAYERS)
async def test_plays_the_vod(stage: Stage, browser: Browser, pages: str,
                             player: str) -> None:
    page = await _play_and_switch(browser, pages, player,
                                  f"{stage.served.base}/vod/{stage.vod_id}/master.m3u8",
                                  live=False)
    await page.close()


async def test_ffmpeg_reads_every_rendition_of_the_vod(stage: Stage) -> None:
    ffprobe = require_tool("ffprobe")
    master = f"{stage.served.base}/vod/{stage.vod_id}/master.m3u8"
    async with httpx.AsyncClient(timeout=10) as client:
        renditions = renditions_by_height((await client.get(master)).text)
    assert len(renditions) >= 2, renditions
    for name in renditions.values():
        url = f"{stage.served.base}/vod/{stage.vod_id}/{name}/vod.m3u8"
        probe = await asyncio.to_thread(
            subprocess.run,
            [ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
             "-show_entries", "stream=nb_read_frames", "-of", "json", url],
            capture_output=True, text=True, timeout=60, check=False)
        assert probe.returncode == 0 and not probe.stderr, (name, probe.stderr)
        frames = int(json.loads(probe.stdout)["streams"][0]["nb_read_frames"])
        assert frames >= (VOD_S - 1) * 30, (name, frames)  # every frame at 30 fps
