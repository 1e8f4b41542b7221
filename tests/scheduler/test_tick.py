"""Scheduler.tick: the merged fleet view, actions applied one by one, one tick at a time."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastFailed
from castway.live.memory import MemoryLiveState
from castway.model import Broadcast, BroadcastState, Node, NodeState, NodeTier, utcnow
from castway.settings import Settings
from scheduler.agent import CLOSE
from scheduler.backends.base import Instance
from scheduler.backends.local import LocalBackend
from scheduler.metrics import SchedulerMetrics
from scheduler.tick import Scheduler, merge_view

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # the nodes here are sleepers that never heartbeat: the Redis URL is never dialled
    return Settings(data_dir=tmp_path, image_version="v1", node_capacity=8,
                    heartbeat_ttl_s=30.0, redis_url="redis://127.0.0.1:1/0")


@pytest.fixture
def backend(settings: Settings) -> Iterator[LocalBackend]:
    b = LocalBackend(settings, command=SLEEPER)
    yield b
    b.stop_all()


def test_merge_view_adds_launched_but_silent_nodes_as_starting() -> None:
    now = utcnow()
    beating = Node(id="a", image_version="v1", address="0.0.0.0:1935",
                   state=NodeState.ACTIVE, heartbeat_at=now)
    view = merge_view([beating], [Instance("a", "v1", now, "10.0.0.5:1935"),
                                  Instance("b", "v2", now - timedelta(seconds=5))], 8)
    assert [(n.id, n.state, n.address) for n in view] == [
        ("a", NodeState.ACTIVE, "10.0.0.5:1935"),  # the backend knows the routable address
        ("b", NodeState.STARTING, "")]
    assert view[1].heartbeat_at == now - timedelta(seconds=5)


async def test_first_tick_starts_the_fleet_and_the_next_does_not_repeat_it(
        settings: Settings, backend: LocalBackend) -> None:
    live = MemoryLiveState()
    metrics = SchedulerMetrics()
    scheduler = Scheduler(settings, live, backend, metrics=metrics)
    first = await scheduler.tick()
    assert first.summary()["actions"] == ["start 1 on v1"]
    second = await scheduler.tick()  # the launched node counts while it starts
    assert second.summary()["actions"] == []
    assert len(backend.list_instances()) == 1
    assert metrics.registry.get_sample_value(
        "castway_scheduler_actions_total", {"action": "StartNodes"}) == 1.0
    assert metrics.registry.get_sample_value(
        "castway_scheduler_nodes", {"state": "starting"}) == 1.0


async def test_a_lost_node_fails_its_broadcasts_and_is_replaced(
        settings: Settings, backend: LocalBackend) -> None:
    live = MemoryLiveState()
    [lost] = backend.start(1, "v1")
    stale = utcnow() - timedelta(seconds=120)
    await live.heartbeat(Node(id=lost.node_id, image_version="v1", address=lost.address,
                              state=NodeState.ACTIVE, active_broadcasts=1,
                              heartbeat_at=stale), 600)
    await live.put_broadcast(Broadcast(id="b1", channel="alice", node_id=lost.node_id))
    await live.put_broadcast(Broadcast(id="b2", channel="bob", node_id="elsewhere"))
    events = await live.subscribe(BROADCASTS_TOPIC)
    result = await Scheduler(settings, live, backend).tick()
    assert result.summary()["actions"] == [f"lost {lost.node_id}", "start 1 on v1"]
    failed = await live.get_broadcast("b1")
    assert failed is not None and failed.state == BroadcastState.FAILED
    assert failed.ended_at is not None
    other = await live.get_broadcast("b2")
    assert other is not None and other.state == BroadcastState.LIVE
    event = await asyncio.wait_for(events.get(), 5)
    assert event == BroadcastFailed("b1", "alice", f"ingest node {lost.node_id} lost")
    await events.close()
    assert await live.get_node_command(lost.node_id) == "stop"
    assert lost.node_id not in {i.node_id for i in backend.list_instances()}


async def test_two_ticks_at_once_one_runs(settings: Settings, backend: LocalBackend) -> None:
    scheduler = Scheduler(settings, MemoryLiveState(), backend)
    results = await asyncio.gather(scheduler.tick(), scheduler.tick())
    assert sorted(r.ran for r in results) == [False, True]
    assert len(backend.list_instances()) == 1


async def test_a_failing_action_does_not_stop_the_others(settings: Settings,
                                                        tmp_path: Path) -> None:
    broken = LocalBackend(settings, command=[str(tmp_path / "no-such-binary")])
    live = MemoryLiveState()
    # a silent node: lost (must be applied) and replaced (start fails: no binary)
    await live.heartbeat(Node(id="gone", image_version="v1", address="127.0.0.1:1",
                              state=NodeState.ACTIVE,
                              heartbeat_at=utcnow() - timedelta(minutes=5)), 600)
    result = await Scheduler(settings, live, broken).tick()
    assert result.summary()["actions"] == ["lost gone", "start 1 on v1"]
    assert len(result.errors) == 1 and "start 1 on v1" in result.errors[0]
    assert await live.get_node_command("gone") == "stop"


async def test_run_ticks_until_stopped(settings: Settings, backend: LocalBackend) -> None:
    scheduler = Scheduler(settings, MemoryLiveState(), backend)
    stop = asyncio.Event()
    runner = asyncio.create_task(scheduler.run(interval_s=0.05, stop=stop))
    while not backend.list_instances():
        await asyncio.sleep(0.01)  # polling a condition, bounded by the test timeout
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert len(backend.list_instances()) == 1


async def test_a_drain_order_that_got_lost_is_given_again(settings: Settings,
                                                         backend: LocalBackend) -> None:
    live = MemoryLiveState()
    scheduler = Scheduler(settings, live, backend)
    now = utcnow()
    for node_id, version in (("old", "v0"), ("new", "v1")):
        await live.heartbeat(Node(id=node_id, image_version=version, address="127.0.0.1:1",
                                  state=NodeState.ACTIVE, active_broadcasts=1,
                                  heartbeat_at=now), 600)
    first = await scheduler.tick()
    assert first.summary()["actions"] == ["drain old (expired)"]
    await live.set_node_command("old", None)  # lost, e.g. the live state was flushed
    await live.heartbeat(Node(id="old", image_version="v0", address="127.0.0.1:1",
                              state=NodeState.ACTIVE, active_broadcasts=1,
                              heartbeat_at=utcnow()), 600)
    await scheduler.tick()
    assert await live.get_node_command("old") == "drain"


class RoutingLog(LocalBackend):
    """The local backend, with its load balancer calls (a no-op there) written down."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, command=SLEEPER)
        self.routable: dict[str, bool] = {}

    def set_routable(self, node: Node, routable: bool) -> None:
        self.routable[node.id] = routable


