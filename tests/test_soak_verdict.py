"""The soak's memory verdict judges growth once bounded caches are full (benchmarks/soak.py):
a fill then a plateau is flat, a steady climb is growth, a short life is not judged."""

from __future__ import annotations

from benchmarks.soak import (
    FLAT_RSS,
    JUDGE_AFTER_S,
    SAMPLE_EVERY_S,
    Incarnation,
    judge,
    settled_growth,
)

LIFE = int(45 * 60 / SAMPLE_EVERY_S)  # samples of a 45-minute life


def fill_then_plateau(start: int, full: int, fill_samples: int) -> list[int]:
    return [start + (full - start) * min(i, fill_samples) // fill_samples
            for i in range(LIFE)]


def life(rss_kib: list[int], fds: list[int]) -> Incarnation:
    return Incarnation(pid=1, started=0.0, rss_kib=rss_kib, fds=fds)


def test_a_fill_then_a_plateau_is_flat_however_big_the_fill() -> None:
    # 120 -> 360 MiB over 10 minutes, then level: the old first-vs-last verdict said x3.
    rss = fill_then_plateau(120 * 1024, 360 * 1024, fill_samples=120)
    growth = settled_growth(rss)
    assert growth is not None
    assert growth.settled == 1.0 and growth.slope_per_h == 0.0
    verdict = judge(life(rss, fill_then_plateau(12, 40, fill_samples=60)))
    assert verdict["memory"] == "flat"
    assert verdict["rss_mib_thirds"] == [300.0, 360.0, 360.0]  # the fill is in the first


def test_a_steady_climb_after_the_fill_is_growth() -> None:
    # 40 MiB an hour on top of a plateau: 10 MiB between the middle and last thirds'
    # medians is under 5 % of 360 MiB, so the slope is what shows it.
    plateau = fill_then_plateau(120 * 1024, 360 * 1024, fill_samples=120)
    rss = [v + round(40 * 1024 * i * SAMPLE_EVERY_S / 3600) for i, v in enumerate(plateau)]
    growth = settled_growth(rss)
    assert growth is not None
    assert abs(growth.slope_per_h / 1024 - 40) < 0.5
    # A faster leak crosses the verdict's bound.
    rss = [v + round(200 * 1024 * i * SAMPLE_EVERY_S / 3600) for i, v in enumerate(plateau)]
    growth = settled_growth(rss)
    assert growth is not None and growth.settled > FLAT_RSS
    assert judge(life(rss, [20] * LIFE))["memory"] == "grows"


def test_descriptors_that_only_climb_are_growth() -> None:
    fds = [12 + i // 12 for i in range(LIFE)]  # one more a minute: a leaked pipe pair
    assert judge(life([300 * 1024] * LIFE, fds))["memory"] == "grows"


def test_a_life_too_short_to_fill_its_caches_is_not_judged() -> None:
    samples = int(JUDGE_AFTER_S / SAMPLE_EVERY_S) - 1
    assert settled_growth([1] * samples) is None
    verdict = judge(life([100 * 1024 + 1000 * i for i in range(samples)], [10] * samples))
    assert verdict["memory"] == "too short" and "rss_growth" not in verdict
