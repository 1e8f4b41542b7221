"""``castway bench transcode`` on a tiny source: both sides run and the report adds up."""

from __future__ import annotations

import json

import pytest

from benchmarks.transcode import main
from tests.support import require_tool


@pytest.mark.peer
def test_bench_reports_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("ffmpeg")
    assert main(["--seconds", "1", "--width", "640", "--height", "360",
                 "--preset", "ultrafast"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ladder"] == ["source", "160p"]
    assert report["source"]["frames"] == 30
    for side in ("castway", "ffmpeg"):
        assert report[side]["returncode"] == 0
        assert report[side]["fps"] > 0 and report[side]["peak_rss_mb"] > 0
    assert report["fps_ratio"] == pytest.approx(
        report["castway"]["fps"] / report["ffmpeg"]["fps"], rel=0.01)
    assert "split=1" in report["ffmpeg_command"] and "libx264" in report["ffmpeg_command"]
