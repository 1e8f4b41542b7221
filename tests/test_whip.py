"""WHIP ingest from a WebRTC stack that is not castway's: headless Chromium (libwebrtc)
with a fake camera and microphone posts its offer to ``POST /whip/{channel}`` of the
embedded platform, publishes H.264 and Opus, then DELETEs its session. The live ladder
plays (ffprobe reads it), the broadcast ends with the DELETE, and its VOD is whole.
Refusals on the way: a wrong key, another channel's key, an offer with VP9 only (no codec
castway takes), a second publisher on the live channel -- each a clear HTTP answer, the
broadcast unaffected. A publisher that sends VP8 only is encoded once as H.264 at ingest.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.origin.browser import Page, launch_browser
from tests.support import poll_async, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PUBLISH_S = 12.0
HANDSHAKE_TIMEOUT_S = 3.0
FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              "--allow-loopback-in-peer-connection",
              "--disable-features=WebRtcHideLocalIpsWithMdns")

# A WHIP client as a page would write one: the offer waits for its ICE candidates (no
# trickle), the stream key goes as a bearer token. `codec` puts one codec first (or
# alone, with `only`).
PUBLISH = """
(async function (url, key, codec, only, trickle, abandon) {
  const stream = await navigator.mediaDevices.getUserMedia(
      {video: {width: 640, height: 360, frameRate: 25}, audio: true});
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) {
    const t = pc.addTransceiver(track, {direction: "sendonly"});
    if (track.kind === "video") {
      const all = RTCRtpSender.getCapabilities("video").codecs;
      const first = all.filter(c => c.mimeType === codec);
      t.setCodecPreferences(only ? first : first.concat(all.filter(c => c.mimeType !== codec)));
    }
  }
  const gathered = [];
  pc.addEventListener("icecandidate", (e) => { if (e.candidate) { gathered.push(e.candidate); } });
  await pc.setLocalDescription(await pc.createOffer());
  // Trickle: the offer goes at once, without candidates; they follow in PATCHes
  // (RFC 9725 4.3.1, fragments as in RFC 8840). Else: the offer waits for them.
  const offer = trickle ? pc.localDescription.sdp.replace(/^a=candidate:.*\\r\\n/gm, "")
                        : null;
  if (!trickle) {
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") { resolve(); return; }
      pc.addEventListener("icegatheringstatechange",
                          () => { if (pc.iceGatheringState === "complete") { resolve(); } });
      setTimeout(resolve, 5000);
    });
  }
  const response = await fetch(url, {method: "POST", body: offer || pc.localDescription.sdp,
      headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + key}});
  const text = await response.text();
  if (response.status !== 201) { pc.close(); return {status: response.status, text: text}; }
  if (abandon) { pc.close(); return {status: 201}; }
  await pc.setRemoteDescription({type: "answer", sdp: text});
  const location = response.headers.get("Location");
  const patches = [];
  if (trickle) {
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") { resolve(); return; }
      pc.addEventListener("icegatheringstatechange",
                          () => { if (pc.iceGatheringState === "complete") { resolve(); } });
      setTimeout(resolve, 5000);
    });
    const sdp = pc.localDescription.sdp;
    const ufrag = sdp.match(/a=ice-ufrag:(.*)/)[1], pwd = sdp.match(/a=ice-pwd:(.*)/)[1];
    for (const c of gathered) {
      const fragment = "a=ice-ufrag:" + ufrag + "\\r\\na=ice-pwd:" + pwd + "\\r\\nm=audio 9 " +
          "UDP/TLS/RTP/SAVPF 0\\r\\na=mid:" + c.sdpMid + "\\r\\na=" + c.candidate + "\\r\\n";
      const r = await fetch(location, {method: "PATCH", body: fragment,
          headers: {"Content-Type": "application/trickle-ice-sdpfrag"}});
      patches.push(r.status);
    }
  }
  window.whip = {pc: pc, location: location};
  return {status: 201, location: location, answer: text, patches: patches,
          offered_candidates: (offer || pc.localDescription.sdp).includes("a=candidate:")};
})(%s)
"""

CONNECTED = """
new Promise((resolve) => {
  const pc = window.whip.pc;
  const check = () => { if (pc.connectionState === "connected") { resolve(true); } };
  pc.addEventListener("connectionstatechange", check); check();
  setTimeout(() => resolve(pc.connectionState), 10000);
})
"""


async def _publish(page: Page, url: str, key: str, codec: str = "video/H264",
                   only: bool = False, trickle: bool = False,
                   abandon: bool = False) -> dict[str, Any]:
    args = ", ".join(json.dumps(a) for a in (url, key, codec, only, trickle, abandon))
    result: dict[str, Any] = await page.evaluate(PUBLISH % args, await_promise=True,
                                                 timeout_s=30)
    return result


def _probe(url: str) -> dict[str, Any]:
    out = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-show_entries",
         "stream=codec_name,codec_type,width,height:format=duration", "-of", "json", url],
        capture_output=True, text=True, timeout=60, check=True).stdout
    probed: dict[str, Any] = json.loads(out)
    return probed


async def test_chromium_publishes_over_whip_and_its_broadcast_plays_live_and_as_a_vod(
        tmp_path: Path) -> None:
    require_tool("chromium")
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1, x264_preset="ultrafast",
                        whip_ice_addresses="127.0.0.1", handshake_timeout_s=HANDSHAKE_TIMEOUT_S)
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client, \
            launch_browser(tmp_path, flags=FAKE_MEDIA) as browser:
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        key = platform.default_stream_key
        assert key is not None
        other = (await client.post("/api/v1/channels", headers=auth,
                                   json={"name": "other"})).json()["stream_key"]["stream_key"]
        endpoint = f"{client.base_url}/whip/default"
        page = await browser.new_page()
        await page.goto(f"{client.base_url}/healthz")  # loopback: a secure context

        # Refusals before anything is live: nothing is claimed by them.
        wrong = await _publish(page, endpoint, "cw_not-a-key")
        assert wrong["status"] == 401, wrong
        foreign = await _publish(page, endpoint, other)
        assert foreign["status"] == 401 and "named channel" in foreign["text"], foreign
        vp9 = await _publish(page, endpoint, key, codec="video/VP9", only=True)
        assert vp9["status"] == 406 and "no usable video codec" in vp9["text"], vp9
        assert (await client.get("/api/v1/broadcasts?state=live", headers=auth)).json() == []

        # A session whose handshake never finishes (the answer is never applied, so the
        # browser's ICE cannot answer castway's checks) is closed at the handshake
        # timeout, and the channel it claimed is free again.
        abandoned = await _publish(page, endpoint, key, abandon=True)
        assert abandoned["status"] == 201, abandoned

        async def channel_free() -> bool:
            found = (await client.get("/api/v1/broadcasts?state=live", headers=auth)).json()
            return bool(found == [])

        await asyncio.sleep(0.5)
        assert not await channel_free()  # claimed while the handshake runs
        await poll_async("the abandoned session is closed and its broadcast ends",
                    channel_free, HANDSHAKE_TIMEOUT_S + 6)

        published = await _publish(page, endpoint, key)
        assert published["status"] == 201, published
        assert published["location"].startswith("/whip/default/")
        assert "H264" in published["answer"] and "opus" in published["answer"].lower()
        assert await page.evaluate(CONNECTED, await_promise=True, timeout_s=20) is True

        async def live() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = (await client.get(
                "/api/v1/broadcasts?state=live", headers=auth)).json()
            return found or None

        broadcast = (await poll_async("the WHIP broadcast goes live", live, 15))[0]
        assert broadcast["channel"] == "default"

        async def master() -> bool:
            return (await client.get("/hls/default/master.m3u8")).status_code == 200

        await poll_async("the live master is served", master, 20)
        # A second publisher on the live channel: refused, the first goes on.
        second_page = await browser.new_page()
        await second_page.goto(f"{client.base_url}/healthz")
        second = await _publish(second_page, endpoint, key)
        assert second["status"] == 409, second
        live_source = await asyncio.to_thread(
            _probe, f"{client.base_url}/hls/default/source/index.m3u8?ll=0")
        kinds = {s["codec_type"]: s for s in live_source["streams"]}
        assert kinds["video"]["codec_name"] == "h264"  # passed through, not re-encoded
        assert (kinds["video"]["width"], kinds["video"]["height"]) == (640, 360)
        assert "audio" in kinds, live_source
        print(f"live source over WHIP: {kinds['video']['codec_name']} "
              f"{kinds['video']['width']}x{kinds['video']['height']}, "
              f"audio {kinds['audio']['codec_name']}")

        await asyncio.sleep(PUBLISH_S)
        deleted = await page.evaluate(
            "fetch(window.whip.location, {method: 'DELETE'}).then(r => r.status)",
            await_promise=True)
        assert deleted == 200

        async def ended() -> bool:
            got = (await client.get(f"/api/v1/broadcasts/{broadcast['id']}",
                                    headers=auth)).json()
            return bool(got["state"] == "ended")

        await poll_async("the broadcast ends with the DELETE", ended, 10)

        async def vod() -> dict[str, Any] | None:
            got = (await client.get(f"/api/v1/vods/{broadcast['id']}", headers=auth))
            body: dict[str, Any] = got.json() if got.status_code == 200 else {}
            return body if body.get("state") == "complete" else None

        made = await poll_async("the VOD is complete", vod, 60)
        probed = await asyncio.to_thread(
            _probe, f"{client.base_url}/vod/{made['id']}/master.m3u8")
        duration = float(probed["format"]["duration"])
        print(f"VOD: {duration:.2f} s for {PUBLISH_S:g} s published after the master")
        assert PUBLISH_S < duration < PUBLISH_S + 12, duration
        assert {s["codec_type"] for s in probed["streams"]} >= {"video", "audio"}


async def test_a_vp8_only_publisher_trickling_its_candidates_is_encoded_as_h264_at_ingest(
        tmp_path: Path) -> None:
    require_tool("chromium")
    settings = Settings(data_dir=tmp_path / "data", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1, x264_preset="ultrafast",
                        whip_ice_addresses="127.0.0.1")
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client, \
            launch_browser(tmp_path, flags=FAKE_MEDIA) as browser:
        auth = {"Authorization": f"Bearer {platform.admin_token}"}
        assert platform.default_stream_key is not None
        page = await browser.new_page()
        await page.goto(f"{client.base_url}/healthz")
        # This publisher trickles its ICE candidates (PATCH) instead of putting them in
        # the offer: the session connects on the trickled ones alone.
        published = await _publish(page, f"{client.base_url}/whip/default",
                                   platform.default_stream_key, codec="video/VP8", only=True,
                                   trickle=True)
        assert published["status"] == 201, published
        assert "VP8" in published["answer"] and "H264" not in published["answer"]
        assert not published["offered_candidates"]
        assert published["patches"] and set(published["patches"]) == {204}, published

        async def master() -> bool:
            return (await client.get("/hls/default/master.m3u8")).status_code == 200

        await poll_async("the live master is served", master, 20)
        live_source = await asyncio.to_thread(
            _probe, f"{client.base_url}/hls/default/source/index.m3u8?ll=0")
        video = next(s for s in live_source["streams"] if s["codec_type"] == "video")
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
        await asyncio.sleep(4)
        # The operator's stop (the API) cuts the WebRTC publisher, as it cuts RTMP's.
        live = (await client.get("/api/v1/broadcasts?state=live", headers=auth)).json()
        stopped = await client.post(f"/api/v1/broadcasts/{live[0]['id']}/stop", headers=auth)
        assert stopped.status_code == 202
        state = await page.evaluate("""new Promise((resolve) => {
            const pc = window.whip.pc;
            const check = () => { if (pc.connectionState !== "connected") {
                resolve(pc.connectionState); } };
            pc.addEventListener("connectionstatechange", check); check();
            setTimeout(() => resolve(pc.connectionState), 15000); })""",
                                    await_promise=True, timeout_s=20)
        assert state in ("closed", "failed", "disconnected"), state

        async def vod() -> dict[str, Any] | None:
            found = (await client.get("/api/v1/vods", headers=auth)).json()
            return found[0] if found and found[0]["state"] == "complete" else None

        made = await poll_async("the VOD is complete", vod, 60)
        probed = await asyncio.to_thread(
            _probe, f"{client.base_url}/vod/{made['id']}/master.m3u8")
        print(f"VP8 over WHIP -> {video['codec_name']} {video['width']}x{video['height']}; "
              f"VOD {float(probed['format']['duration']):.2f} s")
        assert float(probed["format"]["duration"]) > 4
