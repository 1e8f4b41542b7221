"""``castway check`` pointed at castway itself: a real ``castway serve``, a real ffmpeg
RTMP publisher, the live ladder followed from the first master fetch, then the VOD.

Two sources: keyframes every 2 s, and every 250 frames (8.3 s at 30 fps: the keyframe
drought OBS users cause with a high keyframe interval, longer than the live run's
first segments). Neither may show a violation, live or as a VOD."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from castway.hls.findings import Finding, Severity
from conformance.follow import check_stream
from conformance.report import to_text
from tests.serve_process import serve
from tests.support import poll, require_tool

LIVE_SECONDS = 14.0


@dataclass
class Checked:
    live: list[Finding]
    vod: list[Finding]


def _violations(findings: list[Finding]) -> list[str]:
    return sorted({f.rule.value for f in findings if f.severity is Severity.VIOLATION})


@pytest.fixture(scope="module", params=[60, 250], ids=["gop-2s", "gop-250"])
def checked(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checked]:
    gop: int = request.param
    ffmpeg = require_tool("ffmpeg")
    with serve(tmp_path_factory.mktemp("check") / "data") as served:
        url = f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}"
        publisher = subprocess.Popen(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-re",
             "-f", "lavfi", "-i", "testsrc2=size=854x480:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(LIVE_SECONDS + 4), "-c:v", "libx264", "-preset", "ultrafast",
             "-tune", "zerolatency", "-g", str(gop), "-keyint_min", str(gop),
             "-sc_threshold", "0", "-bf", "0", "-b:v", "2500k", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "128k", "-f", "flv", url])
        try:
            master = f"{served.base}/hls/default/master.m3u8"
            poll("the first live master", lambda: httpx.get(master).status_code == 200, 30)
            live, live_run = check_stream(master, seconds=LIVE_SECONDS)
            print(to_text(live_run, live.findings))
            assert publisher.wait(timeout=60) == 0
        finally:
            if publisher.poll() is None:
                publisher.kill()
                publisher.wait()
        vods = poll("the VOD", lambda: httpx.get(f"{served.base}/api/v1/vods",
                                                 headers=served.admin_headers()).json(), 60)
        vod, vod_run = check_stream(f"{served.base}/vod/{vods[0]['id']}/master.m3u8",
                                    seconds=10)
        print(to_text(vod_run, vod.findings))
        assert live_run.segments > 0 and vod_run.segments > 0
        yield Checked(live.findings, vod.findings)


@pytest.mark.peer
@pytest.mark.slow
def test_castway_live_ladder_has_no_violation(checked: Checked) -> None:
    assert _violations(checked.live) == []


@pytest.mark.peer
@pytest.mark.slow
def test_castway_vod_has_no_violation(checked: Checked) -> None:
    assert _violations(checked.vod) == []
