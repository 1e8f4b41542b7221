"""NodeAgent: heartbeats the node, follows drain/resume/stop, answers admission."""

from __future__ import annotations

import asyncio
from pathlib import Path

from castway.cost import AdmissionMode, CostLedger
from castway.live.memory import MemoryLiveState
from castway.model import NodeState
from castway.settings import Settings
from scheduler.agent import CLOSE, OPEN, NodeAgent


def make(tmp_path: Path, live: MemoryLiveState, active: list[int],
         reconnectable: list[int] | None = None) -> NodeAgent:
    settings = Settings(data_dir=tmp_path, node_id="node-a", image_version="v7",
                        node_capacity=2, rtmp_port=19350, heartbeat_ttl_s=3.0)
    return NodeAgent(settings, live, lambda: active[0], lambda: 0.25,
                     reconnectable=(lambda: reconnectable[0]) if reconnectable else None,
                     interval_s=0.05)


async def test_heartbeat_carries_the_node_as_the_scheduler_needs_it(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [1], [1])
    await agent.beat()
    [node] = await live.list_nodes()
    assert (node.id, node.image_version, node.address) == ("node-a", "v7", "127.0.0.1:19350")
    assert (node.state, node.capacity, node.active_broadcasts, node.cpu,
            node.reconnectable) == (NodeState.STARTING, 2, 1, 0.25, 1)


async def test_admission_follows_the_lifecycle(tmp_path: Path) -> None:
    live = MemoryLiveState()
    active = [0]
    agent = make(tmp_path, live, active)
    assert agent.admission() == "ingest node is starting"
    agent.ready()
    assert agent.admission() is None
    active[0] = 2
    assert agent.admission() == "ingest node is full (2/2 broadcasts)"
    active[0] = 1
    await live.set_node_command("node-a", "drain")
    await agent.beat()
    assert agent.state == NodeState.DRAINING
    reason = agent.admission()
    assert reason is not None and "draining" in reason
    [node] = await live.list_nodes()
    assert node.state == NodeState.DRAINING  # acknowledged in the same heartbeat


async def test_drain_runs_the_on_drain_hooks_once_and_resume_reopens(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [1])
    agent.ready()
    calls: list[str] = []

    async def send_reconnect_requests() -> None:
        calls.append("async")

    def log_it() -> None:
        calls.append("sync")

    agent.on_drain(send_reconnect_requests)
    agent.on_drain(log_it)
    await live.set_node_command("node-a", "drain")
    await agent.beat()
    await agent.beat()
    assert calls == ["async", "sync"]
    await live.set_node_command("node-a", "resume")
    await agent.beat()
    assert agent.state == NodeState.ACTIVE and agent.admission() is None


async def test_a_failing_hook_does_not_stop_the_drain(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [0])

    def broken() -> None:
        raise RuntimeError("peer gone")

    agent.on_drain(broken)
    await live.set_node_command("node-a", "drain")
    await agent.beat()
    assert agent.state == NodeState.DRAINING


async def test_stop_command_ends_the_run_loop_and_reports_stopped(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [0])
    agent.ready()
    runner = asyncio.create_task(agent.run())
    await live.set_node_command("node-a", "stop")
    await asyncio.wait_for(agent.stopped.wait(), 5)
    await asyncio.wait_for(runner, 5)
    [node] = await live.list_nodes()
    assert node.state == NodeState.STOPPED


async def test_unknown_commands_are_ignored(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [0])
    agent.ready()
    await live.set_node_command("node-a", "explode")
    await agent.beat()
    assert agent.state == NodeState.ACTIVE


async def test_close_heartbeats_a_last_stopped(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [0])
    runner = asyncio.create_task(agent.run())
    await agent.close()
    await asyncio.wait_for(runner, 5)
    [node] = await live.list_nodes()
    assert node.state == NodeState.STOPPED


async def test_start_and_stop_own_the_background_heartbeat(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [0])
    await agent.start()  # the listener is up: active at once
    assert agent.state == NodeState.ACTIVE
    while not await live.list_nodes():
        await asyncio.sleep(0.01)  # the first heartbeat, bounded by the test timeout
    await agent.stop()
    [node] = await live.list_nodes()
    assert node.state == NodeState.STOPPED and agent.stopped.is_set()


async def test_a_node_admits_on_transcode_cost_and_heartbeats_it(tmp_path: Path) -> None:
    live = MemoryLiveState()
    settings = Settings(data_dir=tmp_path, node_id="node-a", node_capacity=8)
    ledger = CostLedger(1.7, AdmissionMode.REFUSE, publish_reserve=0.6)
    agent = NodeAgent(settings, live, lambda: 2, ledger=ledger)
    agent.ready()
    ledger.reserve("b1", 0.9)
    assert agent.admission() is None  # 0.8 free, a 0.6 reservation fits
    ledger.reserve("b2", 0.3)
    ledger.measure("b2", 0.4)  # counted at the larger: 1.3 used
    reason = agent.admission()
    assert reason is not None and "transcode capacity" in reason  # slots are left: 2/8
    await agent.beat()
    [node] = await live.list_nodes()
    assert (node.cost_capacity, node.cost_used) == (1.7, 1.3)
    # each broadcast's cost too: the mix the scheduler costs expected publishes on
    assert sorted(node.broadcast_costs) == [0.4, 0.9]
    assert node.cost_error is not None and abs(node.cost_error - 1 / 3) < 1e-9


async def test_close_and_open_are_heartbeated_for_the_edges(tmp_path: Path) -> None:
    live = MemoryLiveState()
    agent = make(tmp_path, live, [1])
    await agent.beat()
    assert [n.routable for n in await live.list_nodes()] == [True]
    await live.set_node_command("node-a", CLOSE)
    await agent.beat()
    [node] = await live.list_nodes()
    assert not node.routable and node.state is NodeState.STARTING  # nothing else changes
    await live.set_node_command("node-a", OPEN)
    await agent.beat()
    assert [n.routable for n in await live.list_nodes()] == [True]
