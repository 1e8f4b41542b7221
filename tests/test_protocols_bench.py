"""``castway bench protocols`` runs end to end (a short run: RTMP and SRT), and reports
for each protocol an edge lag, what it adds against RTMP, and ingest CPU."""

from __future__ import annotations

import json

import pytest

from benchmarks import protocols
from tests.support import require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def test_a_short_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("ffmpeg")
    assert protocols.main(["--seconds", "6", "--protocols", "rtmp,srt", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for protocol in ("rtmp", "srt"):
        figures = report[protocol]
        assert figures["parts"] > 0
        assert 0 < figures["edge_lag_p50_s"] < 3, figures
        assert figures["bitrate_kbps"] > 1000  # the 720p clip, received
        assert figures["cpu_core_share"] >= 0
    assert report["rtmp"]["added_vs_rtmp_s"] == 0
