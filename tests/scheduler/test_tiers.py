"""decide_tiers(): edge and transcoding tiers decided apart, merged into one decision."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from castway.model import Node, NodeState, NodeTier
from castway.serde import from_jsonable, to_jsonable
from castway.settings import Settings
from scheduler.decide import (
    Action,
    CloseNode,
    Drain,
    DrainNode,
    DrainReason,
    FleetMemory,
    MarkLost,
    OpenNode,
    ResumeNode,
    StartNodes,
    StopNode,
    decide,
)
from scheduler.policy import Policy
from scheduler.tiers import decide_tiers

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TRANSCODE = Policy(node_capacity=8, broadcast_cost=0.9, node_cost=1.7, max_nodes=40)
EDGE = Policy(node_capacity=200, broadcast_cost=1.0, headroom_min_slots=20, max_nodes=10)
BOTH = {NodeTier.EDGE: EDGE, NodeTier.TRANSCODE: TRANSCODE}
ONE = {NodeTier.TRANSCODE: TRANSCODE}


def edge(id: str, publishers: int, *, version: str = "v2",
         state: NodeState = NodeState.ACTIVE, reconnectable: int = 0) -> Node:
    return Node(id=id, image_version=version, address="10.0.1.1:1935", state=state,
                capacity=200, active_broadcasts=publishers, heartbeat_at=NOW,
                reconnectable=reconnectable, tier=NodeTier.EDGE)


def transcoder(id: str, costs: list[float], *, version: str = "v2",
               state: NodeState = NodeState.ACTIVE, behind_edge: bool = True) -> Node:
    return Node(id=id, image_version=version, address="10.0.2.1:1935", state=state,
                capacity=8, active_broadcasts=len(costs), heartbeat_at=NOW,
                cost_capacity=1.7, cost_used=sum(costs),
                reconnectable=len(costs) if behind_edge else 0)


def _target(action: Action) -> str | None:
    return None if isinstance(action, StartNodes) else action.node_id


# --- the table ------------------------------------------------------------------------

def test_an_empty_two_tier_fleet_starts_one_node_of_each_tier() -> None:
    decision = decide_tiers([], "v2", BOTH, NOW)
    assert decision.actions == (StartNodes(1, "v2", tier=NodeTier.EDGE),
                                StartNodes(2, "v2", tier=NodeTier.TRANSCODE))


def test_a_busy_edge_tier_starts_edges_only() -> None:
    fleet = [edge("e1", 195), transcoder("t1", []), transcoder("t2", []),
             transcoder("t3", [])]
    decision = decide_tiers(fleet, "v2", BOTH, NOW)
    starts = [a for a in decision.actions if isinstance(a, StartNodes)]
    assert starts == [StartNodes(1, "v2", tier=NodeTier.EDGE)]


def test_an_edge_node_is_never_drained_for_scale_in_while_it_holds_publishers() -> None:
    # it even claims its publishers can reconnect: a plain encoder behind it cannot
    fleet = [edge("e1", 5, reconnectable=5), edge("e2", 150), edge("e3", 0),
             transcoder("t1", [0.3])]
    memory = FleetMemory(closed=("e1", "e3"))
    decision = decide_tiers(fleet, "v2", BOTH, NOW, memory)
    drained = {a.node_id for a in decision.actions if isinstance(a, DrainNode)}
    assert "e1" not in drained
    assert "e3" in drained  # the empty one goes


def test_a_transcoding_node_behind_edges_is_drained_by_moving_its_broadcasts() -> None:
    # closed, its broadcasts all reconnectable through their edges: it is drained
    # (not left to empty by itself) once the cooldowns allow, and stops on the first
    # heartbeat that shows it empty, one tick later
    fleet = [edge("e1", 12), transcoder("t1", [0.3, 0.58]), transcoder("t2", [0.3]),
             transcoder("t3", [0.58])] + [transcoder(f"t{i}", [0.01]) for i in range(4, 7)]
    memory = FleetMemory(closed=("t1",))
    decision = decide_tiers(fleet, "v2", BOTH, NOW, memory)
    assert decision.actions == (DrainNode("t1", DrainReason.SCALE_IN),)
    later = NOW + timedelta(minutes=1)
    moved = [replace(n, state=NodeState.DRAINING, active_broadcasts=0, cost_used=0.0,
                     reconnectable=0, heartbeat_at=later) if n.id == "t1"
             else replace(n, heartbeat_at=later) for n in fleet]
    after = decide_tiers(moved, "v2", BOTH, later, decision.memory)
    assert StopNode("t1", reason="drained") in after.actions


def test_a_deploy_of_the_transcoding_tier_leaves_the_edge_alone() -> None:
    fleet = [edge("e1", 40, version="v1"), transcoder("t1", [0.3], version="v1"),
             transcoder("t2", []), transcoder("t3", []), transcoder("t4", [])]
    versions = {NodeTier.EDGE: "v1", NodeTier.TRANSCODE: "v2"}
    decision = decide_tiers(fleet, versions, BOTH, NOW,
                            FleetMemory(opened=()), None, None)
    assert all(_target(a) != "e1" for a in decision.actions)
    assert not any(isinstance(a, StartNodes) and a.tier == NodeTier.EDGE
                   for a in decision.actions)


def test_each_tier_keeps_its_own_cooldowns_in_one_memory() -> None:
    fleet = [edge("e1", 195), transcoder("t1", [])]
    decision = decide_tiers(fleet, "v2", BOTH, NOW)
    assert decision.memory.edge_last_scale_out_at == NOW
    assert decision.memory.last_scale_out_at == NOW  # the transcoding tier grew too
    quiet = decide_tiers([edge("e1", 5), edge("e2", 5)] + [transcoder(f"t{i}", [])
                                                          for i in range(3)],
                         "v2", BOTH, NOW, FleetMemory(edge_last_scale_out_at=NOW))
    assert quiet.memory.edge_last_scale_out_at == NOW
    assert quiet.memory.last_scale_out_at is None
    raw = to_jsonable(decision.memory)
    assert from_jsonable(FleetMemory, raw) == decision.memory  # Redis keeps it


def test_the_figures_are_the_transcoding_tiers_with_each_tier_beside_them() -> None:
    fleet = [edge("e1", 3), transcoder("t1", [0.3, 0.3, 0.58])]
    figures = decide_tiers(fleet, "v2", BOTH, NOW).figures
    tiers = dict(figures.tiers)
    assert figures.live_broadcasts == 3 == tiers["transcode"].live_broadcasts
    assert tiers["edge"].free == 197.0  # publishers
    assert dict(figures.by_state)["active"] == 2


def test_edge_nodes_without_an_edge_policy_are_left_alone() -> None:
    fleet = [edge("e1", 200), transcoder("t1", [0.3])]
    decision = decide_tiers(fleet, "v2", ONE, NOW)
    assert all(_target(a) != "e1" for a in decision.actions)
    assert all(a.tier == NodeTier.TRANSCODE for a in decision.actions
               if isinstance(a, StartNodes))
    alone = decide([fleet[1]], "v2", TRANSCODE, NOW)
    assert decision.actions == alone.actions and decision.memory == alone.memory


def test_the_edge_policy_comes_from_the_settings() -> None:
    settings = Settings(edge_capacity=150, edge_headroom_min_slots=30, edge_max_nodes=4)
    policy = Policy.edge_from_settings(settings)
    assert (policy.node_capacity, policy.headroom_min_slots, policy.max_nodes,
            policy.broadcast_cost) == (150, 30, 4, 1.0)


# --- properties -----------------------------------------------------------------------

STATES = st.sampled_from([NodeState.STARTING, NodeState.ACTIVE, NodeState.DRAINING])
edge_fleets = st.lists(st.tuples(st.sampled_from(["v1", "v2"]), STATES,
                                 st.integers(0, 200), st.booleans()), max_size=5)
transcode_fleets = st.lists(st.tuples(st.sampled_from(["v1", "v2"]), STATES,
                                      st.lists(st.sampled_from([0.9, 0.58, 0.3, 0.01]),
                                               max_size=4), st.booleans()), max_size=10)
ids = st.sets(st.sampled_from([f"e{i}" for i in range(5)] + [f"t{i:02}" for i in range(10)]))
rates = st.one_of(st.none(), st.floats(0.0, 0.2))


def _edges(raw: list[tuple[str, NodeState, int, bool]]) -> list[Node]:
    return [edge(f"e{i}", 0 if state == NodeState.STARTING else publishers,
                 version=version, state=state, reconnectable=publishers if claims else 0)
            for i, (version, state, publishers, claims) in enumerate(raw)]


def _transcoders(raw: list[tuple[str, NodeState, list[float], bool]]) -> list[Node]:
    return [transcoder(f"t{i:02}", [] if state == NodeState.STARTING else costs,
                       version=version, state=state, behind_edge=behind)
            for i, (version, state, costs, behind) in enumerate(raw)]


def _memory(fleet: list[Node], closed: set[str]) -> FleetMemory:
    return FleetMemory(
        closed=tuple(sorted(closed & {n.id for n in fleet})),
        drains=tuple(Drain(n.id, NOW - timedelta(minutes=5), DrainReason.EXPIRED)
                     for n in fleet if n.state == NodeState.DRAINING))


def _own(actions: tuple[Action, ...], tier: NodeTier, fleet: list[Node]) -> list[Action]:
    mine = {n.id for n in fleet if n.tier == tier}
    return [a for a in actions if (a.tier == tier if isinstance(a, StartNodes)
                                   else a.node_id in mine)]


@settings(max_examples=300, deadline=None)
@given(transcode_fleets, ids, rates)
def test_property_without_edges_the_two_tier_decision_is_todays(
        raw: list[tuple[str, NodeState, list[float], bool]], closed: set[str],
        rate: float | None) -> None:
    fleet = _transcoders(raw)
    memory = _memory(fleet, closed)
    assert (decide_tiers(fleet, "v2", ONE, NOW, memory, None, rate)
            == decide(fleet, "v2", TRANSCODE, NOW, memory, None, rate))


@settings(max_examples=300, deadline=None)
@given(edge_fleets, edge_fleets, transcode_fleets, transcode_fleets, ids, rates)
def test_property_one_tiers_load_never_acts_on_the_other(
        edges_a: list[tuple[str, NodeState, int, bool]],
        edges_b: list[tuple[str, NodeState, int, bool]],
        trans_a: list[tuple[str, NodeState, list[float], bool]],
        trans_b: list[tuple[str, NodeState, list[float], bool]],
        closed: set[str], rate: float | None) -> None:
    # the same transcoding tier beside two different edge tiers decides the same, and
    # the same edge tier beside two different transcoding tiers too
    for fixed, tier, other_a, other_b in (
            (_transcoders(trans_a), NodeTier.TRANSCODE, _edges(edges_a), _edges(edges_b)),
            (_edges(edges_a), NodeTier.EDGE, _transcoders(trans_a),
             _transcoders(trans_b))):
        results = []
        for other in (other_a, other_b):
            fleet = fixed + other
            decision = decide_tiers(fleet, "v2", BOTH, NOW, _memory(fleet, closed), None,
                                    rate)
            own = _own(decision.actions, tier, fleet)
            assert len(own) + len(_own(decision.actions, _other(tier), fleet)) == len(
                decision.actions)  # every action belongs to exactly one tier
            results.append(own)
        assert results[0] == results[1]


def _other(tier: NodeTier) -> NodeTier:
    return NodeTier.EDGE if tier == NodeTier.TRANSCODE else NodeTier.TRANSCODE


@settings(max_examples=300, deadline=None)
@given(edge_fleets, transcode_fleets, ids, rates,
       st.one_of(st.none(), st.floats(60.0, 3600.0)))
def test_property_an_edge_node_with_publishers_is_stopped_only_at_the_deadline(
        edges: list[tuple[str, NodeState, int, bool]],
        trans: list[tuple[str, NodeState, list[float], bool]], closed: set[str],
        rate: float | None, deadline: float | None) -> None:
    fleet = _edges(edges) + _transcoders(trans)
    policies = {NodeTier.EDGE: replace(EDGE, drain_deadline_s=deadline),
                NodeTier.TRANSCODE: TRANSCODE}
    decision = decide_tiers(fleet, "v2", policies, NOW, _memory(fleet, closed), None, rate)
    by_id = {n.id: n for n in fleet}
    for action in decision.actions:
        if isinstance(action, StopNode) and by_id[action.node_id].active_broadcasts:
            assert action.forced and deadline is not None, action
            assert by_id[action.node_id].state == NodeState.DRAINING
        if (isinstance(action, DrainNode) and action.reason == DrainReason.SCALE_IN
                and by_id[action.node_id].tier == NodeTier.EDGE):
            assert by_id[action.node_id].active_broadcasts == 0, action


@settings(max_examples=200, deadline=None)
@given(edge_fleets, transcode_fleets, rates)
def test_property_each_tier_holds_its_headroom_once_settled(
        edges: list[tuple[str, NodeState, int, bool]],
        trans: list[tuple[str, NodeState, list[float], bool]], rate: float | None) -> None:
    fleet = _edges(edges) + _transcoders(trans)
    policies = {tier: replace(policy, max_nodes=100) for tier, policy in BOTH.items()}
    decision = decide_tiers(fleet, "v2", policies, NOW, None, None, rate)
    world = {n.id: n for n in fleet}
    for action in decision.actions:
        if isinstance(action, StartNodes):
            for k in range(action.count):
                new = (edge(f"new-e{k}", 0) if action.tier == NodeTier.EDGE
                       else transcoder(f"new-t{k}", []))
                world[new.id] = new
        elif isinstance(action, DrainNode):
            world[action.node_id] = replace(world[action.node_id], state=NodeState.DRAINING)
        elif isinstance(action, ResumeNode):
            world[action.node_id] = replace(world[action.node_id], state=NodeState.ACTIVE)
        elif isinstance(action, (StopNode, MarkLost)):
            del world[action.node_id]
        else:
            assert isinstance(action, CloseNode | OpenNode)
    for tier, policy in policies.items():
        nodes = [n for n in world.values() if n.tier == tier]
        live = sum(n.active_broadcasts for n in nodes)
        used = sum(n.cost_used if n.cost_capacity else n.active_broadcasts for n in nodes)
        accepting = [n for n in nodes if n.image_version == "v2"
                     and n.state != NodeState.DRAINING]
        if tier == NodeTier.EDGE:
            free = float(sum(n.free_slots for n in accepting))
        else:
            free = sum(max(0.0, n.cost_capacity - n.cost_used) for n in accepting
                       if n.free_slots > 0)
        assert free >= policy.headroom(live, NOW, rate, used_cost=used) - 1e-9, tier
