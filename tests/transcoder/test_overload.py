"""What overload takes, and in which order (transcoder.overload): the decision alone, from
the lag and a clock."""

from __future__ import annotations

from transcoder.ladder import Rung
from transcoder.overload import (
    LAG_LIMIT_S,
    RECOVER_AFTER_S,
    RECOVERY_RATE,
    SETTLE_S,
    Action,
    OverloadPolicy,
)

LADDER = [Rung("720p", 1280, 720, 60.0, 4200), Rung("480p", 854, 480, 30.0, 1400),
          Rung("360p", 640, 360, 30.0, 800), Rung("160p", 284, 160, 30.0, 250)]


def escalate(policy: OverloadPolicy, lag_s: float, steps: int, now: float = 0.0
             ) -> list[tuple[str, Action]]:
    """Hold the lag at ``lag_s`` for ``steps`` settle periods, taking each stop at once."""
    taken = []
    for i in range(steps):
        step = policy.observe(lag_s, now + i * SETTLE_S)
        policy.stops_at_boundary(now + i * SETTLE_S)
        if step is not None:
            taken.append((step.rung, step.action))
    return taken


def test_the_order_is_half_rate_for_high_frame_rates_then_whole_rungs_largest_first() -> None:
    policy = OverloadPolicy(LADDER)
    assert escalate(policy, 3.0, 10) == [
        ("720p", Action.HALF_RATE), ("720p", Action.STOPPED), ("480p", Action.STOPPED),
        ("360p", Action.STOPPED), ("160p", Action.STOPPED)]
    assert all(policy.stopped(r.name) for r in LADDER)


def test_nothing_is_taken_within_the_lag_limit() -> None:
    policy = OverloadPolicy(LADDER)
    assert escalate(policy, LAG_LIMIT_S * 0.99, 20) == []
    assert policy.fps_divisor("720p") == 1


def test_a_step_waits_for_the_last_one_to_show_and_for_a_stop_to_take_effect() -> None:
    policy = OverloadPolicy(LADDER)
    assert policy.observe(3.0, 0.0) is not None  # 720p halved
    assert policy.observe(3.0, SETTLE_S / 2) is None  # too soon
    step = policy.observe(3.0, SETTLE_S)
    assert step is not None and step.action is Action.STOPPED
    # Until the next segment boundary the stop is not in effect: nothing more is taken.
    assert policy.observe(5.0, 10 * SETTLE_S) is None
    assert policy.stops_at_boundary(11 * SETTLE_S) == ["720p"]
    assert policy.stops_at_boundary(11 * SETTLE_S) == []
    # The next step waits from where the stop took effect.
    assert policy.observe(5.0, 11.5 * SETTLE_S) is None
    assert policy.observe(5.0, 12 * SETTLE_S) is not None


def test_a_lag_that_is_coming_down_is_left_to_come_down() -> None:
    policy = OverloadPolicy(LADDER)
    policy.observe(3.0, 0.0)
    # Catching up faster than RECOVERY_RATE: waited for, however long it takes.
    for t in range(1, 10):
        assert policy.observe(3.0 - 1.5 * RECOVERY_RATE * t, t * SETTLE_S) is None
    # Catching up more slowly than that: the next step.
    assert policy.observe(3.0 - 0.5 * RECOVERY_RATE * 10, 10 * SETTLE_S) is not None


def test_a_halved_rate_comes_back_after_a_quiet_stretch_and_a_stopped_rung_never() -> None:
    policy = OverloadPolicy(LADDER)
    escalate(policy, 3.0, 2)  # 720p halved, then stopped
    policy2 = OverloadPolicy(LADDER)
    policy2.observe(3.0, 0.0)
    assert policy2.fps_divisor("720p") == 2
    quiet = 0.1 * LAG_LIMIT_S
    assert policy2.observe(quiet, 10.0) is None
    assert policy2.observe(quiet, 10.0 + RECOVER_AFTER_S / 2) is None
    back = policy2.observe(quiet, 10.0 + RECOVER_AFTER_S)
    assert back is not None and back.rung == "720p"
    assert policy2.fps_divisor("720p") == 1 and not policy2.degraded
    for t in range(100):
        policy.observe(quiet, 10.0 + t * RECOVER_AFTER_S)
    assert policy.stopped("720p")


def test_a_ladder_without_high_frame_rates_stops_rungs_straight_away() -> None:
    policy = OverloadPolicy([Rung("360p", 640, 360, 30.0, 800), Rung("160p", 284, 160, 30.0,
                                                                      250)])
    assert escalate(policy, 9.0, 5) == [("360p", Action.STOPPED), ("160p", Action.STOPPED)]
