"""The static backend: a fleet run outside castway (compose services, `castway serve`).

Nodes are real NodeAgents heartbeating into the in-process live state, as in
`castway serve`; the scheduler ticks against them through the static backend.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from castway.live.memory import MemoryLiveState
from castway.model import NodeState, NodeTier
from castway.settings import Settings
from scheduler.agent import STOP, NodeAgent
from scheduler.backends.base import BackendError
from scheduler.backends.static import StaticBackend
from scheduler.factory import make_scheduler
from scheduler.metrics import SchedulerMetrics
from scheduler.tick import Scheduler, describe


def agent(tmp_path: Path, live: MemoryLiveState, node_id: str, version: str,
          active: list[int]) -> NodeAgent:
    settings = Settings(data_dir=tmp_path, node_id=node_id, image_version=version,
                        node_capacity=8, heartbeat_ttl_s=30.0)
    node = NodeAgent(settings, live, lambda: active[0], interval_s=0.05)
    node.ready()
    return node


async def test_the_heartbeats_are_the_fleet_it_launches_nothing() -> None:
    backend = StaticBackend(MemoryLiveState())
    assert backend.list_instances() == []


async def test_start_warns_and_counts_the_wanted_nodes_instead_of_failing(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = SchedulerMetrics()
    backend = StaticBackend(MemoryLiveState(), on_wanted=metrics.nodes_wanted.inc)
    with caplog.at_level(logging.WARNING, logger="scheduler.backends.static"):
        assert await asyncio.to_thread(backend.start, 3, "v2") == []
    assert "3 more nodes wanted" in caplog.text
    assert metrics.registry.get_sample_value("castway_scheduler_nodes_wanted_total") == 3.0


async def test_the_same_shortfall_is_warned_once_not_every_tick(
        caplog: pytest.LogCaptureFixture) -> None:
    """The embedded platform's scheduler asks for a node each minute; the log says it
    once, and again only when the shortfall changes."""
    backend = StaticBackend(MemoryLiveState())
    with caplog.at_level(logging.WARNING, logger="scheduler.backends.static"):
        for count in (1, 1, 1, 2, 2, 0, 1):
            await asyncio.to_thread(backend.start, count, "v2")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{n} more nodes wanted: the static backend cannot start nodes "
                      "(scale the compose service or the fleet by hand)" for n in (1, 2, 1)]


async def test_stop_sets_the_node_command_and_the_node_exits_by_itself(
        tmp_path: Path) -> None:
    live = MemoryLiveState()
    node = agent(tmp_path, live, "web-1", "v1", [0])
    await node.beat()
    backend = StaticBackend(live)
    await asyncio.to_thread(backend.stop, "web-1")
    assert await live.get_node_command("web-1") == STOP
    await node.beat()
    assert node.stopped.is_set() and node.state == NodeState.STOPPED


async def test_stop_called_on_the_event_loop_itself_is_refused_not_deadlocked() -> None:
    backend = StaticBackend(MemoryLiveState())
    with pytest.raises(BackendError, match="worker thread"):
        backend.stop("web-1")


def test_outside_an_event_loop_it_needs_the_loop() -> None:
    with pytest.raises(BackendError, match="event loop"):
        StaticBackend(MemoryLiveState())


async def test_the_factory_builds_it_and_never_scales_a_static_fleet_in(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scheduler_backend="static", redis_url=None)
    scheduler = make_scheduler(settings, MemoryLiveState())
    assert isinstance(scheduler.backend, StaticBackend)
    assert scheduler.policy.scale_in is False


async def test_a_deploy_on_a_static_fleet_stops_the_old_node_after_its_broadcast(
        tmp_path: Path) -> None:
    live = MemoryLiveState()
    settings = Settings(data_dir=tmp_path, scheduler_backend="static", redis_url=None,
                        image_version="v1", desired_version="v2", heartbeat_ttl_s=30.0)
    scheduler = make_scheduler(settings, live)
    assert isinstance(scheduler, Scheduler)
    old_load = [1]
    old = agent(tmp_path, live, "web-1", "v1", old_load)
    await old.beat()

    # no v2 node yet: the scheduler wants one, says so, and keeps the old node serving
    result = await scheduler.tick()
    assert result.decision is not None
    assert [describe(a) for a in result.decision.actions] == ["start 1 on v2"]
    assert result.errors == ()
    wanted = scheduler.metrics.registry.get_sample_value(  # type: ignore[union-attr]
        "castway_scheduler_nodes_wanted_total")
    assert wanted == 1.0

    # compose brings up the new version: the old node is drained, not cut
    new = agent(tmp_path, live, "web-2", "v2", [0])
    await new.beat()
    result = await scheduler.tick()
    assert result.decision is not None
    assert "drain web-1 (expired)" in [describe(a) for a in result.decision.actions]
    await old.beat()
    assert old.state == NodeState.DRAINING and not old.stopped.is_set()
    result = await scheduler.tick()
    assert result.decision is not None
    assert not any(describe(a).startswith("stop") for a in result.decision.actions)

    # its broadcast ends: the next tick stops it, and the node exits by itself
    old_load[0] = 0
    await old.beat()
    result = await scheduler.tick()
    assert result.decision is not None
    assert "stop web-1 (drained)" in [describe(a) for a in result.decision.actions]
    await old.beat()
    assert old.stopped.is_set()
    await new.beat()
    assert not new.stopped.is_set()


async def test_edge_nodes_wanted_are_warned_apart_from_transcoding_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    wanted: list[int] = []
    backend = StaticBackend(MemoryLiveState(), on_wanted=wanted.append)
    with caplog.at_level(logging.WARNING, logger="scheduler.backends.static"):
        assert backend.start(2, "v1", tier=NodeTier.EDGE) == []
        assert backend.start(3, "v1") == []
        backend.start(2, "v1", tier=NodeTier.EDGE)  # the same shortfall: once
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["2 more edge nodes wanted: the static backend cannot start nodes "
                      "(scale the compose service or the fleet by hand)",
                      "3 more nodes wanted: the static backend cannot start nodes "
                      "(scale the compose service or the fleet by hand)"]
    assert wanted == [2, 3, 2]
