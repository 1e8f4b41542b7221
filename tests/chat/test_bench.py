"""The benchmark's entry point, at toy scale (the real run: python -m benchmarks.chat)."""

from __future__ import annotations

import json

import pytest

from benchmarks.chat import histogram_quantile, main
from tests.support import require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def test_main_runs_servers_checks_delivery_and_reports(redis_url: str,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    require_tool("redis-server")
    code = main(["--clients", "20", "--channels", "3", "--senders-per-channel", "2",
                 "--messages-per-sender", "3", "--send-interval", "0.02",
                 "--redis-url", redis_url, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["problems"] == []
    assert report["sent"] == 3 * 2 * 3
    assert report["deliveries"] == report["expected_deliveries"] == 20 * 2 * 3
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert 0 < report["server_fanout_p99_le_ms"]
    assert report["deliveries_per_s"] > 0


@pytest.mark.parametrize(("q", "expected"), [(0.5, 0.01), (0.9, 0.1), (0.99, float("inf"))])
def test_histogram_quantile_is_the_bucket_upper_bound(q: float, expected: float) -> None:
    buckets = {0.001: 10.0, 0.01: 50.0, 0.1: 95.0, float("inf"): 100.0}
    assert histogram_quantile(buckets, q) == expected
