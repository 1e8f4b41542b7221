"""An encoder that sends its own ladder (E-RTMP v2 multitrack, OBS "Multitrack Video"),
end to end (issue 14): FFmpeg 8's FLV muxer (PyAV 18) publishes three H.264 video tracks
and AAC over RTMP to the embedded platform, at real-time pace.

- Aligned tracks, and a second AAC track: the master lists the three renditions, each
  the publisher's own track, and both audio tracks as audio renditions (the variants
  video only); hls.js in Chromium plays each video rendition and then the other audio;
  the transcoder child encodes nothing (its CPU per second of media is measured and
  printed), the API shows each track's figures, and the VOD has the same renditions.
- A track whose keyframes are not on the source's boundaries: castway encodes that
  rendition from the boundary it missed, and every playlist revision a player-like
  reader sees, live and in the VOD, passes the HLS rules (aligned segments included),
  the audio renditions' as well.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks import players
from benchmarks.browser import launch_browser
from benchmarks.kit import free_port
from benchmarks.players import PlayerPage, renditions_by_height, serve_pages
from castway.hls.findings import Rule
from castway.hls.reading import parse_multivariant
from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.hls_reader import Seen, check_vod, complete_vod, read_master, read_rendition
from tests.support import (
    finish_process,
    make_multitrack_media,
    packet_counts,
    poll_async,
    require_tool,
)

pytestmark = [pytest.mark.peer, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = ((640, 360), (426, 240), (284, 160))
NAMES = {"source", "240p", "160p"}
AUDIO = {"audio-t0", "audio-t1"}  # the broadcast's own audio, and its second track
SECONDS = 30.0  # the played-on broadcast's: long enough for every player in turn


# On castway's watch page: once its audio menu is up, pick the option named %(name)r;
# resolves with the options, whether audio-t1's media was then fetched, and how far the
# video played after the pick.
PICK_AUDIO = """
new Promise((resolve, reject) => {
  const started = Date.now();
  let picked = null;
  const timer = setInterval(() => {
    const select = document.getElementById("audio");
    const video = document.getElementById("video");
    if (picked === null && select && select.options.length > 1 && video.currentTime > 0) {
      const option = [...select.options].find(o => o.textContent === %(name)r);
      if (option) {
        select.value = option.value;
        select.dispatchEvent(new Event("change"));
        picked = {at: video.currentTime,
                  options: [...select.options].map(o => o.textContent)};
      }
    }
    if (picked !== null) {
      const fetched = performance.getEntriesByType("resource").some(
        e => e.name.includes("/audio-t1/") && e.name.split("?")[0].endsWith(".m4s"));
      const advanced = video.currentTime - picked.at;
      if (fetched && advanced >= 1.0 && window.castwayPlayer.hls.audioTrack === 1) {
        clearInterval(timer);
        resolve({options: picked.options, fetched, advanced});
      }
    }
    if (Date.now() - started > 25000) {
      clearInterval(timer);
      reject(new Error("audio menu: " + JSON.stringify(picked) + " errors " +
                       JSON.stringify(window.castwayPlayer.errors)));
    }
  }, 100);
})
"""


async def _publish(clip: Path, url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.pyav_publish", str(clip), url, "--realtime",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def test_an_encoder_sent_ladder_is_packaged_as_it_came_and_plays_in_hls_js(
        tmp_path: Path) -> None:
    if not all(players.installed(p) for p in ("hls.js", "shaka", "videojs")):
        pytest.fail("the web players are not installed (sh web/install.sh)")
    clip = await asyncio.to_thread(make_multitrack_media, tmp_path / "three.mkv", SIZES,
                                   seconds=SECONDS, audio_tracks=2)
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1)
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=10) as client, \
            launch_browser(require_tool("chromium"), tmp_path) as browser, \
            serve_pages(f"http://127.0.0.1:{platform.http_port}") as pages:
        url = (f"rtmp://127.0.0.1:{platform.rtmp_port}/{settings.rtmp_app}/"
               f"{platform.default_stream_key}")
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        publisher = await _publish(clip, url)
        page: PlayerPage | None = None
        others: list[PlayerPage] = []
        try:
            master_url = f"http://127.0.0.1:{platform.http_port}/hls/default/master.m3u8"

            async def master() -> str | None:
                response = await client.get(master_url)
                return response.text if response.status_code == 200 else None
            text = await poll_async("the master", master, 30)
            heights = renditions_by_height(text)
            assert sorted(heights) == [160, 240, 360], heights
            assert all(f'URI="{name}/index.m3u8"' in text for name in AUDIO), text
            page = await PlayerPage.open(browser, pages, "hls.js", master_url)
            await page.wait_played(1.0, 30)
            for height in (160, 240, 360):
                await page.switch_to_height(height, played_s=1.0, timeout_s=20)
            audio = await page.audio_tracks()
            assert [(t["name"], t["default"]) for t in audio or []] == \
                [("Main", True), ("Track 1", False)], audio
            await page.switch_audio("Track 1", rendition="audio-t1", played_s=2.0,
                                    timeout_s=20)
            played = await page.playback()
            assert not played.errors, played
            assert not page.page.errors, page.page.errors
            await page.close()
            page = None
            # Shaka Player and video.js play the demuxed broadcast too (its default audio).
            # One page at a time: Chromium holds back a page in the background, and opens
            # 6 connections to a host over HTTP/1.1 (each player holds two blocking playlist
            # requests); and not in the first seconds, where Shaka 5.2.12 fails to load
            # any broadcast (its caption probe, docs/origin.md).
            for other in ("shaka", "videojs"):
                other_page = await PlayerPage.open(browser, pages, other, master_url)
                others.append(other_page)
                await other_page.wait_played(2.0, 25)
                got = await other_page.playback()
                assert not got.errors and not other_page.page.errors, got
                assert await other_page.media_fetched("audio-t0"), got
                await other_page.close()
                others.remove(other_page)
            # The watch page offers the audio renditions, and plays the one picked.
            watch = await browser.new_page()
            await watch.goto(f"http://127.0.0.1:{platform.http_port}/watch/default")
            picked = await watch.evaluate(PICK_AUDIO % {"name": "Track 1"},
                                          await_promise=True, timeout_s=30)
            assert picked["options"] == ["Main", "Track 1"], picked
            assert picked["fetched"] and picked["advanced"] >= 1.0, picked
            assert not watch.errors, watch.errors

            live = (await client.get("/api/v1/broadcasts", params={"state": "live"},
                                     headers=auth)).json()[0]
            tracks = {r["name"]: (r["track"], r["height"], r["note"])
                      for r in live["renditions"]}
            assert tracks == {"source": (0, 360, ""), "240p": (1, 240, ""),
                              "160p": (2, 160, ""), "audio-t0": (0, None, ""),
                              "audio-t1": (1, None, "")}, tracks
            assert {r["name"] for r in live["renditions"] if r["alternate_audio"]} == AUDIO
            stats = live["stats"]
            for track in (1, 2):
                assert stats[f"track{track}_codec"] == "h264"
                assert stats[f"track{track}_fps"] > 20, stats
                assert stats[f"track{track}_bitrate_kbps"] > 0, stats
                assert stats[f"track{track}_keyframe_interval_s"] == pytest.approx(2.0,
                                                                                abs=0.05)
            assert stats["audio_track1_codec"] == "aac"
            assert stats["audio_track1_bitrate_kbps"] > 50, stats

            async def measured() -> dict[str, float] | None:
                got = (await client.get("/api/v1/broadcasts", params={"state": "live"},
                                        headers=auth)).json()
                stats = got[0]["stats"] if got else {}
                return stats if stats.get("cost_transcoder") else None
            costs = await poll_async("the transcoder's CPU measured", measured, 15)
            cpu = float(costs["cost_transcoder"])
            print(f"transcoder child: {cpu:.4f} CPU s per media s for 3 encoder-sent "
                  f"renditions and 2 audio renditions, nothing encoded; with the ingest "
                  f"process's share, {float(costs['cost_measured']):.4f}")
            # Packaging only: a real-time x264 ladder of even this small source costs
            # several tenths of a core.
            assert cpu < 0.05, cpu
        finally:
            for opened in ([page] if page is not None else []) + others:
                await opened.close()
            await finish_process(publisher, 40)
        made = await complete_vod(client, auth)
        durations = await check_vod(client, made["id"], NAMES | AUDIO)
        assert all(d == pytest.approx(SECONDS, abs=0.1) for d in durations.values()), \
            durations
        # The MP4 export takes the broadcast's own audio from its rendition: the
        # variants it is made from are video only.
        assert (await client.post(f"/api/v1/vods/{made['id']}/export",
                                  headers=auth)).status_code == 202

        async def exported() -> str | None:
            vod = (await client.get(f"/api/v1/vods/{made['id']}", headers=auth)).json()
            return str(vod["mp4_url"]) if vod["mp4_url"] else None
        mp4 = tmp_path / "export.mp4"
        mp4.write_bytes((await client.get(await poll_async("the export", exported, 60))).content)
        counts = await asyncio.to_thread(packet_counts, str(mp4))
        vod_master = parse_multivariant(
            (await client.get(f"/vod/{made['id']}/master.m3u8")).text)
        [main_audio] = [a.uri for a in vod_master.audio if a.uri.startswith("audio-t0/")]
        in_vod = await asyncio.to_thread(
            packet_counts, f"{client.base_url}/vod/{made['id']}/{main_audio}")
        assert counts == {"video": [int(SECONDS * 30)], "audio": in_vod["audio"]}, \
            (counts, in_vod)


async def test_a_track_with_keyframes_off_the_boundaries_is_encoded_and_the_ladder_stays_valid(
        tmp_path: Path) -> None:
    # The 160p track's keyframes come every 1.5 s, the source's every 2 s.
    clip = await asyncio.to_thread(make_multitrack_media, tmp_path / "off.mkv", SIZES,
                                   seconds=12.0, gops=(60, 60, 45), audio_tracks=2)
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1)
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=10) as client:
        url = (f"rtmp://127.0.0.1:{platform.rtmp_port}/{settings.rtmp_app}/"
               f"{platform.default_stream_key}")
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        publisher = await _publish(clip, url)
        seen = Seen()
        done = asyncio.Event()
        try:
            reading = asyncio.create_task(read_master(client, seen, time.monotonic(), done))

            async def first() -> str:
                assert not reading.done() or reading.exception() is None
                return seen.first_master
            await poll_async("the master", first, 30)
            master = parse_multivariant(seen.first_master)
            uris = [v.uri for v in master.variants] + [a.uri for a in master.audio]
            assert {u.split("/")[0] for u in uris} == NAMES | AUDIO
            await asyncio.gather(*(read_rendition(client, seen, uri) for uri in uris))
            done.set()
            await reading
        finally:
            done.set()
            await finish_process(publisher, 30)
        # The master follows the measured peaks on purpose (docs/origin.md): with the
        # audio measured apart from the video, a variant's own rise or its group's shows.
        findings = [f for f in seen.findings if f.rule is not Rule.VARIANT_BANDWIDTH_CHANGED]
        assert findings == [], "\n".join(map(str, findings))
        assert seen.stopped == set()
        made = await complete_vod(client, auth)
        durations = await check_vod(client, made["id"], NAMES | AUDIO)
        assert all(d == pytest.approx(12.0, abs=0.1) for d in durations.values()), durations
        ended = (await client.get(f"/api/v1/broadcasts/{made['broadcast_id']}",
                                  headers=auth)).json()
        renditions = {r["name"]: r for r in ended["renditions"]}
        assert renditions["240p"]["track"] == 1
        assert renditions["160p"]["track"] is None
        assert "keyframes are not on the source's segment boundaries" in \
            renditions["160p"]["note"]


async def test_a_streamer_who_sends_what_the_encoder_configuration_asked_gets_it_passed_through(
        tmp_path: Path) -> None:
    """OBS Multitrack Video with castway's configuration URL, emulated: the ladder the
    endpoint asks an OBS 32 streamer with a 854x480p30 canvas, an NVIDIA GPU and the VOD
    track on for is encoded (one H.264 track per encoder configuration, keyframes every
    ``keyint_sec``, the VOD track as audio track 1) and published where OBS would (the
    URL template without "/{stream_key}", the key with OBS's ``?clientConfigId=``).
    Every rendition of the broadcast is one of its tracks."""
    # The URL handed out names a port, so it is one picked now, not an ephemeral one.
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=free_port(), http_port=0,
                        reconnect_grace_s=1, host="127.0.0.1")
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=10) as client:
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        asked = (await client.post("/api/v1/encoder-configuration", json={
            "service": "IVS", "schema_version": "2025-01-25",
            "authentication": platform.default_stream_key,
            "client": {"name": "obs-studio", "version": "32.0.2"},
            "capabilities": {"gpu": [{"model": "NVIDIA GeForce RTX 4070",
                                      "vendor_id": 0x10DE}]},
            "preferences": {"vod_track_audio": True, "canvases": [
                {"width": 854, "height": 480, "canvas_width": 854, "canvas_height": 480,
                 "framerate": {"numerator": 30, "denominator": 1}}]}})).json()
        assert asked["status"]["result"] == "success", asked
        # The VOD track's encoder: OBS sends it as audio track 1.
        assert [a["track_id"] for a in asked["audio_configurations"]["vod"]] == [1]
        encoders = asked["encoder_configurations"]
        sizes = tuple((e["width"], e["height"]) for e in encoders)
        assert sizes == ((854, 480), (640, 360), (284, 160))
        keyint = {e["settings"]["keyint_sec"] for e in encoders}
        assert len(keyint) == 1
        clip = await asyncio.to_thread(
            make_multitrack_media, tmp_path / "asked.mkv", sizes, seconds=8.0,
            gops=(30 * keyint.pop(),) * len(sizes), audio_tracks=2)
        template = asked["ingest_endpoints"][0]["url_template"]
        server = template[:template.index("/{stream_key}")]
        url = (f"{server}/{platform.default_stream_key}"
               f"?clientConfigId={asked['meta']['config_id']}")
        await finish_process(await _publish(clip, url), 30)
        made = await complete_vod(client, auth)
        await check_vod(client, made["id"], {"source", "360p", "160p"} | AUDIO)
        ended = (await client.get(f"/api/v1/broadcasts/{made['broadcast_id']}",
                                  headers=auth)).json()
        assert {r["name"]: r["track"] for r in ended["renditions"]} == {
            "source": 0, "360p": 1, "160p": 2, "audio-t0": 0, "audio-t1": 1}
