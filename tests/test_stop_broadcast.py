"""Stopping a live broadcast: ``POST /api/v1/broadcasts/{id}/stop`` and the admin page's
Stop button.

The API sends the stop to the ingest node named on the broadcast (``node-commands:
{node_id}``); that node disconnects the publisher, ends the broadcast at once -- no
reconnect grace window, which these tests set to 30 s to show it is not waited out --
and the archiver makes its VOD as for any end. Real processes, a real ffmpeg publisher,
in the embedded mode (``castway serve``: one process, in-process live state) and the
distributed one (a ``castway ingest`` process; the origin and the archiver here; Redis
between them). The figures (stop to the publisher's exit) are printed: ``pytest -s``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from archiver.service import ArchiverService
from castway.keys import generate_stream_key, hash_stream_key
from castway.model import Channel, StreamKey
from castway.settings import Settings
from launch.services import Services
from origin.app import create_app
from origin.context import OriginContext
from tests.origin.browser import launch_browser
from tests.origin.test_browser import WAIT_FOR_TEXT
from tests.serve_process import serve
from tests.support import (
    free_ports,
    make_test_media,
    poll,
    require_tool,
    serve_app,
    wait_for_port,
)
from tests.test_ingest_process import LogWatcher

# Resolves once the admin page's live table has the broadcast's row (refreshed every 2 s).
WAIT_FOR_ROW = """
new Promise((resolve, reject) => {
  const found = () => document.querySelector('#live tr[data-broadcast="%(id)s"]');
  const poll = setInterval(() => { if (found()) { clearInterval(poll); resolve(true); } },
                           100);
  setTimeout(() => { clearInterval(poll); reject(new Error("no row for %(id)s")); }, 15000);
})
"""

pytestmark = [pytest.mark.peer, pytest.mark.slow]

T = TypeVar("T")

#: The acceptance bound: the publisher is gone this soon after the API call.
DISCONNECT_WITHIN_S = 2.0
#: Longer than any wait below: an end that waited for the publisher would show.
GRACE_S = 30.0
#: The broadcast is ended (its media finished, the catalog written) well before GRACE_S.
ENDED_WITHIN_S = 15.0
VOD_WITHIN_S = 60.0
TOKEN = "test-admin-token-stop-0123456789"
LADDER = '{"rungs": [{"name": "90p", "height": 90, "video_bitrate_kbps": 100}]}'




@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Longer than any test runs: the publisher never ends by itself."""
    return make_test_media(tmp_path_factory.mktemp("media") / "clip.flv", seconds=120.0,
                           width=320, height=180, gop=30)


@pytest.fixture
def media_env(tmp_path: Path) -> dict[str, str]:
    """A light ladder (two shared cores): source + 90p, 1 s segments."""
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    return {"CASTWAY_RECONNECT_GRACE_S": str(GRACE_S), "CASTWAY_LADDER": str(ladder),
            "CASTWAY_X264_PRESET": "ultrafast", "CASTWAY_TARGET_SEGMENT_S": "1"}


@pytest.fixture
def publisher(clip: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error",
                                 "-re", "-i", str(clip), "-c", "copy", "-f", "flv", url],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@dataclass
class Api:
    base: str
    headers: dict[str, str]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}/api/v1{path}", headers=self.headers, timeout=10)

    def live_with_media(self, channel: str) -> str | None:
        """The channel's live broadcast once its playlist has two segments (its VOD will
        have something in it)."""
        live = [b for b in self.get("/broadcasts?state=live").json() if b["channel"] == channel]
        if not live:
            return None
        playlist = httpx.get(f"{self.base}/hls/{channel}/source/index.m3u8?ll=0", timeout=10)
        if playlist.status_code != 200 or len(re.findall(r"#EXTINF", playlist.text)) < 2:
            return None
        return str(live[0]["id"])

    def ended_with_vod(self, broadcast_id: str, stopped_at: float) -> None:
        """The broadcast ends at once, not after the grace window, and its VOD is made."""
        poll("the broadcast ended",
             lambda: self.get(f"/broadcasts/{broadcast_id}").json()["state"] == "ended",
             ENDED_WITHIN_S)
        assert time.monotonic() - stopped_at < GRACE_S
        vod = poll("a complete VOD", lambda: self._complete_vod(broadcast_id), VOD_WITHIN_S)
        assert vod["duration_s"] >= 2.0, vod
        again = httpx.post(f"{self.base}/api/v1/broadcasts/{broadcast_id}/stop",
                           headers=self.headers, timeout=10)
        assert again.status_code == 409  # ended: nothing left to stop

    def _complete_vod(self, broadcast_id: str) -> dict[str, Any] | None:
        response = self.get(f"/vods/{broadcast_id}")
        if response.status_code != 200 or response.json()["state"] != "complete":
            return None
        vod: dict[str, Any] = response.json()
        return vod


def stop_and_time_the_disconnect(api: Api, broadcast_id: str,
                                 publisher: subprocess.Popen[bytes], mode: str) -> float:
    """POST the stop; seconds until the publisher's ffmpeg has exited."""
    started = time.monotonic()
    response = httpx.post(f"{api.base}/api/v1/broadcasts/{broadcast_id}/stop",
                          headers=api.headers, timeout=10)
    assert response.status_code == 202, response.text
    return wait_for_exit(publisher, started, mode)


def wait_for_exit(publisher: subprocess.Popen[bytes], started: float, mode: str) -> float:
    try:
        publisher.wait(timeout=DISCONNECT_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the publisher was still streaming {DISCONNECT_WITHIN_S} s after "
                    f"the stop")
    took = time.monotonic() - started
    print(f"\nstop to publisher disconnected ({mode}): {took * 1000:.0f} ms")
    return took


