"""benchmarks.origin: a short run against real nginx and wrk prints every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.origin import main
from tests.support import require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def test_short_bench_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for tool in ("wrk", "nginx", "ffmpeg"):
        require_tool(tool)
    out = tmp_path / "figures.json"
    assert main(["--seconds", "1", "--connections", "4", "--blocked", "20", "--rounds", "1",
                 "--single-rounds", "2", "--media-seconds", "8", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "segment (2 s fMP4)" in printed and "live playlist" in printed
    assert "20 concurrent x 1 rounds" in printed
    figures = json.loads(out.read_text())
    assert figures["segment (2 s fMP4)"]["origin_rps"] > 0
    assert figures["segment (2 s fMP4)"]["nginx_rps"] > 0
    assert figures["blocked_20"]["p99_ms"] > 0
