"""The day simulator: the workload's shape, and castway against the two baselines."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from scheduler.simulate import (
    Workload,
    castway_strategy,
    compare,
    default_policy,
    peak_live,
    report,
    run,
)

SMALL = Workload(hours=6.0, warmup_h=3.0, peak_hour=4.0, trough_rate_per_min=0.2,
                 peak_rate_per_min=1.0, deploy_at_h=4.0)


def test_arrivals_peak_at_night_and_durations_are_heavy_tailed() -> None:
    w = Workload()
    assert w.rate_per_s(22 * 3600) == pytest.approx(w.peak_rate_per_min / 60)
    assert w.rate_per_s(10 * 3600) < w.rate_per_s(22 * 3600) / 4
    broadcasts = w.broadcasts()
    assert broadcasts == w.broadcasts()  # seeded: every strategy sees the same day
    durations = sorted(d for _, d, _ in broadcasts)
    median = durations[len(durations) // 2]
    assert 0.7 < median / (w.median_duration_min * 60) < 1.4
    assert durations[-1] > 10 * median  # the tail
    assert durations[-1] <= w.max_duration_h * 3600


def test_castway_never_interrupts_nor_refuses_through_a_deploy() -> None:
    figures = run(SMALL, castway_strategy(default_policy()))
    assert figures.broadcasts > 100
    assert figures.interrupted == 0 and figures.refused == 0
    assert figures.container_hours >= figures.ideal_container_hours


def test_reconnect_capable_publishers_leave_draining_nodes_at_once() -> None:
    without = run(SMALL, castway_strategy(default_policy()))
    with_reconnect = run(replace(SMALL, reconnect_fraction=1.0),
                         castway_strategy(default_policy()))
    assert with_reconnect.moved > 0 and with_reconnect.interrupted == 0
    assert with_reconnect.refused == 0
    assert with_reconnect.container_hours < without.container_hours


def test_baselines_interrupt_broadcasts_castway_does_not() -> None:
    results = compare(SMALL, default_policy())
    assert results["castway"].interrupted == 0
    assert results["cpu_autoscaler"].interrupted > 0  # scale-in and rolling deploy cut
    assert results["fixed_fleet"].interrupted > 0  # the rolling deploy cuts
    out = report(results)
    for key in ("interrupted", "container_hours", "ideal_container_hours", "refused"):
        assert key in out and key in out["cpu_autoscaler"] and key in out["fixed_fleet"]
    fixed = results["fixed_fleet"]
    size = math.ceil(peak_live(SMALL) * 1.2 / 8)
    assert fixed.peak_nodes >= size
