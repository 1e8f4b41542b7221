"""SRT ingest end to end, as a streamer uses it: the ffmpeg CLI and srt-live-transmit (a
stack that is not castway's, libsrt's own tool) call the embedded platform's SRT port
with a stream key in the streamid; the broadcast plays as an HLS ladder while live, shows
its SRT statistics in the API and /metrics, and becomes a VOD holding every frame."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from castway.settings import Settings
from ingest.srt import libsrt
from launch.embedded import EmbeddedPlatform
from tests.support import make_test_media, packet_counts, require_tool

pytestmark = pytest.mark.skipif(not libsrt.available(), reason="libsrt not installed")
CLIP_S = 6.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publisher_command(tool: str, clip: Path, url: str) -> str:
    ffmpeg = require_tool("ffmpeg")
    paced = f"{ffmpeg} -nostdin -loglevel error -re -i {clip} -c copy -f mpegts"
    if tool == "ffmpeg":
        return f"{paced} {shlex.quote(url)}"
    slt = require_tool("srt-live-transmit")
    # It never exits at the end of its input: -t stops it once the clip is sent.
    return (f"{paced} - | {slt} -q -a:no -t:{int(CLIP_S) + 3} file://con "
            f"{shlex.quote(url)}")


async def poll(client: httpx.AsyncClient, url: str, headers: dict[str, str],
               ok: Any, timeout_s: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    body: Any = None
    while asyncio.get_running_loop().time() < deadline:
        response = await client.get(url, headers=headers)
        if response.status_code == 200:
            body = (response.json() if "json" in response.headers.get("content-type", "")
                    else response.text)
            if ok(body):
                return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never satisfied the condition; last body: {body!r}")


@pytest.mark.parametrize("tool", ["ffmpeg", "srt-live-transmit"])
async def test_srt_publish_plays_live_with_srt_stats_then_as_a_vod(
        tmp_path: Path, tool: str) -> None:
    clip = await asyncio.to_thread(make_test_media, tmp_path / "clip.ts", seconds=CLIP_S,
                                   width=320, height=180, fps=25)
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        srt_port=free_udp_port(), reconnect_grace_s=1)
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client:
        assert f"srt://127.0.0.1:{settings.srt_port}?streamid=" in platform.banner()
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        key = platform.default_stream_key
        # linger: the caller's last packets are delivered before it closes (ffmpeg's
        # default drops what is still in its send buffer: the last ~150 ms)
        streamid = f"#!::r=live/{key},m=publish" if tool == "ffmpeg" else key
        url = f"srt://127.0.0.1:{settings.srt_port}?streamid={streamid}&linger=3"
        # a session of its own: the whole pipeline is stopped, not just the shell
        publisher = await asyncio.create_subprocess_shell(
            publisher_command(tool, clip, url), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            master = await poll(client, "/hls/default/master.m3u8", {}, bool)
            assert "#EXT-X-STREAM-INF" in master
            live = await poll(client, "/api/v1/broadcasts?state=live", auth,
                              lambda b: b and b[0]["stats"].get("srt_recv_rate_mbps", 0) > 0)
            stats = live[0]["stats"]
            assert stats["srt_packets_dropped"] == 0 and 0 < stats["srt_rtt_ms"] < 1000
            metrics = (await client.get("/metrics")).text
            assert 'castway_ingest_srt_rtt_ms{channel="default"}' in metrics
            _, stderr = await asyncio.wait_for(publisher.communicate(), CLIP_S + 30)
            assert publisher.returncode == 0, stderr.decode()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(publisher.pid, signal.SIGKILL)
            await publisher.wait()
        vods = await poll(client, "/api/v1/vods", auth, bool, timeout_s=60)
        counts = await asyncio.to_thread(
            packet_counts, f"{client.base_url}/vod/{vods[0]['id']}/master.m3u8")
        published = await asyncio.to_thread(packet_counts, str(clip))
        assert len(counts["video"]) >= 2, counts  # the ladder: source + encoded rungs
        assert set(counts["video"]) == set(published["video"]), (counts, published)
        if tool == "ffmpeg":
            assert set(counts["audio"]) == set(published["audio"]), (counts, published)
        else:
            # srt-live-transmit drops the short last read of its input (the final audio
            # PES, 9 frames here): libsrt's own receiver (srt-live-transmit as listener)
            # records the same count from it.
            assert all(published["audio"][0] - 12 <= n <= published["audio"][0]
                       for n in counts["audio"]), (counts, published)


async def test_refusals_and_the_reconnect_grace_window_on_the_real_publish_path(
        tmp_path: Path) -> None:
    """Against BroadcastManager: a wrong key and a malformed streamid are refused at
    connect; a second caller on the live channel is refused while the first goes on; the
    first caller coming back within the grace window continues the same broadcast."""
    ffmpeg = require_tool("ffmpeg")
    clip = await asyncio.to_thread(make_test_media, tmp_path / "clip.ts", seconds=4,
                                   width=320, height=180, fps=25)
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        srt_port=free_udp_port(), reconnect_grace_s=5)
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client:
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        base = f"srt://127.0.0.1:{settings.srt_port}?streamid="

        async def publish(streamid: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip),
                "-c", "copy", "-f", "mpegts", f"{base}{streamid}&linger=3",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            return proc.returncode or 0, err.decode(errors="replace")

        for bad in ("#!::r=live/cw_not_a_key,m=publish", "#!::m=publish"):
            rc, err = await publish(bad)
            assert rc != 0 and "reject" in err.lower(), err
        key = platform.default_stream_key
        assert key is not None  # a fresh data directory: the default channel's key
        first = asyncio.create_task(publish(f"#!::r=live/{key},m=publish"))
        live = await poll(client, "/api/v1/broadcasts?state=live", auth, bool)
        rc, err = await publish(key)  # a second caller on the live channel
        assert rc != 0 and "reject" in err.lower(), err
        assert await first == (0, "")
        # back within the grace window: the same broadcast goes on
        assert await publish(key) == (0, "")
        again = await poll(client, "/api/v1/broadcasts?state=live", auth, bool)
        assert [b["id"] for b in again] == [live[0]["id"]]
        vods = await poll(client, "/api/v1/vods", auth, bool, timeout_s=60)
        assert len(vods) == 1 and vods[0]["duration_s"] >= 7.0
