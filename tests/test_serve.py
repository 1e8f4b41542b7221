"""`castway serve`, the README's first command, as a user runs it: a real process on free
ports that answers /healthz, prints what OBS needs, lets `castway channels create` work
beside it, takes a real RTMP publish, plays it as HLS, and stops cleanly on SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve_process import Served, clean_env, serve
from tests.support import packet_counts, require_tool


def _castway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env or clean_env(), check=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path / "data") as running:
        yield running


def test_serve_answers_healthz_and_prints_what_obs_needs(served: Served) -> None:
    assert httpx.get(f"{served.base}/healthz").status_code == 200
    assert httpx.get(f"{served.base}/readyz").status_code == 200
    assert f"rtmp://127.0.0.1:{served.rtmp_port}/live" in served.banner
    assert served.stream_key()
    assert "/watch/default" in served.banner
    assert f"http://127.0.0.1:{served.http_port}/whip/default" in served.banner
    assert (served.data_dir / "admin_token").stat().st_mode & 0o077 == 0


def test_channels_create_works_beside_the_running_server(served: Served) -> None:
    result = _castway("channels", "create", "x", "--json", "--data-dir", str(served.data_dir))
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["channel"] == "x" and created["stream_key"].startswith("cw_")
    token = (served.data_dir / "admin_token").read_text().strip()
    listed = httpx.get(f"{served.base}/api/v1/channels",
                       headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    assert "x" in {c["name"] for c in listed.json()}
    again = _castway("channels", "create", "x", "--data-dir", str(served.data_dir))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_sigint_stops_every_component(served: Served) -> None:
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(timeout=30) == 0


def test_a_real_publish_plays_as_hls_then_as_vod(served: Served, h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    url = f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}"
    publish = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i",
                              str(h264_aac_flv), "-c", "copy", "-f", "flv", url],
                             capture_output=True, text=True, timeout=60, check=False)
    assert publish.returncode == 0, publish.stderr

    token = (served.data_dir / "admin_token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 30
    vods: list[dict[str, object]] = []
    while time.monotonic() < deadline and not vods:
        vods = httpx.get(f"{served.base}/api/v1/vods", headers=auth).json()
        if not vods:
            time.sleep(0.2)  # polling an HTTP API from outside the process
    assert vods, "no VOD appeared after the broadcast ended"
    vod_id = vods[0]["id"]
    counts = packet_counts(f"{served.base}/vod/{vod_id}/master.m3u8")
    published = packet_counts(str(h264_aac_flv))
    assert len(counts["video"]) >= 2, counts  # the ladder: source + encoded rungs
    # every rendition holds every frame and every audio packet that was published
    assert set(counts["video"]) == set(published["video"]), counts
    assert set(counts["audio"]) == set(published["audio"]), counts
