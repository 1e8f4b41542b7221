"""decide(): the scheduler's pure decision, as a table of cases and three properties."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castway.model import Node, NodeState
from castway.settings import Settings
from scheduler.decide import (
    Action,
    CloseNode,
    Drain,
    DrainNode,
    DrainReason,
    FleetMemory,
    MarkLost,
    Opened,
    OpenNode,
    ResumeNode,
    StartNodes,
    StopNode,
    decide,
)
from scheduler.policy import (
    CapacityWindow,
    Policy,
    PolicyError,
    compound_poisson_upper,
    headroom_fraction,
    poisson_upper,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
POLICY = Policy(node_capacity=8, headroom_min_slots=2, headroom_fraction=0.2, max_nodes=20)


def node(id: str, *, version: str = "v2", state: NodeState = NodeState.ACTIVE,
         active: int = 0, capacity: int = 8, age_s: float = 5.0,
         reconnectable: int = 0) -> Node:
    return Node(id=id, image_version=version, address=f"10.0.0.1:{1935}", state=state,
                capacity=capacity, active_broadcasts=active,
                heartbeat_at=NOW - timedelta(seconds=age_s), reconnectable=reconnectable)


def kinds(actions: tuple[Action, ...]) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, StartNodes):
            out.append(f"start {a.count} {a.version}")
        elif isinstance(a, DrainNode):
            out.append(f"drain {a.node_id} {a.reason.value}")
        elif isinstance(a, ResumeNode):
            out.append(f"resume {a.node_id}")
        elif isinstance(a, StopNode):
            out.append(f"stop {a.node_id}" + (" forced" if a.forced else ""))
        elif isinstance(a, MarkLost):
            out.append(f"lost {a.node_id}")
        elif isinstance(a, CloseNode):
            out.append(f"close {a.node_id}")
        elif isinstance(a, OpenNode):
            out.append(f"open {a.node_id}")
    return out


# --- the table ------------------------------------------------------------------------

def test_an_empty_fleet_starts_enough_nodes_for_the_headroom() -> None:
    assert kinds(decide([], "v2", POLICY, NOW).actions) == ["start 1 v2"]


def test_a_fleet_with_headroom_is_left_alone() -> None:
    fleet = [node("a", active=5)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == []


def test_scale_out_is_immediate_and_sized_in_slots() -> None:
    # 30 live -> headroom 6; free 2 -> short 4 slots -> one node
    fleet = [node("a", active=8), node("b", active=8), node("c", active=8),
             node("d", active=6)]
    decision = decide(fleet, "v2", POLICY, NOW)
    assert kinds(decision.actions) == ["start 1 v2"]
    assert decision.memory.last_scale_out_at == NOW
    assert decision.figures.headroom == 6 and decision.figures.free == 2


def test_starting_nodes_count_as_coming_capacity() -> None:
    fleet = [node("a", active=8), node("b", state=NodeState.STARTING)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == []


def test_deploy_starts_the_new_version_before_draining_the_old() -> None:
    fleet = [node("a", version="v1", active=3), node("b", version="v1", active=2)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == ["start 1 v2"]


def test_old_nodes_drain_once_the_new_version_holds_the_headroom_in_the_load_balancer(
        ) -> None:
    fleet = [node("a", version="v1", active=3), node("b", version="v1", active=2),
             node("c", version="v2", active=0)]
    # c just came up: it goes into the load balancer now, and takes publishes once its
    # registration has had open_lead_s; until then a and b keep taking them
    decision = decide(fleet, "v2", POLICY, NOW)
    assert kinds(decision.actions) == []
    assert [o.node_id for o in decision.memory.opened] == ["c"]
    later = NOW + timedelta(seconds=POLICY.open_lead_s)
    fleet = [replace(n, heartbeat_at=later) for n in fleet]
    decision = decide(fleet, "v2", POLICY, later, decision.memory)
    assert kinds(decision.actions) == ["drain a expired", "drain b expired"]
    assert {d.node_id for d in decision.memory.drains} == {"a", "b"}


def test_an_old_node_that_never_went_active_is_stopped_at_once() -> None:
    fleet = [node("a", version="v1", state=NodeState.STARTING), node("c", active=1)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == ["stop a"]


def test_a_draining_node_stops_only_when_its_own_heartbeat_shows_it_empty() -> None:
    ordered = NOW - timedelta(seconds=60)
    memory = FleetMemory(drains=(Drain("a", ordered, DrainReason.EXPIRED),
                                 Drain("b", ordered, DrainReason.EXPIRED),
                                 Drain("c", ordered, DrainReason.EXPIRED)))
    fleet = [node("a", version="v1", state=NodeState.DRAINING, active=0),
             node("b", version="v1", state=NodeState.DRAINING, active=1),
             # empty, but has not heartbeated since the drain order: it may still admit
             node("c", version="v1", state=NodeState.ACTIVE, active=0),
             node("n", active=0)]
    decision = decide(fleet, "v2", POLICY, NOW, memory)
    assert kinds(decision.actions) == ["stop a"]
    assert {d.node_id for d in decision.memory.drains} == {"b", "c"}


def test_a_silent_node_is_lost_and_replaced_in_the_same_decision() -> None:
    fleet = [node("a", active=7, age_s=POLICY.heartbeat_ttl_s + 1), node("b", active=8)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == ["lost a", "start 1 v2"]


def test_a_starting_node_gets_the_longer_start_timeout() -> None:
    fleet = [node("a", state=NodeState.STARTING, age_s=POLICY.heartbeat_ttl_s + 1)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == []
    fleet = [node("a", state=NodeState.STARTING, age_s=POLICY.start_timeout_s + 1)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == ["lost a", "start 1 v2"]


def test_scale_in_closes_the_emptiest_nodes_and_keeps_the_fullest_open() -> None:
    # 8 live -> headroom 2, + hysteresis 2: a's 4 free slots are enough on their own
    fleet = [node("a", active=4), node("b", active=1), node("c", active=3)]
    decision = decide(fleet, "v2", POLICY, NOW)
    assert kinds(decision.actions) == ["close b", "close c"]
    assert decision.memory.closed == ("b", "c")
    # closed nodes' free slots are warm headroom: back in the load balancer in a tick
    assert (decision.figures.open_free, decision.figures.free) == (4, 16)
    # closed is not draining: b keeps its broadcast and is not drained while it has one
    again = decide(fleet, "v2", POLICY, NOW + timedelta(seconds=10), decision.memory)
    assert kinds(again.actions) == []


def test_an_emptied_closed_node_is_drained_then_stopped() -> None:
    memory = FleetMemory(closed=("b",))
    fleet = [node("a", active=4), node("b", active=0)]
    decision = decide(fleet, "v2", POLICY, NOW, memory)
    assert kinds(decision.actions) == ["drain b scale_in"]
    assert decision.memory.closed == ()
    later = NOW + timedelta(minutes=1)
    fleet = [replace(node("a", active=4), heartbeat_at=later),
             replace(node("b", state=NodeState.DRAINING), heartbeat_at=later)]
    assert kinds(decide(fleet, "v2", POLICY, later, decision.memory).actions) == ["stop b"]


def test_among_equally_full_nodes_the_one_with_the_oldest_broadcast_stays_open() -> None:
    # heavy tail: an old broadcast is likely to go on, so that node stays up anyway
    fleet = [node("a", active=3), node("b", active=3)]
    oldest = {"a": NOW - timedelta(minutes=5), "b": NOW - timedelta(hours=3)}
    assert kinds(decide(fleet, "v2", POLICY, NOW, None, oldest).actions) == ["close a"]


def test_closed_nodes_are_reopened_before_any_node_is_started() -> None:
    memory = FleetMemory(closed=("b", "c"))
    # 15 live -> headroom 3; a is full: reopen c (fullest first), then b
    fleet = [node("a", active=8), node("b", active=2), node("c", active=5)]
    decision = decide(fleet, "v2", POLICY, NOW, memory)
    assert kinds(decision.actions) == ["open c"]
    assert decision.memory.closed == ("b",)
    fleet = [node("a", active=8), node("b", active=6), node("c", active=7)]
    decision = decide(fleet, "v2", POLICY, NOW, memory)
    assert kinds(decision.actions) == ["open c", "open b", "start 1 v2"]


def test_moving_broadcasts_off_a_closed_node_waits_for_the_cooldowns() -> None:
    # b's only broadcast can reconnect elsewhere: drain b, but not right after a
    # scale-out nor within the scale-in interval
    memory = FleetMemory(closed=("b",))
    fleet = [node("a", active=2), node("b", active=1, reconnectable=1)]
    assert kinds(decide(fleet, "v2", POLICY, NOW, memory).actions) == ["drain b scale_in"]
    recent = replace(memory, last_scale_out_at=NOW - timedelta(seconds=60))
    assert kinds(decide(fleet, "v2", POLICY, NOW, recent).actions) == []
    recent = replace(memory, last_scale_in_at=NOW - timedelta(seconds=30))
    assert kinds(decide(fleet, "v2", POLICY, NOW, recent).actions) == []
    # a broadcast that cannot move keeps its closed node up: no drain, no reconnect request
    fleet = [node("a", active=2), node("b", active=1)]
    assert kinds(decide(fleet, "v2", POLICY, NOW, memory).actions) == []


def test_publishers_moved_off_a_closed_node_get_room_on_reopened_nodes() -> None:
    # 9 live -> headroom 2 + hysteresis 2 = 4, just what a holds: b's two reconnecting
    # publishers need c (closed, 5 free) back in the load balancer
    memory = FleetMemory(closed=("b", "c"))
    fleet = [node("a", active=4), node("b", active=2, reconnectable=2), node("c", active=3)]
    decision = decide(fleet, "v2", POLICY, NOW, memory)
    assert kinds(decision.actions) == ["drain b scale_in", "open c"]
    assert decision.memory.closed == ()


def test_scale_in_keeps_hysteresis_beyond_the_headroom() -> None:
    # 11 live -> headroom 3 + hysteresis 2: c's 5 free slots allow closing b; 4 do not
    fleet = [node("a", active=8), node("b", active=0), node("c", active=3)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == ["close b", "drain b scale_in"]
    fleet = [node("a", active=8), node("b", active=0), node("c", active=4)]
    assert kinds(decide(fleet, "v2", POLICY, NOW).actions) == []


def test_a_scale_in_drain_is_resumed_before_any_node_is_started() -> None:
    memory = FleetMemory(drains=(Drain("b", NOW - timedelta(seconds=300),
                                       DrainReason.SCALE_IN),))
    fleet = [node("a", active=8), node("b", state=NodeState.DRAINING, active=3)]
    decision = decide(fleet, "v2", POLICY, NOW, memory)
    assert kinds(decision.actions) == ["resume b"]
    assert decision.memory.drains == ()


def test_a_resumed_node_is_not_stopped_on_a_heartbeat_from_before_the_resume() -> None:
    memory = FleetMemory(drains=(Drain("b", NOW - timedelta(seconds=300),
                                       DrainReason.SCALE_IN),))
    fleet = [node("a", active=8), node("b", state=NodeState.DRAINING, active=1)]
    resumed = decide(fleet, "v2", POLICY, NOW, memory)
    assert kinds(resumed.actions) == ["resume b"]
    # a heartbeat taken just before the resume order lands after it: "draining, empty";
    # b may already be admitting again, so it must not be stopped on that
    stale = [fleet[0], node("b", state=NodeState.DRAINING, active=0, age_s=1)]
    later = NOW + timedelta(seconds=5)
    assert "stop b" not in kinds(decide(stale, "v2", POLICY, later, resumed.memory).actions)
    # once b heartbeats after the resume, its reports are believed again
    fresh = [replace(fleet[0], heartbeat_at=later),
             replace(fleet[1], state=NodeState.ACTIVE, heartbeat_at=later)]
    again = decide(fresh, "v2", POLICY, later, resumed.memory)
    assert again.memory.resumes == () and again.memory.drains == ()


def test_an_expired_drain_is_never_resumed() -> None:
    memory = FleetMemory(drains=(Drain("b", NOW, DrainReason.EXPIRED),))
    fleet = [node("a", active=8), node("b", version="v1", state=NodeState.DRAINING, active=3)]
    assert kinds(decide(fleet, "v2", POLICY, NOW, memory).actions) == ["start 1 v2"]


def test_the_fleet_never_grows_past_max_nodes() -> None:
    policy = replace(POLICY, max_nodes=2)
    fleet = [node("a", active=8), node("b", active=8)]
    assert kinds(decide(fleet, "v2", policy, NOW).actions) == []


def test_at_the_cap_an_old_node_is_drained_to_make_room_for_the_new_version() -> None:
    policy = replace(POLICY, max_nodes=2)
    fleet = [node("a", version="v1", active=5), node("b", version="v1", active=2)]
    decision = decide(fleet, "v2", policy, NOW)
    assert kinds(decision.actions) == ["drain b shuffle"]
    # one such drain at a time
    again = decide(fleet, "v2", policy, NOW, decision.memory)
    assert kinds(again.actions) == []


def test_the_optional_hard_deadline_stops_a_draining_node_anyway() -> None:
    policy = replace(POLICY, drain_deadline_s=3600.0)
    memory = FleetMemory(drains=(Drain("a", NOW - timedelta(hours=2), DrainReason.EXPIRED),))
    fleet = [node("a", version="v1", state=NodeState.DRAINING, active=2), node("b", active=1)]
    assert kinds(decide(fleet, "v2", policy, NOW, memory).actions) == ["stop a forced"]


def test_a_capacity_window_keeps_nodes_for_a_known_peak() -> None:
    window = CapacityWindow(time(11, 0), time(13, 0), min_nodes=3, min_free_slots=10)
    policy = replace(POLICY, windows=(window,))
    fleet = [node("a", active=1)]
    assert kinds(decide(fleet, "v2", policy, NOW).actions) == ["start 2 v2"]
    assert decide(fleet, "v2", policy, NOW).figures.headroom == 10
    outside = NOW + timedelta(hours=3)
    fresh = [replace(fleet[0], heartbeat_at=outside)]
    assert kinds(decide(fresh, "v2", policy, outside).actions) == []


def test_capacity_windows_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path,
                        capacity_windows="11:00-13:00:3:10, 20:00-02:00:6:16")
    policy = replace(Policy.from_settings(settings), node_capacity=POLICY.node_capacity)
    assert [w.min_nodes for w in policy.windows] == [3, 6]
    fleet = [node("a", active=1)]
    assert kinds(decide(fleet, "v2", policy, NOW).actions) == ["start 2 v2"]
    with pytest.raises(PolicyError):
        Policy.from_settings(Settings(data_dir=tmp_path, capacity_windows="nightly"))


def test_reconnectable_broadcasts_are_counted_before_they_move() -> None:
    # draining old a will ask 7 publishers to reconnect: the new version must hold them
    # and the headroom (2): 8 free slots on c are not enough yet, 16 are
    fleet = [node("a", version="v1", active=7, reconnectable=7), node("c", active=0)]
    registered = FleetMemory(opened=(Opened("c", NOW - timedelta(minutes=2)),
                                     Opened("d", NOW - timedelta(minutes=2))))
    assert kinds(decide(fleet, "v2", POLICY, NOW, registered).actions) == ["start 1 v2"]
    fleet.append(node("d", active=0))
    assert kinds(decide(fleet, "v2", POLICY, NOW, registered).actions) == ["drain a expired"]


# --- two tiers: open headroom sized on the publish rate, the rest kept warm -----------

PER_MIN = 1 / 60.0  # a publish rate of one a minute, in publishes per second


def test_the_headroom_covers_the_publishes_expected_before_new_capacity_arrives() -> None:
    policy = replace(POLICY, headroom_fraction=0.0)
    # 3 a minute for a tick plus a start (3 minutes): Poisson(9) at 99.9 % is 20
    assert policy.headroom(10, NOW, 3 * PER_MIN) == 20 == poisson_upper(9.0, 0.999)
    # in the load balancer, a tick plus a registration (2 minutes): Poisson(6) -> 15
    assert policy.open_headroom(10, NOW, 3 * PER_MIN) == 15
    # the floor and the fraction still hold; never more open than the whole headroom
    assert POLICY.headroom(200, NOW, 0.0) == 40 and POLICY.open_headroom(200, NOW, 0.0) == 2
    assert policy.open_headroom(0, NOW, 0.0) == policy.headroom(0, NOW, 0.0) == 2
    # without a measured rate the whole headroom stays in the load balancer
    assert POLICY.open_headroom(200, NOW) == POLICY.headroom(200, NOW) == 40


def test_poisson_upper_quantiles() -> None:
    assert poisson_upper(0.0, 0.999) == 0
    assert [poisson_upper(m, 0.5) for m in (1.0, 10.0)] == [1, 10]
    assert poisson_upper(1000.0, 0.999) == pytest.approx(1098, abs=3)  # normal tail
    with pytest.raises(PolicyError):
        Policy(burst_quantile=1.0)


def test_compound_poisson_upper_is_the_quantile_of_what_the_publishes_cost() -> None:
    # one cost: that many publishes (the Poisson quantile) at that cost
    assert compound_poisson_upper(9.0, [0.5], 0.999) == pytest.approx(
        poisson_upper(9.0, 0.999) * 0.5)
    # a mix: against a draw of a million days, within the grid's step
    mix = [0.9, 0.58, 0.58, 0.3, 0.3, 0.3, 0.01]
    rng = random.Random(3)
    sums = sorted(sum(rng.choice(mix) for _ in range(_poisson(rng, 4.0)))
                  for _ in range(200_000))
    sampled = sums[int(0.999 * len(sums))]
    assert compound_poisson_upper(4.0, mix, 0.999) == pytest.approx(sampled, abs=0.1)
    # counting each publish at the dearest cost keeps far more
    assert compound_poisson_upper(4.0, mix, 0.999) < 0.65 * poisson_upper(4.0, 0.999) * 0.9
    # the normal approximation past a mean of 500 agrees with the recursion below it
    assert (compound_poisson_upper(501.0, mix, 0.999)
            == pytest.approx(compound_poisson_upper(499.0, mix, 0.999), rel=0.02))
    assert compound_poisson_upper(0.0, mix, 0.999) == 0.0


def _poisson(rng: random.Random, mean: float) -> int:
    count, t = 0, rng.expovariate(1.0)
    while t < mean:
        count, t = count + 1, t + rng.expovariate(1.0)
    return count


def test_the_expected_publishes_are_costed_on_the_live_mix_with_the_dearest_as_a_prior(
        ) -> None:
    policy = replace(POLICY, headroom_fraction=0.0, headroom_min_slots=0, broadcast_cost=0.9)
    rate = 3 * PER_MIN  # Poisson(9) in a tick plus a start
    dearest = policy.headroom(10, NOW, rate)
    assert dearest == pytest.approx(20 * 0.9)  # no live mix known: 20 at the dearest
    passthroughs = policy.headroom(10, NOW, rate, costs=[0.01] * 40)
    assert passthroughs < 0.2 * dearest  # a fleet of passthroughs needs little room
    # the prior (one publish at the dearest cost among the live ones) weighs on a
    # small fleet, not on a large one
    small = policy.headroom(1, NOW, rate, costs=[0.01])
    assert passthroughs < small < dearest
    assert policy.open_headroom(10, NOW, rate, costs=[0.01] * 40) <= passthroughs


def test_decide_sizes_the_headroom_on_the_costs_the_nodes_heartbeat() -> None:
    policy = replace(POLICY, headroom_fraction=0.0, headroom_min_slots=0, broadcast_cost=1.0,
                     node_cost=8.0)
    cheap = [replace(node("a", active=6), cost_capacity=8.0, cost_used=0.06,
                     broadcast_costs=(0.01,) * 6)]
    dear = [replace(n, cost_used=6.0, broadcast_costs=(1.0,) * 6) for n in cheap]
    rate = 3 * PER_MIN
    # 7.94 cores free on one node cover the passthroughs' demand, not 20 dear publishes
    assert kinds(decide(cheap, "v2", policy, NOW, publish_rate_per_s=rate).actions) == []
    assert kinds(decide(dear, "v2", policy, NOW, publish_rate_per_s=rate).actions) == [
        "start 3 v2"]


def test_behind_edges_the_headroom_keeps_no_share_of_the_live_cost_by_default() -> None:
    assert headroom_fraction(Settings()) == 0.2
    assert headroom_fraction(Settings(edge_tier=True)) == 0.0
    assert headroom_fraction(Settings(edge_tier=True, headroom_fraction=0.1)) == 0.1
    assert Policy.from_settings(Settings(edge_tier=True)).headroom_fraction == 0.0


def test_closed_nodes_free_slots_hold_the_headroom_while_few_nodes_take_publishes() -> None:
    # 40 live -> headroom 8 (20 %); a slow publish rate (0.2 a minute: Poisson(0.4) ->
    # 3) needs 3 open slots (+2 hysteresis): the emptiest close, and their 11 free slots
    # keep the headroom warm, so nothing starts
    fleet = [node("a", active=6), node("b", active=5), node("c", active=4),
             node("d", active=5), node("e", active=4), node("f", active=8),
             node("g", active=8)]
    decision = decide(fleet, "v2", POLICY, NOW, None, None, 0.2 * PER_MIN)
    assert kinds(decision.actions) == ["close e", "close c", "close d"]
    f = decision.figures
    assert (f.headroom, f.open_headroom, f.open_free, f.free) == (8, 3, 5, 16)
    assert f.publish_rate_per_min == 0.2


def test_a_faster_publish_rate_reopens_closed_nodes_before_starting_any() -> None:
    memory = FleetMemory(closed=("b", "c"))
    fleet = [node("a", active=7), node("b", active=3), node("c", active=5)]
    # 2 a minute -> Poisson(4) -> 11 open slots wanted: c (3 free) and b (5 free) reopen,
    # fullest first; with a's 1 that is 9, and the whole headroom (Poisson(6) -> 15)
    # needs a node started
    decision = decide(fleet, "v2", POLICY, NOW, memory, None, 2 * PER_MIN)
    assert (decision.figures.open_headroom, decision.figures.headroom) == (11, 15)
    assert kinds(decision.actions) == ["open c", "open b", "start 1 v2"]


def test_an_empty_closed_node_stops_only_when_the_others_hold_the_headroom() -> None:
    memory = FleetMemory(closed=("b",))
    # 24 live -> headroom 5 (+2 hysteresis): a's 4 free slots alone do not hold it,
    # so the empty b stays up (closed, warm); with a fourth free slot on a, b goes
    fleet = [node("a", active=4), node("b", active=0), node("c", active=8),
             node("d", active=8)]
    rate = 0.1 * PER_MIN
    assert kinds(decide(fleet, "v2", POLICY, NOW, memory, None, rate).actions) == []
    fleet = [node("a", active=1), node("b", active=0), node("c", active=8),
             node("d", active=8)]
    assert kinds(decide(fleet, "v2", POLICY, NOW, memory, None, rate).actions) == [
        "drain b scale_in"]


def test_a_node_seen_draining_without_a_record_is_still_treated_as_draining() -> None:
    fleet = [node("a", version="v2", state=NodeState.DRAINING, active=0), node("b", active=1)]
    decision = decide(fleet, "v2", POLICY, NOW)
    assert kinds(decision.actions) == ["stop a"]


def test_capacity_windows_parse_and_wrap_midnight() -> None:
    window = CapacityWindow.parse("20:00-02:00:6:16")
    assert (window.min_nodes, window.min_free_slots) == (6, 16)
    assert window.contains(NOW.replace(hour=23)) and window.contains(NOW.replace(hour=1))
    assert not window.contains(NOW.replace(hour=12))
    with pytest.raises(PolicyError):
        CapacityWindow.parse("whenever")
    with pytest.raises(PolicyError):
        Policy(node_capacity=0)


# --- properties -----------------------------------------------------------------------

@dataclass
class SimNode:
    """The test's model of a node, which obeys the decision's actions."""

    id: str
    version: str
    state: NodeState
    active: int
    capacity: int = 8
    seen_at: datetime = NOW

    def view(self, now: datetime) -> Node:
        return Node(id=self.id, image_version=self.version, address="10.0.0.9:1935",
                    state=self.state, capacity=self.capacity,
                    active_broadcasts=self.active, heartbeat_at=now)


fleets = st.lists(
    st.tuples(st.sampled_from(["v1", "v2"]),
              st.sampled_from([NodeState.STARTING, NodeState.ACTIVE, NodeState.DRAINING]),
              st.integers(0, 8)),
    max_size=12)


def _world(raw: list[tuple[str, NodeState, int]]) -> dict[str, SimNode]:
    return {f"n{i:02}": SimNode(f"n{i:02}", version, state,
                                0 if state == NodeState.STARTING else active)
            for i, (version, state, active) in enumerate(raw)}


def _apply(world: dict[str, SimNode], actions: tuple[Action, ...], serial: list[int]) -> None:
    for action in actions:
        if isinstance(action, StartNodes):
            for _ in range(action.count):
                serial[0] += 1
                new_id = f"s{serial[0]:03}"
                world[new_id] = SimNode(new_id, action.version, NodeState.STARTING, 0)
        elif isinstance(action, DrainNode):
            world[action.node_id].state = NodeState.DRAINING
        elif isinstance(action, ResumeNode):
            world[action.node_id].state = NodeState.ACTIVE
        elif isinstance(action, (StopNode, MarkLost)):
            del world[action.node_id]


@settings(max_examples=300, deadline=None)
@given(fleets)
def test_property_never_stops_a_node_with_a_live_broadcast(
        raw: list[tuple[str, NodeState, int]]) -> None:
    world = _world(raw)
    memory = FleetMemory(drains=tuple(Drain(n.id, NOW - timedelta(minutes=5),
                                            DrainReason.EXPIRED)
                                      for n in world.values()
                                      if n.state == NodeState.DRAINING))
    decision = decide([n.view(NOW) for n in world.values()], "v2", POLICY, NOW, memory)
    for action in decision.actions:
        if isinstance(action, StopNode):
            assert world[action.node_id].active == 0, action


@settings(max_examples=300, deadline=None)
@given(fleets, st.sets(st.sampled_from([f"n{i:02}" for i in range(12)])),
       st.one_of(st.none(), st.floats(0.0, 0.2)))
def test_property_after_actions_settle_free_slots_meet_the_headroom(
        raw: list[tuple[str, NodeState, int]], closed_ids: set[str],
        rate: float | None) -> None:
    world = _world(raw)
    policy = replace(POLICY, max_nodes=100)
    closed = tuple(sorted(closed_ids & set(world)))
    decision = decide([n.view(NOW) for n in world.values()], "v2", policy, NOW,
                      FleetMemory(closed=closed), None, rate)
    _apply(world, decision.actions, [0])
    for n in world.values():  # settle: starting nodes come up
        if n.state == NodeState.STARTING:
            n.state = NodeState.ACTIVE
    live = sum(n.active for n in world.values())
    current = [n for n in world.values() if n.state == NodeState.ACTIVE and n.version == "v2"]
    free = sum(n.capacity - n.active for n in current)
    assert free >= policy.headroom(live, NOW, rate)
    # only the open (routable) nodes get new publishes
    open_free = sum(n.capacity - n.active for n in current
                    if n.id not in decision.memory.closed)
    assert open_free >= policy.open_headroom(live, NOW, rate)


@settings(max_examples=150, deadline=None)
@given(fleets, st.lists(st.integers(0, 3), min_size=40, max_size=40),
       st.integers(2, 30))
def test_property_every_old_node_is_eventually_stopped(
        raw: list[tuple[str, NodeState, int]], arrivals: list[int], max_nodes: int) -> None:
    world = _world(raw)
    policy = replace(POLICY, max_nodes=max(max_nodes, len(world)))
    memory: FleetMemory | None = None
    serial = [0]
    now = NOW
    for tick, arriving in enumerate(arrivals + [0] * 30):
        now = NOW + timedelta(minutes=tick)
        decision = decide([n.view(now) for n in world.values()], "v2", policy, now, memory)
        memory = decision.memory
        _apply(world, decision.actions, serial)
        # a minute passes: nodes come up, one broadcast per node ends, some arrive
        for n in world.values():
            if n.state == NodeState.STARTING:
                n.state = NodeState.ACTIVE
            n.active = max(0, n.active - 1)
        for n in sorted(world.values(), key=lambda n: n.id):
            if arriving and n.state == NodeState.ACTIVE and n.active < n.capacity:
                take = min(arriving, n.capacity - n.active)
                n.active += take
                arriving -= take
    assert [n.id for n in world.values() if n.version != "v2"] == []


# --- cost units (castway.cost): nodes heartbeat cores, broadcasts cost what they cost ---

COST_POLICY = replace(POLICY, broadcast_cost=0.9, node_cost=1.7, max_nodes=100)
#: what a broadcast costs on the calibration machine: 1080p60, 1080p30, 720p30 with the
#: full ladder, and a passthrough
MIX = (0.9, 0.58, 0.3, 0.005)


@dataclass
class CostNode:
    id: str
    version: str
    state: NodeState
    costs: list[float]
    cost_capacity: float = 1.7

    def view(self, now: datetime) -> Node:
        return Node(id=self.id, image_version=self.version, address="10.0.0.9:1935",
                    state=self.state, capacity=8, active_broadcasts=len(self.costs),
                    heartbeat_at=now, cost_capacity=self.cost_capacity,
                    cost_used=sum(self.costs))

    @property
    def free(self) -> float:
        return max(0.0, self.cost_capacity - sum(self.costs)) if len(self.costs) < 8 else 0.0


cost_fleets = st.lists(
    st.tuples(st.sampled_from(["v1", "v2"]),
              st.sampled_from([NodeState.STARTING, NodeState.ACTIVE, NodeState.DRAINING]),
              st.lists(st.sampled_from(MIX), max_size=4)),
    max_size=10)


def test_a_node_full_of_cost_has_no_room_whatever_its_slots() -> None:
    full = Node(id="n1", image_version="v2", address="a", state=NodeState.ACTIVE,
                capacity=8, active_broadcasts=2, heartbeat_at=NOW, cost_capacity=1.7,
                cost_used=1.5)
    decision = decide([full], "v2", COST_POLICY, NOW)
    # 0.2 cores free hold no 0.9-core broadcast; the headroom is two of them, and a
    # 1.7-core node holds one: two nodes more
    assert kinds(decision.actions) == ["start 2 v2"]
    assert decision.figures.free == 0.0
    assert decision.figures.headroom == pytest.approx(1.8)


@settings(max_examples=300, deadline=None)
@given(cost_fleets, st.one_of(st.none(), st.floats(0.0, 0.2)))
def test_property_in_cost_units_free_cores_meet_the_headroom_once_settled(
        raw: list[tuple[str, NodeState, list[float]]], rate: float | None) -> None:
    world = {f"n{i:02}": CostNode(f"n{i:02}", version, state,
                                  [] if state == NodeState.STARTING else costs)
             for i, (version, state, costs) in enumerate(raw)}
    decision = decide([n.view(NOW) for n in world.values()], "v2", COST_POLICY, NOW,
                      None, None, rate)
    for action in decision.actions:
        if isinstance(action, StopNode):
            assert not world[action.node_id].costs  # never cuts a live broadcast
        elif isinstance(action, StartNodes):
            for k in range(action.count):
                world[f"s{k}"] = CostNode(f"s{k}", action.version, NodeState.ACTIVE, [])
        elif isinstance(action, DrainNode):
            world[action.node_id].state = NodeState.DRAINING
        elif isinstance(action, ResumeNode):
            world[action.node_id].state = NodeState.ACTIVE
        elif isinstance(action, (StopNode, MarkLost)):
            del world[action.node_id]
    used = sum(sum(n.costs) for n in world.values())
    live = sum(len(n.costs) for n in world.values())
    free = sum(n.free for n in world.values()
               if n.version == "v2" and n.state != NodeState.DRAINING)
    assert free >= COST_POLICY.headroom(live, NOW, rate, used_cost=used) - 1e-9