@pytest.fixture
def routing(settings: Settings) -> Iterator[RoutingLog]:
    b = RoutingLog(settings)
    yield b
    b.stop_all()  # the nodes a tick started (sleepers) end with the test


async def one_full_node_and_two_nearly_empty() -> MemoryLiveState:
    """a with 4 broadcasts, b and c with one each, all broadcasts 30 minutes old."""
    live = MemoryLiveState()
    now = utcnow()
    started = now - timedelta(minutes=30)
    for node_id, active in (("a", 4), ("b", 1), ("c", 1)):
        await live.heartbeat(Node(id=node_id, image_version="v1", address="", capacity=8,
                                  state=NodeState.ACTIVE, active_broadcasts=active,
                                  heartbeat_at=now), 60.0)
        for k in range(active):
            await live.put_broadcast(Broadcast(id=f"{node_id}{k}", channel=f"{node_id}{k}",
                                               node_id=node_id, started_at=started))
    return live


async def test_closed_nodes_leave_the_load_balancer_and_keep_their_broadcasts(
        settings: Settings, routing: RoutingLog) -> None:
    backend = routing
    # a holds 4 broadcasts, b and c one each: a's free slots hold the headroom (2) and
    # the hysteresis (2), so b and c close; nobody drains, nobody is told anything
    live = await one_full_node_and_two_nearly_empty()
    scheduler = Scheduler(settings, live, backend)
    result = await scheduler.tick()
    actions = result.summary()["actions"]
    assert isinstance(actions, list) and sorted(actions) == ["close b", "close c"]
    assert backend.routable == {"a": True, "b": False, "c": False}
    assert await live.get_node_command("b") is None  # still active: not drained
    # the next tick keeps them out (every tick re-applies the routing)
    backend.routable.clear()
    again = await scheduler.tick()
    assert again.summary()["actions"] == []
    assert backend.routable == {"a": True, "b": False, "c": False}


async def test_behind_edges_a_closed_node_is_told_so_and_the_edges_see_it(
        settings: Settings, routing: RoutingLog) -> None:
    live = await one_full_node_and_two_nearly_empty()
    edged = settings.model_copy(update={"edge_tier": True, "edge_headroom_min_slots": 0,
                                        "edge_headroom_fraction": 0.0})
    scheduler = Scheduler(edged, live, routing)
    result = await scheduler.tick()
    actions = result.summary()["actions"]
    assert isinstance(actions, list)
    assert sorted(a for a in actions if a.startswith("close")) == ["close b", "close c"]
    # no load balancer sits in front of them: the command reaches the nodes, whose
    # agents heartbeat it (Node.routable), which the edges' placement reads
    assert [await live.get_node_command(n) for n in "abc"] == [None, CLOSE, CLOSE]


