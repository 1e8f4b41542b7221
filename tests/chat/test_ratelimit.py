"""Token buckets, driven by a hand-moved clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from chat.ratelimit import TokenBucket


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("rate", "burst", "steps", "expected"), [
    # (advance seconds before each take) -> taken?
    (1.0, 3, [0, 0, 0, 0], [True, True, True, False]),
    (1.0, 3, [0, 0, 0, 0.5, 0.5], [True, True, True, False, True]),
    (2.0, 1, [0, 0, 0.25, 0.25], [True, False, False, True]),
    (1.0, 2, [0, 0, 100, 0, 0, 0], [True, True, True, True, False, False]),  # capped at burst
    (10.0, 1, [0, 0.1, 0.1, 0.05], [True, True, True, False]),
])
def test_take(rate: float, burst: int, steps: list[float], expected: list[bool]) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock)
    results = []
    for step in steps:
        clock.now += step
        results.append(bucket.take())
    assert results == expected


def test_reserve_queues_bookings_behind_each_other_up_to_the_wait_limit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 2, clock)
    waits = [bucket.reserve(max_wait_s=1.0) for _ in range(8)]
    assert waits == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, None, None]
    clock.now += 0.5  # two tokens' worth later, the next booking waits less
    assert bucket.reserve(max_wait_s=1.0) == pytest.approx(0.75)


def test_a_refused_reservation_books_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.5) is None
    assert bucket.tokens == pytest.approx(0.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
