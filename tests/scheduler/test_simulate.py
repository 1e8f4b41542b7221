"""The day simulator: the workload's shape, and castway against the two baselines."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from castway.model import NodeState
from scheduler.simulate import (
    NODE_COST,
    SOURCE_MIX,
    EdgeModel,
    Workload,
    World,
    castway_strategy,
    clairvoyant_packing,
    compare,
    compare_tiers,
    default_policy,
    peak_live,
    report,
    run,
    sized_policy,
    two_tier_policies,
    two_tier_strategy,
)

SMALL = Workload(hours=6.0, warmup_h=3.0, peak_hour=4.0, trough_rate_per_min=0.2,
                 peak_rate_per_min=1.0, deploy_at_h=4.0)


def test_arrivals_peak_at_night_and_durations_are_heavy_tailed() -> None:
    w = Workload()
    assert w.rate_per_s(22 * 3600) == pytest.approx(w.peak_rate_per_min / 60)
    assert w.rate_per_s(10 * 3600) < w.rate_per_s(22 * 3600) / 4
    broadcasts = w.broadcasts()
    assert broadcasts == w.broadcasts()  # seeded: every strategy sees the same day
    durations = sorted(d for _, d, _, _ in broadcasts)
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
    _, peak_cost = peak_live(SMALL)
    size = math.ceil(peak_cost * 1.2 / NODE_COST)
    assert fixed.peak_nodes >= size


def test_a_publish_only_lands_on_a_routable_node_with_a_free_slot() -> None:
    world = World(SMALL, capacity=2, start_delay_s=0.0, rng=random.Random(1))
    world.cost.update({1: 0.3, 2: 0.3, 3: 0.3})
    closed, routed = world.start("v1"), world.start("v1")
    for node in (closed, routed):
        node.state = NodeState.ACTIVE
    routed.routable = True  # closed: active, admits, but out of the load balancer
    assert world.place(1) and world.place(2)
    assert routed.broadcasts == {1, 2} and closed.broadcasts == set()
    assert not world.place(3)  # refused: the only routable node is full


def test_a_publish_only_lands_where_its_full_ladder_fits() -> None:
    world = World(SMALL, capacity=8, start_delay_s=0.0, rng=random.Random(1), node_cost=1.7)
    world.cost.update({1: 0.9, 2: 0.58, 3: 0.3, 4: 0.01})
    node = world.start("v1")
    node.state = NodeState.ACTIVE
    node.routable = True
    assert world.place(1) and world.place(2)  # 1.48 of 1.7 cores
    assert not world.place(3)  # slots left, cores not: refused, never over-committed
    assert world.place(4)  # a passthrough fits
    world.end(1)
    assert world.place(3) and node.used == pytest.approx(0.89)


def test_the_day_is_a_mix_of_sources_at_their_costs() -> None:
    costs = [c for _, _, _, c in Workload().broadcasts()]
    shares = {cost: costs.count(cost) / len(costs) for _, _, cost in SOURCE_MIX}
    for _, share, cost in SOURCE_MIX:
        assert abs(shares[cost] - share) < 0.03


def test_the_bounds_are_ordered_and_castway_sits_above_them() -> None:
    figures = run(SMALL, castway_strategy(default_policy()))
    assert (figures.ideal_container_hours <= figures.ideal_with_headroom_container_hours
            <= figures.no_migration_bound_container_hours <= figures.container_hours)
    out = report(compare(SMALL, default_policy()))
    for key in ("no_migration_bound_container_hours", "clairvoyant_packing_container_hours",
                "ideal_container_hours", "ratio"):
        assert key in out
    assert out["clairvoyant_packing_container_hours"] >= out["ideal_container_hours"]


def test_the_clairvoyant_reference_pays_for_the_heavy_tail_too() -> None:
    # even knowing every end, a no-migration packer pays more than the headroom bound
    figures = run(SMALL, castway_strategy(default_policy()))
    reference = clairvoyant_packing(SMALL, default_policy())
    assert reference > figures.ideal_with_headroom_container_hours


def test_a_node_put_into_the_load_balancer_takes_publishes_once_registered() -> None:
    world = World(SMALL, capacity=2, start_delay_s=0.0, rng=random.Random(1),
                  register_delay_s=60.0)
    world.cost[1] = 0.3
    node = world.start("v1")
    node.state = NodeState.ACTIVE
    world.set_routable(node, True)
    assert not world.place(1)  # health checks still running
    world.now += 60.0
    assert world.place(1) and node.broadcasts == {1}


def test_knowing_no_end_costs_more_than_knowing_every_end() -> None:
    out = report(compare(SMALL, default_policy()))
    assert (out["ideal_with_headroom_container_hours"]
            <= out["clairvoyant_packing_container_hours"]
            <= out["online_packing_container_hours"])


# --- two tiers (issue 15) ---------------------------------------------------------------

def test_an_edge_node_holds_what_its_cores_hold_up_to_its_capacity() -> None:
    assert EdgeModel().publishers_per_node == 141  # a 2-vCPU node: 1.7 cores / 0.012
    assert EdgeModel(vcpus=0.25).publishers_per_node == 17  # 0.2125 cores / 0.012
    assert EdgeModel(vcpus=0.25).node_cost == pytest.approx(0.2125)


def test_two_tiers_move_every_broadcast_off_the_transcoding_tier_never_the_edge() -> None:
    policy = sized_policy(default_policy(), 8.0)
    figures = compare_tiers(SMALL, policy, EdgeModel(vcpus=0.25), placement="fullest")
    assert figures.broadcasts > 100
    assert figures.refused == 0
    assert figures.edge.interrupted == 0 and figures.transcode.interrupted == 0
    assert figures.transcode.moved > 0 and figures.edge.moved == 0
    assert figures.ideal_vcpu_hours >= figures.transcode_ideal_vcpu_hours
    assert figures.total_vcpu_hours >= figures.ideal_vcpu_hours
    assert figures.one_tier is not None and figures.one_tier.interrupted == 0
    out = figures.as_json()
    assert set(out["tiers"]) == {"edge", "transcode"}
    assert out["one_tier"]["vcpu_hours"] == pytest.approx(
        figures.one_tier.container_hours * 8.0, abs=0.1)


def test_a_draining_transcoding_node_empties_as_soon_as_others_have_room() -> None:
    # behind the edge every relay reconnects; one that found no room is asked again at
    # the next tick, so the node does not wait for its broadcasts to end
    policy = sized_policy(default_policy(), 2.0)
    edges = World(SMALL, 53, 0.0, random.Random(1), prefix="e")
    transcoders = World(SMALL, 8, 0.0, random.Random(2), node_cost=NODE_COST, prefix="t")
    tick = two_tier_strategy(two_tier_policies(policy, EdgeModel(vcpus=0.25)))
    old = transcoders.start("v1")
    old.state = NodeState.ACTIVE
    old.routable = True
    for b, cost in enumerate((0.9, 0.58)):
        transcoders.cost[b], edges.cost[b] = cost, 0.0
        assert transcoders.place(b)
        transcoders.reconnectable.add(b)
    transcoders.version = "v2"  # a deploy: v1 drains once v2 holds the headroom
    for minute in range(6):
        for world in (edges, transcoders):
            world.now = minute * 60.0
            for node in world.nodes.values():
                if node.state == NodeState.STARTING:
                    node.state = NodeState.ACTIVE
        tick(edges, transcoders)
    assert old.id not in transcoders.nodes  # drained, emptied by moves, stopped
    assert transcoders.figures.interrupted == 0
    assert {transcoders.nodes[transcoders.where[b]].version for b in (0, 1)} == {"v2"}
    assert all(n.id.startswith("e") for n in edges.nodes.values())


def test_an_edge_that_spreads_fills_closed_nodes_and_one_that_packs_does_not() -> None:
    # "emptiest": the most free cores among the active transcoding nodes, blind to the
    # closed ones (the first castway edge); "fullest": ingest.edge.placement today
    world = World(SMALL, capacity=8, start_delay_s=0.0, rng=random.Random(1),
                  node_cost=1.7, placement="emptiest")
    world.cost.update({1: 0.9, 2: 0.3, 3: 0.3})
    busy, closed = world.start("v1"), world.start("v1")
    for node in (busy, closed):
        node.state = NodeState.ACTIVE
    busy.routable = True  # closed stays out of the load balancer
    assert world.place(2) and busy.broadcasts == {2}  # a tie: the lowest id
    assert world.place(1) and closed.broadcasts == {1}  # 1.7 free against 1.4
    assert world.place(3) and busy.broadcasts == {2, 3}  # 1.4 free against 0.8
    fullest = World(SMALL, capacity=8, start_delay_s=0.0, rng=random.Random(1),
                    node_cost=1.7, placement="fullest")
    fullest.cost.update(world.cost)
    a, b = fullest.start("v1"), fullest.start("v1")
    for node in (a, b):
        node.state, node.routable = NodeState.ACTIVE, True
    assert fullest.place(1) and fullest.place(2) and fullest.place(3)
    assert {len(a.broadcasts), len(b.broadcasts)} == {0, 3}  # packed on one node