async def test_the_headroom_is_sized_on_the_publish_rate_read_from_the_live_state(
        settings: Settings, routing: RoutingLog) -> None:
    live = MemoryLiveState()
    now = utcnow()
    await live.heartbeat(Node(id="a", image_version="v1", address="", capacity=8,
                              state=NodeState.ACTIVE, active_broadcasts=8,
                              heartbeat_at=now), 60.0)
    # 6 publishes in the last 10 minutes (one already ended, one already archived and
    # gone from the live state's list), 2 older ones
    for k, minutes in enumerate((1, 2, 3, 5, 8, 9, 30, 90)):
        await live.put_broadcast(Broadcast(
            id=f"b{k}", channel=f"c{k}", node_id="a",
            state=BroadcastState.ENDED if k <= 1 else BroadcastState.LIVE,
            started_at=now - timedelta(minutes=minutes)))
    await live.remove_broadcast("b1")
    result = await Scheduler(settings, live, routing, clock=lambda: now).tick()
    summary = result.summary()
    assert summary["publish_rate_per_min"] == 0.6
    # 0.6 a minute over a tick and a start (3 min): Poisson(1.8) -> 7 free slots wanted
    assert summary["headroom"] == 7 and summary["actions"] == ["start 1 on v1"]


async def test_with_an_edge_tier_each_tier_is_started_through_the_backend_with_its_tier(
        settings: Settings) -> None:
    edged = settings.model_copy(update={"edge_tier": True, "edge_capacity": 100,
                                        "edge_headroom_min_slots": 20})
    backend = LocalBackend(edged, command=SLEEPER, edge_command=SLEEPER)
    try:
        scheduler = Scheduler(edged, MemoryLiveState(), backend)
        first = await scheduler.tick()
        summary = first.summary()
        assert summary["actions"] == ["start 1 edge on v1", "start 1 on v1"]
        assert {i.tier for i in backend.list_instances()} == {NodeTier.EDGE,
                                                              NodeTier.TRANSCODE}
        tiers = summary["tiers"]
        assert isinstance(tiers, dict) and set(tiers) == {"edge", "transcode"}
        # the launched nodes count while they start, each in its own tier
        assert (await scheduler.tick()).summary()["actions"] == []
    finally:
        backend.stop_all()


async def test_an_edge_heartbeat_is_decided_by_the_edge_policy_only(
        settings: Settings, routing: RoutingLog) -> None:
    # a full edge node starts another edge node, not a transcoding one
    edged = settings.model_copy(update={"edge_tier": True, "edge_capacity": 100})
    live = MemoryLiveState()
    now = utcnow()
    await live.heartbeat(Node(id="e1", image_version="v1", address="", capacity=100,
                              state=NodeState.ACTIVE, active_broadcasts=95,
                              heartbeat_at=now, tier=NodeTier.EDGE), 60.0)
    await live.heartbeat(Node(id="t1", image_version="v1", address="", capacity=8,
                              state=NodeState.ACTIVE, active_broadcasts=1,
                              reconnectable=1, heartbeat_at=now), 60.0)
    result = await Scheduler(edged, live, routing, clock=lambda: now).tick()
    assert result.summary()["actions"] == ["start 1 edge on v1"]
    assert [i.tier for i in routing.list_instances()] == [NodeTier.EDGE]


def test_merge_view_gives_a_silent_edge_its_publishers_and_no_cost() -> None:
    now = utcnow()
    view = merge_view([], [Instance("e", "v1", now, tier=NodeTier.EDGE),
                           Instance("t", "v1", now)], 8, 1.7, edge_capacity=200)
    assert [(n.id, n.tier, n.capacity, n.cost_capacity) for n in view] == [
        ("e", NodeTier.EDGE, 200, 0.0), ("t", NodeTier.TRANSCODE, 8, 1.7)]


def test_behind_edges_a_reopened_transcoding_node_counts_without_a_registration_delay(
        settings: Settings) -> None:
    class BehindAnNlb(RoutingLog):
        register_delay_s = 90.0  # the ECS backend's: NLB registration and health checks

    backend = BehindAnNlb(settings)
    try:
        one_tier = Scheduler(settings, MemoryLiveState(), backend)
        assert one_tier.policy.open_lead_s == 90.0
        edged = Scheduler(settings.model_copy(update={"edge_tier": True,
                                                      "heartbeat_ttl_s": 30.0}),
                          MemoryLiveState(), backend)
        # the edges see it open at its next heartbeat; the edges themselves are
        # behind the load balancer
        assert edged.policy.open_lead_s == 5.0
        assert edged.edge_policy is not None and edged.edge_policy.open_lead_s == 90.0
    finally:
        backend.stop_all()
