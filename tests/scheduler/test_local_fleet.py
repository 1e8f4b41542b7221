"""The acceptance scenario on one machine: three RTMP ingest processes with live
broadcasts from ffmpeg, then a deploy. Every broadcast runs to its own end, old
processes stop only after their broadcasts end, new publishes land on new processes.

The nodes are real processes started by the local backend, heartbeating through a real
redis-server; the publishers are the ffmpeg CLI's RTMP client. The node program is
tests/scheduler/ingest_stand_in.py (castway's IngestServer + NodeAgent, no transcoding).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from castway.live.base import LiveState
from castway.model import Node, NodeState
from castway.settings import Settings
from scheduler.backends.local import LocalBackend
from scheduler.coordination import RedisCoordinator
from scheduler.tick import Scheduler, TickResult, describe
from tests.support import require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

NODE_PROGRAM = [sys.executable, "-m", "tests.scheduler.ingest_stand_in"]


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    # 2 slots a node and 6 free slots of headroom: the first tick starts three nodes
    return Settings(data_dir=tmp_path, redis_url=redis_url, image_version="v1",
                    node_capacity=2, headroom_min_slots=6, heartbeat_ttl_s=5.0,
                    scheduler_interval_s=1.0)


@pytest.fixture
def backend(settings: Settings) -> Iterator[LocalBackend]:
    b = LocalBackend(settings, command=NODE_PROGRAM,
                     env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    yield b
    b.stop_all()


async def until(what: str, check: Callable[[], Awaitable[bool]],
                timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


def actions(result: TickResult) -> list[str]:
    assert result.decision is not None
    return [describe(a) for a in result.decision.actions]


def publish(ffmpeg: str, clip: Path, address: str, key: str, seconds: float
            ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(clip), "-t", str(seconds), "-c", "copy", "-f", "flv",
         f"rtmp://{address}/live/{key}"], stdin=subprocess.DEVNULL)


async def test_a_deploy_lets_every_broadcast_end_on_its_own(
        settings: Settings, backend: LocalBackend, live: LiveState,
        h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    coordinator = RedisCoordinator(settings.redis_url or "")
    scheduler = Scheduler(settings, live, backend, coordinator=coordinator)
    publishers: list[subprocess.Popen[bytes]] = []
    try:
        async def nodes(version: str, state: NodeState) -> list[Node]:
            return [n for n in await live.list_nodes()
                    if n.image_version == version and n.state == state]

        result = await scheduler.tick()
        assert actions(result) == ["start 3 on v1"]

        async def three_v1_active() -> bool:
            return len(await nodes("v1", NodeState.ACTIVE)) == 3
        await until("three v1 nodes active", three_v1_active)

        # one broadcast per node, each of its own length
        old = sorted(await nodes("v1", NodeState.ACTIVE), key=lambda n: n.id)
        lengths = {old[0].id: 6.0, old[1].id: 10.0, old[2].id: 14.0}
        by_node = {n.id: publish(ffmpeg, h264_aac_flv, n.address, f"key{i}", lengths[n.id])
                   for i, n in enumerate(old)}
        publishers += by_node.values()

        async def all_live() -> bool:
            return sum(n.active_broadcasts for n in await nodes("v1", NodeState.ACTIVE)) == 3
        await until("three broadcasts live", all_live)

        # deploy: the new version starts first, then the old nodes drain
        result = await scheduler.tick("v2")
        assert actions(result) == ["start 3 on v2"]

        async def three_v2_active() -> bool:
            return len(await nodes("v2", NodeState.ACTIVE)) == 3
        await until("three v2 nodes active", three_v2_active)
        result = await scheduler.tick("v2")
        assert sorted(actions(result)) == sorted(f"drain {n.id} (expired)" for n in old)

        async def old_draining() -> bool:
            return len(await nodes("v1", NodeState.DRAINING)) == 3
        await until("old nodes draining", old_draining)

        # a new publish: the old node refuses it clearly, it lands on a new one
        refused = publish(ffmpeg, h264_aac_flv, old[2].address, "late", 4.0)
        assert refused.wait(30) != 0
        new = sorted(await nodes("v2", NodeState.ACTIVE), key=lambda n: n.id)
        late = publish(ffmpeg, h264_aac_flv, new[0].address, "late", 4.0)
        publishers.append(late)

        async def late_on_new() -> bool:
            return any(n.active_broadcasts == 1 for n in await nodes("v2", NodeState.ACTIVE))
        await until("the late broadcast on a new node", late_on_new)

        # tick until the old nodes are gone; none may stop before its broadcast ended
        stopped_order: list[str] = []
        deadline = time.monotonic() + 90
        while len(stopped_order) < 3:
            assert time.monotonic() < deadline, "old nodes never stopped"
            result = await scheduler.tick("v2")
            for action in actions(result):
                if action.startswith("stop "):
                    node_id = action.split()[1]
                    assert by_node[node_id].poll() is not None, f"{node_id} stopped live"
                    stopped_order.append(node_id)
            await asyncio.sleep(0.5)  # the scheduler's cadence, shortened
        assert stopped_order == [n.id for n in old]  # in the order their broadcasts ended
        for proc in by_node.values():
            assert proc.wait(30) == 0  # every broadcast ran to its own end
        assert late.wait(30) == 0
        assert {i.version for i in backend.list_instances()} == {"v2"}
    finally:
        for proc in publishers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await coordinator.close()
