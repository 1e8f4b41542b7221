"""``castway bench edge`` runs end to end (a short run: 2 publishers through ``castway
edge`` and through nginx-rtmp's push) and reports each relay's CPU and RSS per publisher,
their ratio, and the delay the relay adds, idle and loaded; the probe's frame marks
survive a relay's parse and re-serialisation."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import edge
from tests.support import require_tool


def test_a_mark_reads_back_from_the_end_of_a_payload() -> None:
    body = bytes((0x27, 0x01, 0, 0, 0)) + b"\x00\x00\x00\x02\x41\x9a"
    marked = edge.mark(body, 1234)
    assert marked.startswith(body)
    assert edge.read_mark(marked[5:]) == 1234  # the payload a relay parses: header off
    assert edge.read_mark(body[5:]) is None
    assert b"\x00\x00\x03" not in marked[len(body) + 4:]  # no emulation prevention needed


def test_flv_tags_leave_out_script_data_and_the_end_of_sequence() -> None:
    def tag(kind: int, ts: int, body: bytes) -> bytes:
        head = bytes((kind,)) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(
            3, "big") + bytes((ts >> 24,)) + b"\x00\x00\x00"
        return head + body + (11 + len(body)).to_bytes(4, "big")

    data = (b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"
            + tag(18, 0, b"\x02meta") + tag(9, 0, b"\x17\x00\x00\x00\x00cfg")
            + tag(8, 0, b"\xaf\x00\x12\x10") + tag(9, 33, b"\x17\x01\x00\x00\x00idr")
            + tag(9, 0x1000000, b"\x27\x01\x00\x00\x00p") + tag(9, 40, b"\x17\x02\x00\x00\x00"))
    tags = edge.read_flv_tags(data)
    assert [(t.kind.value, t.timestamp_ms, t.is_config) for t in tags] == [
        ("video", 0, True), ("audio", 0, True), ("video", 33, False),
        ("video", 0x1000000, False)]


@pytest.mark.peer
@pytest.mark.slow
def test_a_short_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("ffmpeg")
    require_tool("redis-server")
    with_nginx = shutil.which("nginx") is not None and edge.NGINX_MODULE.exists()
    argv = ["--publishers", "2", "--duration", "3", "--idle", "1.5", "--baseline", "0.5",
            "--warmup", "0.5", "--clip-seconds", "2", "--json"]
    assert edge.main(argv if with_nginx else [*argv, "--no-nginx"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clip_mbps"] > 2.5  # the 3 Mbit/s clip
    for relay in ("castway", "nginx") if with_nginx else ("castway",):
        figures = report[relay]
        assert figures["publishers_alive"] == 2, figures
        assert figures["relayed_at_node"] >= 2, figures
        assert figures["cpu_s_per_publisher_s"] > 0, figures
        assert figures["rss_loaded_mb"] > 0, figures
        for window in ("delay_idle", "delay_loaded"):
            delay = figures[window]
            assert delay["relayed"]["frames"] > 10, delay
            assert delay["relayed"]["lost"] == 0, delay
            assert delay["direct"]["lost"] == 0, delay
            assert set(delay["added"]) == {"median_ms", "p95_ms", "max_ms"}
            assert 0 <= delay["relayed"]["median_ms"] < 1000, delay
    if with_nginx:
        assert report["cpu_ratio"] > 0