def test_stop_disconnects_the_publisher_and_makes_the_vod_in_castway_serve(
        tmp_path: Path, media_env: dict[str, str],
        publisher: Callable[[str], subprocess.Popen[bytes]]) -> None:
    with serve(tmp_path / "data", preexec_fn=None, **media_env) as served:
        api = Api(served.base, served.admin_headers())
        ffmpeg = publisher(f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}")
        broadcast_id = poll("a live broadcast with media",
                            lambda: api.live_with_media("default"), 60)
        stopped_at = time.monotonic()
        assert stop_and_time_the_disconnect(api, broadcast_id, ffmpeg, "embedded") \
            < DISCONNECT_WITHIN_S
        api.ended_with_vod(broadcast_id, stopped_at)


# --- the distributed mode: a `castway ingest` process, Redis ---------------------------

@contextmanager
def ingest_process(data_dir: Path, redis_url: str,
                   media_env: dict[str, str]) -> Iterator[int]:
    """``castway ingest`` on ``data_dir``'s catalog and storage; yields its RTMP port."""
    rtmp_port, http_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env.update(media_env, CASTWAY_REDIS_URL=redis_url, CASTWAY_LOG_JSON="true",
               CASTWAY_NODE_ID="ingest-stop-test")
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "ingest", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", "--rtmp-port", str(rtmp_port), "--http-port", str(http_port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env)
    log = LogWatcher(proc.stderr)
    try:
        wait_for_port(rtmp_port, timeout_s=60, proc=proc)  # type: ignore[arg-type]
        log.wait_for("ingest node up")
        yield rtmp_port
        assert log.has("broadcast stopped by request"), log.text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.join()


@asynccontextmanager
async def origin_and_archiver(settings: Settings) -> AsyncIterator[tuple[Services, Api]]:
    """The control API (uvicorn) and an archiver, in this process, on Redis."""
    services = Services.open(settings)
    archiver = ArchiverService(settings, services.catalog, services.live, services.storage)
    app = create_app(settings, catalog=services.catalog, live=services.live,
                     storage=services.storage, registry=services.registry)
    await archiver.start()
    try:
        async with serve_app(app) as base:
            yield services, Api(base, {"Authorization": f"Bearer {TOKEN}"})
    finally:
        ctx: OriginContext = app.state.origin
        await ctx.notifier.close()
        await archiver.stop()
        await services.close()


async def test_stop_reaches_a_separate_ingest_process_over_redis(
        tmp_path: Path, redis_url: str, media_env: dict[str, str],
        publisher: Callable[[str], subprocess.Popen[bytes]]) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, redis_url=redis_url, admin_token=TOKEN,
                        archive_reconcile_interval_s=1.0)
    async with origin_and_archiver(settings) as (services, api):
        key = generate_stream_key()
        services.catalog.create_channel(Channel("alpha"))
        services.catalog.add_stream_key(StreamKey("alpha", hash_stream_key(key)))
        with ingest_process(data_dir, redis_url, media_env) as rtmp_port:
            ffmpeg = publisher(f"rtmp://127.0.0.1:{rtmp_port}/live/{key}")
            broadcast_id = await asyncio.to_thread(
                poll, "a live broadcast with media", lambda: api.live_with_media("alpha"), 60)
            live = await services.live.get_broadcast(broadcast_id)
            assert live is not None and live.node_id == "ingest-stop-test"
            stopped_at = time.monotonic()
            took = await asyncio.to_thread(stop_and_time_the_disconnect, api, broadcast_id,
                                           ffmpeg, "distributed, Redis")
            assert took < DISCONNECT_WITHIN_S
            await asyncio.to_thread(api.ended_with_vod, broadcast_id, stopped_at)


# --- the admin page --------------------------------------------------------------------

async def test_the_admin_pages_stop_button_stops_the_broadcast(
        tmp_path: Path, media_env: dict[str, str],
        publisher: Callable[[str], subprocess.Popen[bytes]]) -> None:
    with serve(tmp_path / "data", preexec_fn=None, **media_env) as served:
        api = Api(served.base, served.admin_headers())
        token = served.admin_headers()["Authorization"].removeprefix("Bearer ")
        ffmpeg = publisher(f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}")
        broadcast_id = await asyncio.to_thread(
            poll, "a live broadcast with media", lambda: api.live_with_media("default"), 60)
        async with launch_browser(tmp_path) as browser:
            page = await browser.new_page()
            await page.goto(f"{served.base}/admin")
            await page.evaluate(f"document.getElementById('token').value = {token!r};"
                                "document.getElementById('save').click()")
            # The page's refresh is done (it ends by saying so) and lists the broadcast.
            await page.evaluate(WAIT_FOR_TEXT % {"id": "who", "needle": "token accepted"},
                                await_promise=True)
            await page.evaluate(WAIT_FOR_ROW % {"id": broadcast_id}, await_promise=True)
            stopped_at = time.monotonic()
            await page.evaluate(f"document.querySelector('#live tr[data-broadcast="
                                f"\"{broadcast_id}\"] button').click()")
            took = await asyncio.to_thread(wait_for_exit, ffmpeg, stopped_at, "admin page")
            assert took < DISCONNECT_WITHIN_S
            said = await page.evaluate(WAIT_FOR_TEXT % {"id": "who", "needle": "stopping"},
                                       await_promise=True)
            assert broadcast_id in said
            assert not page.errors, page.errors
        await asyncio.to_thread(api.ended_with_vod, broadcast_id, stopped_at)
