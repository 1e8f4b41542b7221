"""Private live channels, clips and MP4 export on a real platform (issue #20): ``castway
serve`` as a process, a real ffmpeg publisher, ffprobe reading what the API hands out.

One broadcast on a private channel: its live playlists, parts and segments refuse an
unsigned request and serve a grant's; a clip of its last 30 s is made and playable
within a second of the request; once stopped, its VOD is private too, and its MP4
export, started through the API, downloads from the API's ``mp4_url`` with the right
duration. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.serve_process import serve
from tests.support import make_test_media, poll, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

LADDER = '{"rungs": [{"name": "90p", "height": 90, "video_bitrate_kbps": 100}]}'
CLIP_S = 30.0
#: The acceptance bound: a clip plays this soon after the request.
CLIP_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_media(tmp_path_factory.mktemp("media") / "clip.flv", seconds=120.0,
                           width=320, height=180, gop=30)


@pytest.fixture
def publisher(media: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error",
                                 "-re", "-i", str(media), "-c", "copy", "-f", "flv", url],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def cookie_header(grant: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in grant["cookies"].items())


def probe(url: str, cookie: str | None = None) -> tuple[float, dict[str, Any]]:
    """ffprobe's duration of ``url`` (its HLS demuxer passes the Cookie header on to
    every playlist and segment request); fails on any error it reports."""
    args = [require_tool("ffprobe"), "-v", "error", "-show_entries",
            "format=duration:stream=codec_type", "-of", "json"]
    if cookie is not None:
        args += ["-headers", f"Cookie: {cookie}\r\n"]
    result = subprocess.run([*args, url], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr[-2000:]
    info: dict[str, Any] = json.loads(result.stdout)
    return float(info["format"]["duration"]), info


def test_private_channel_clip_and_export_on_castway_serve(
        tmp_path: Path, publisher: Callable[[str], subprocess.Popen[bytes]]) -> None:
    ladder = tmp_path / "ladder.json"
    ladder.write_text(LADDER)
    env = {"CASTWAY_LADDER": str(ladder), "CASTWAY_X264_PRESET": "ultrafast",
           "CASTWAY_TARGET_SEGMENT_S": "1"}
    with serve(tmp_path / "data", preexec_fn=None, **env) as served, \
            httpx.Client(base_url=served.base, timeout=30) as http:
        auth = served.admin_headers()

        def api(method: str, path: str, **kw: Any) -> httpx.Response:
            return http.request(method, f"/api/v1{path}", headers=auth, **kw)

        channel = api("PATCH", "/channels/default", json={"live_visibility": "private"})
        assert channel.status_code == 200 and channel.json()["live_visibility"] == "private"
        grant = api("POST", "/channels/default/grant", json={"ttl_s": 900}).json()
        cookie = {"Cookie": cookie_header(grant)}
        publisher(f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}")

        def enough_media() -> bool:
            dvr = http.get("/hls/default/source/dvr.m3u8", headers=cookie)
            return dvr.status_code == 200 and dvr.text.count("#EXTINF") >= CLIP_S + 3

        poll(f"{CLIP_S + 3:g} s of live media", enough_media, 120)
        playlist = http.get("/hls/default/source/index.m3u8", headers=cookie).text

        # -- private live: 403 unsigned, 200 with the grant (by URL and by cookies) --
        segment = urljoin("/hls/default/source/index.m3u8",
                          [ln for ln in playlist.splitlines() if ln.endswith(".m4s")
                           and not ln.startswith("#")][-1])
        part = urljoin("/hls/default/source/index.m3u8",
                       re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', playlist)[-1])
        init = urljoin("/hls/default/source/index.m3u8",
                       re.findall(r'#EXT-X-MAP:URI="([^"]+)"', playlist)[-1])
        query = grant["master_url"].split("?", 1)[1]
        for url in ("/hls/default/master.m3u8", "/hls/default/source/index.m3u8",
                    "/hls/default/source/dvr.m3u8", segment, part, init):
            assert http.get(url).status_code == 403, url
            assert http.get(url, headers=cookie).status_code == 200, url
            assert http.get(f"{url}?{query}").status_code == 200, url
        live_id = segment.split("/")[4]
        assert http.get(f"/hls/b/{live_id}/source/{segment.rsplit('/', 1)[1]}"
                        ).status_code == 403
        print(f"\nprivate live: 403 unsigned, 200 signed on {segment}, {part}, {init}")

        # -- a clip of the last 30 s, playable within a second --
        asked = time.monotonic()
        made = api("POST", f"/broadcasts/{live_id}/clips", json={"last_s": CLIP_S})
        answered = time.monotonic() - asked
        assert made.status_code == 201, made.text
        clip = made.json()
        assert clip["clip"] and clip["broadcast_id"] == live_id
        assert clip["visibility"] == "private"  # the source's rule
        clip_master = f"/vod/{clip['id']}/master.m3u8"
        assert http.get(clip_master).status_code == 403
        clip_grant = api("POST", f"/vods/{clip['id']}/grant", json={}).json()
        clip_cookie = cookie_header(clip_grant)
        first = http.get(clip_master, headers={"Cookie": clip_cookie})
        playable = time.monotonic() - asked
        assert first.status_code == 200 and playable < CLIP_WITHIN_S, playable
        duration, info = probe(served.base + clip_master, clip_cookie)
        probed = time.monotonic() - asked
        assert abs(duration - CLIP_S) <= 1.5, duration
        assert {s["codec_type"] for s in info["streams"]} >= {"video", "audio"}
        print(f"clip of the last {CLIP_S:g} s: API answered in {answered * 1000:.0f} ms, "
              f"master playlist served {playable * 1000:.0f} ms after the request, "
              f"ffprobe read all of it (duration {duration:.2f} s) "
              f"{probed:.2f} s after the request")

        # -- the end: the VOD is private too; its export through the API --
        assert api("POST", f"/broadcasts/{live_id}/stop").status_code == 202
        vod = poll("a complete VOD", lambda: (
            v if (r := api("GET", f"/vods/{live_id}")).status_code == 200
            and (v := r.json())["state"] == "complete" else None), 90)
        assert vod["visibility"] == "private"
        assert http.get(f"/vod/{live_id}/master.m3u8").status_code == 403
        vod_grant = api("POST", f"/vods/{live_id}/grant", json={}).json()
        vod_cookie = cookie_header(vod_grant)
        assert http.get(f"/vod/{live_id}/master.m3u8",
                        headers={"Cookie": vod_cookie}).status_code == 200
        # The channel's grant opens neither the VOD nor the ended broadcast's media.
        assert http.get(f"/vod/{live_id}/master.m3u8?{query}").status_code == 403

        started = time.monotonic()
        export = api("POST", f"/vods/{live_id}/export")
        assert export.status_code == 202, export.text
        again = api("POST", f"/vods/{live_id}/export")
        assert again.status_code in (200, 202)  # the same export, not a second one
        done = poll("the MP4 export", lambda: (
            v if (v := api("GET", f"/vods/{live_id}").json())["mp4_url"] else None), 120)
        exported = time.monotonic() - started
        assert done["mp4_progress"] == 1.0
        mp4_url = done["mp4_url"]
        assert http.get(mp4_url).status_code == 403  # a private VOD's MP4 too
        download = http.get(mp4_url, headers={"Cookie": vod_cookie})
        assert download.status_code == 200
        assert download.headers["content-type"] == "video/mp4"
        mp4 = tmp_path / "export.mp4"
        mp4.write_bytes(download.content)
        mp4_duration, mp4_info = probe(str(mp4))
        assert abs(mp4_duration - vod["duration_s"]) <= 1.0, (mp4_duration, vod)
        assert {s["codec_type"] for s in mp4_info["streams"]} == {"video", "audio"}
        assert api("POST", f"/vods/{live_id}/export").status_code == 200  # already done
        print(f"export of a {vod['duration_s']:.1f} s VOD: mp4_url after {exported:.2f} s, "
              f"{len(download.content)} bytes, ffprobe duration {mp4_duration:.2f} s")
