"""benchmarks.latency: a short run publishes to castway and nginx-rtmp and prints every figure."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.kit import NGINX_RTMP
from benchmarks.latency import main
from tests.support import require_peer_script, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def test_short_latency_run(capsys: pytest.CaptureFixture[str]) -> None:
    for tool in ("ffmpeg", "nginx"):
        require_tool(tool)
    script = require_peer_script(NGINX_RTMP)
    assert main(["--seconds", "8", "--warmup", "0", "--width", "320", "--height", "180",
                 "--nginx-script", str(script), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ll = report["castway-llhls"]
    # 3 x the declared part target (0.5 s and its 10 ms tolerance: every part within it)
    assert ll["parts"] > 0 and ll["part_hold_back_s"] == pytest.approx(1.53)
    # a part is listed shortly after its last frame was sent, never before it
    assert -0.1 < ll["part_edge_lag_p50_s"] < 5
    assert math.isclose(ll["player_latency_p50_s"],
                        ll["part_edge_lag_p50_s"] + ll["part_hold_back_s"])
    assert report["castway-hls"]["segments"] > 0
    assert report["nginx-rtmp"]["segments"] > 0
    assert report["nginx-rtmp"]["target_duration_s"] > 0
