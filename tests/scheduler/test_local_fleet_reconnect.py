"""The acceptance scenario with reconnect, on one machine: a deploy moves a
reconnect-capable publisher to a new-version process and its broadcast continues there;
the old process it left stops as soon as it is empty, while the old process holding a
plain ffmpeg publisher stops only after that broadcast ends.

The nodes are real ``castway ingest`` processes started by the local backend (castway's
IngestNode: RTMP server, BroadcastManager, node agent; transcoding off), sharing a real
redis-server (live state, heartbeats, hand-overs), one SQLite catalog file and file
storage. There is no load balancer: the draining node sends the publisher to an active
node of the new version it finds in the heartbeats. The reconnect-capable publisher is
tests/ingest/reconnect_client.py (make before break, as the E-RTMP v2 spec describes);
the plain one is the ffmpeg CLI, which cannot reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from castway.catalog import open_catalog
from castway.events.broadcasts import (
    BROADCASTS_TOPIC,
    BroadcastEvent,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.keys import hash_stream_key
from castway.live.base import LiveState, Subscription
from castway.model import Channel, Node, NodeState, StreamKey
from castway.settings import Settings
from scheduler.backends.local import LocalBackend
from scheduler.coordination import RedisCoordinator
from scheduler.tick import Scheduler
from tests.ingest.reconnect_client import ReconnectingPublisher
from tests.scheduler.test_local_fleet import actions, publish, until
from tests.support import require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

MOVER_KEY = "cw_mover-key"
PLAIN_KEY = "cw_plain-key"
PLAIN_SECONDS = 20.0  # the plain broadcast's length: far beyond the move


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    # 2 slots a node and 4 free slots of headroom: the first tick starts two nodes
    return Settings(data_dir=tmp_path / "data", redis_url=redis_url, image_version="v1",
                    database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
                    storage_url=str(tmp_path / "storage"), host="127.0.0.1",
                    node_capacity=2, headroom_min_slots=4, heartbeat_ttl_s=5.0,
                    scheduler_interval_s=1.0)


@pytest.fixture
def backend(settings: Settings) -> Iterator[LocalBackend]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env.update(PYTHONPATH=str(Path.cwd()), CASTWAY_TRANSCODE="false",
               CASTWAY_DATABASE_URL=settings.effective_database_url,
               CASTWAY_STORAGE_URL=settings.effective_storage_url,
               CASTWAY_HTTP_PORT="0", CASTWAY_RECONNECT_GRACE_S="2",
               CASTWAY_STOP_TIMEOUT_S="5", CASTWAY_LOG_JSON="true")
    b = LocalBackend(settings, command=[sys.executable, "-m", "launch.cli", "ingest"],
                     env=env)
    yield b
    b.stop_all()


@contextlib.asynccontextmanager
async def streaming(pub: ReconnectingPublisher) -> AsyncIterator[None]:
    """Keyframes at 25 fps in the background; the publisher follows a reconnect
    request on the next frame."""
    async def run() -> None:
        while True:
            await pub.send_frame()
            await asyncio.sleep(0.04)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        if task.done():
            task.result()  # what stopped the stream (a failed reconnect) fails the test
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def collect(sub: Subscription[BroadcastEvent], into: list[BroadcastEvent]) -> None:
    while True:
        into.append(await sub.get())


async def test_a_deploy_moves_a_reconnect_capable_publisher_and_its_broadcast_goes_on(
        settings: Settings, backend: LocalBackend, live: LiveState,
        h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    catalog = open_catalog(settings)  # the schema exists before the nodes open it
    for channel, key in (("mover", MOVER_KEY), ("plain", PLAIN_KEY)):
        catalog.create_channel(Channel(channel))
        catalog.add_stream_key(StreamKey(channel, hash_stream_key(key)))
    catalog.close()
    coordinator = RedisCoordinator(settings.redis_url or "")
    scheduler = Scheduler(settings, live, backend, coordinator=coordinator)
    mover = ReconnectingPublisher(MOVER_KEY, make_before_break=True)
    plain: subprocess.Popen[bytes] | None = None
    events: list[BroadcastEvent] = []
    async with await live.subscribe(BROADCASTS_TOPIC) as sub:
        watcher = asyncio.create_task(collect(sub, events))
        try:
            async def nodes(version: str, state: NodeState) -> list[Node]:
                return [n for n in await live.list_nodes()
                        if n.image_version == version and n.state == state]

            assert actions(await scheduler.tick()) == ["start 2 on v1"]

            async def two_v1_active() -> bool:
                return len(await nodes("v1", NodeState.ACTIVE)) == 2
            await until("two v1 nodes active", two_v1_active)
            node_a, node_b = sorted(await nodes("v1", NodeState.ACTIVE), key=lambda n: n.id)

            # the reconnect-capable publisher on A, a plain ffmpeg one on B
            await mover.start(f"rtmp://{node_a.address}/live")
            plain = publish(ffmpeg, h264_aac_flv, node_b.address, PLAIN_KEY, PLAIN_SECONDS)
            async with streaming(mover):
                async def both_live() -> bool:
                    by_id = {n.id: n for n in await live.list_nodes()}
                    return (by_id[node_a.id].active_broadcasts, by_id[node_a.id].reconnectable,
                            by_id[node_b.id].active_broadcasts) == (1, 1, 1)
                await until("both broadcasts live", both_live)
                mover_live = await live.live_broadcast("mover")
                assert mover_live is not None and mover_live.node_id == node_a.id
                broadcast_id = mover_live.id

                # deploy: the new version starts first, then the old nodes drain
                [start] = actions(await scheduler.tick("v2"))
                assert start.startswith("start ") and start.endswith(" on v2")

                async def v2_active() -> bool:
                    return len(await nodes("v2", NodeState.ACTIVE)) == int(start.split()[1])
                await until("the v2 nodes active", v2_active)
                new_ids = {n.id for n in await nodes("v2", NodeState.ACTIVE)}
                assert sorted(actions(await scheduler.tick("v2"))) == sorted(
                    f"drain {n.id} (expired)" for n in (node_a, node_b))
                drained_at = time.monotonic()

                # A asks its publisher to move, to a v2 process (no load balancer here)
                async def moved() -> bool:
                    return bool(mover.reconnect_requests) and mover.link is not None
                await until("the publisher asked to move", moved, timeout_s=30)
                [target] = mover.reconnect_requests
                assert target in {f"rtmp://{n.address}/live"
                                  for n in await nodes("v2", NodeState.ACTIVE)}

                # The same broadcast continues there; A stops once empty, B does not.
                stopped: dict[str, float] = {}
                deadline = time.monotonic() + 60
                while node_a.id not in stopped:
                    assert time.monotonic() < deadline, "the emptied v1 node never stopped"
                    for action in actions(await scheduler.tick("v2")):
                        if action.startswith("stop "):
                            stopped[action.split()[1]] = time.monotonic()
                    await asyncio.sleep(0.5)  # the scheduler's cadence, shortened
                assert node_b.id not in stopped
                assert stopped[node_a.id] - drained_at < 15  # emptied in a few beats
                assert plain.poll() is None  # the plain broadcast is still going on
                moved_to = await live.get_broadcast(broadcast_id)
                assert moved_to is not None and moved_to.node_id in new_ids
                assert {i.node_id for i in backend.list_instances()} >= {node_b.id}
                assert node_a.id not in {i.node_id for i in backend.list_instances()}

                # B stops only after its ffmpeg broadcast ends, on its own
                while node_b.id not in stopped:
                    assert time.monotonic() < deadline + PLAIN_SECONDS, "B never stopped"
                    for action in actions(await scheduler.tick("v2")):
                        if action.startswith("stop "):
                            node_id = action.split()[1]
                            assert node_id == node_b.id, action
                            assert plain.poll() is not None, "B stopped while live"
                            stopped[node_id] = time.monotonic()
                    await asyncio.sleep(0.5)
                assert plain.wait(30) == 0  # the plain broadcast ran to its own end
                assert stopped[node_b.id] - stopped[node_a.id] > 5  # A went well before
                # the moved broadcast is still live on its v2 process, the same one
                still = await live.get_broadcast(broadcast_id)
                assert still is not None and still.node_id == moved_to.node_id
            mover_events = [e for e in events if e.broadcast_id == broadcast_id]
            assert mover_events == [BroadcastStarted(broadcast_id, "mover"),
                                    BroadcastResumed(broadcast_id, "mover",
                                                     moved_to.node_id)]
            assert {i.version for i in backend.list_instances()} == {"v2"}
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await mover.close()
            if plain is not None and plain.poll() is None:
                plain.kill()
                plain.wait()
            await coordinator.close()
