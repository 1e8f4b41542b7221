"""The whole platform in one run, as a viewer sees it: a real RTMP client (the ffmpeg CLI)
publishes to the embedded platform, the watch page plays the live broadcast in headless
Chromium, /metrics reports every component while it is live, the publisher stops, the
broadcast ends, and its VOD page plays.

PyAV as an RTMP *client* in the server's process blocks holding the GIL, so the publisher
is always the ffmpeg CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.origin.browser import launch_browser, wait_for_playback
from tests.support import make_test_media, require_hls_js, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

CLIP_S = 16.0  # long enough for a browser to start and play while the broadcast is live


Samples = dict[str, list[tuple[dict[str, str], float]]]


def _samples(text: str) -> Samples:
    """Prometheus text exposition -> {sample name: [(labels, value)]}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    assert name in samples, f"{name} is not exported"
    return sum(v for lbl, v in samples[name] if labels.items() <= lbl.items())


async def _poll(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                until: Any, timeout_s: float) -> Any:
    """Poll an HTTP API from outside (the platform has no event to wait on for a client)."""
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


def _check_live_metrics(samples: Samples) -> None:
    # ingest: one publisher, one live broadcast, a measured incoming bitrate
    assert _value(samples, "castway_ingest_publishes_total") >= 1
    assert _value(samples, "castway_ingest_live_broadcasts") == 1
    assert _value(samples, "castway_ingest_bitrate_kbps", channel="default") > 0
    assert _value(samples, "castway_ingest_received_bytes_total") > 0
    # transcoder: running, processing frames, segments written, lag and drops measured
    assert _value(samples, "castway_transcoder_fps") > 0
    assert 0 <= _value(samples, "castway_transcoder_lag_seconds") < 30
    assert _value(samples, "castway_transcoder_dropped_frames") >= 0
    assert _value(samples, "castway_transcoder_segments_total") > 0
    # uploader: nothing failing against local storage; the spool is measured
    assert _value(samples, "castway_uploader_retries_total") == 0
    assert _value(samples, "castway_uploader_spool_bytes") >= 0
    # origin: the player's requests by kind and status, blocking reloads in flight
    playlist_ok = [v for lbl, v in samples["castway_origin_requests_total"]
                   if lbl.get("status") == "200"]
    assert sum(playlist_ok) > 0, samples["castway_origin_requests_total"]
    kinds = {lbl["kind"] for lbl, _ in samples["castway_origin_requests_total"]}
    assert len(kinds) >= 2, kinds  # playlists and media at least
    assert _value(samples, "castway_origin_blocked_reloads") >= 0
    # scheduler: the embedded node is a fleet of one
    states = {lbl["state"]: v for lbl, v in samples["castway_scheduler_nodes"]}
    assert states.get("active") == 1, states
    assert set(states) >= {"starting", "active", "draining", "stopped", "lost"}, states


async def test_publish_watch_live_then_watch_the_vod(tmp_path: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    require_hls_js()
    clip = await asyncio.to_thread(make_test_media, tmp_path / "clip.flv", seconds=CLIP_S)
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1)
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client, \
            launch_browser(tmp_path) as browser:
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        url = (f"rtmp://127.0.0.1:{platform.rtmp_port}/{settings.rtmp_app}/"
               f"{platform.default_stream_key}")
        publisher = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
            "-f", "flv", url, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        try:
            page = await browser.new_page()
            await page.goto(f"{client.base_url}/watch/default")
            live = await wait_for_playback(page, advance_s=1.5, timeout_s=CLIP_S)
            assert live["hls"], "the watch page did not use hls.js"
            assert live["now"] - live["start"] >= 1.5

            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            _check_live_metrics(_samples(metrics.text))

            _, stderr = await asyncio.wait_for(publisher.communicate(), CLIP_S + 30)
            assert publisher.returncode == 0, stderr.decode()
        finally:
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()

        # The publisher is gone: after the reconnect grace the broadcast ends and its VOD
        # is archived.
        vods = await _poll(client, "/api/v1/vods", auth, bool, timeout_s=60)
        vod_id = vods[0]["id"]
        vod_page = await browser.new_page()
        await vod_page.goto(f"{client.base_url}/watch/vod/{vod_id}")
        played = await wait_for_playback(vod_page, advance_s=1.5, timeout_s=30)
        assert played["now"] - played["start"] >= 1.5
        assert not vod_page.errors, vod_page.errors
