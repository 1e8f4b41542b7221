"""The edge tier on real processes: publishers that cannot reconnect (the ffmpeg CLI)
publish to ``castway edge``; the transcoding node holding a broadcast drains, and the
edge moves the broadcast to another node while the publisher stays connected. The
broadcast keeps its id, its playlists never go back, and its media has no gap longer
than a segment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from castway.live.base import LiveState
from castway.model import Broadcast, Node, NodeState, NodeTier
from scheduler.agent import DRAIN
from scheduler.backends.local import LocalBackend
from tests.edge.conftest import EdgeProcess, nodes_of
from tests.scheduler.test_local_fleet import publish, until
from tests.support import require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


class WindowWatch:
    """Samples every rendition window of a broadcast: what a player polling the live
    playlists would see, in order."""

    def __init__(self, live: LiveState, broadcast_id: str) -> None:
        self.live = live
        self.broadcast_id = broadcast_id
        self.went_back: list[str] = []
        self.last_msn: dict[str, int] = {}
        # rendition -> msn -> (program date time, duration, start pts)
        self.segments: dict[str, dict[int, tuple[float, float, float]]] = {}

    async def sample(self) -> None:
        broadcast = await self.live.get_broadcast(self.broadcast_id)
        if broadcast is None:
            return
        for rendition in broadcast.renditions:
            window = await self.live.get_window(self.broadcast_id, rendition.name)
            if window is None:
                continue
            last = self.last_msn.get(rendition.name)
            if last is not None and window.next_msn < last:
                self.went_back.append(f"{rendition.name}: {last} -> {window.next_msn}")
            self.last_msn[rendition.name] = window.next_msn
            seen = self.segments.setdefault(rendition.name, {})
            for s in window.segments:
                seen[s.msn] = (s.program_date_time.timestamp(), s.duration_s, s.start_pts_s)

    def largest_gap_s(self, clock: int = 0) -> float:
        """The longest time between one segment's end and the next one's start, on the
        wall clock (``clock`` 0: EXT-X-PROGRAM-DATE-TIME) or the media's (2: PTS)."""
        gap = 0.0
        for seen in self.segments.values():
            msns = sorted(seen)
            for a, b in zip(msns, msns[1:], strict=False):
                if b != a + 1:
                    continue
                end = seen[a][clock] + seen[a][1]
                gap = max(gap, seen[b][clock] - end)
        return gap


@contextlib.asynccontextmanager
async def watching(watch: WindowWatch) -> AsyncIterator[None]:
    async def run() -> None:
        while True:
            await watch.sample()
            await asyncio.sleep(0.2)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class OnAir:
    publisher: subprocess.Popen[bytes]
    broadcast: Broadcast  # as it went live
    edge: Node


@contextlib.asynccontextmanager
async def on_air_through_the_edge(backend: LocalBackend, live: LiveState, channel: str,
                                  key: str, clip: Path, *, transcoding_nodes: int = 2,
                                  seconds: float = 30.0) -> AsyncIterator[OnAir]:
    """The fleet up (``transcoding_nodes`` and the edge active), an ffmpeg publisher of
    ``clip`` on the edge, and its broadcast live with renditions; the publisher is
    stopped on the way out if it still runs."""
    ffmpeg = require_tool("ffmpeg")
    backend.start(transcoding_nodes, "v1")

    async def fleet_up() -> bool:
        return (len(await nodes_of(live, NodeTier.TRANSCODE)) == transcoding_nodes
                and len(await nodes_of(live, NodeTier.EDGE)) == 1)
    await until("the transcoding nodes and the edge active", fleet_up)
    [edge_node] = await nodes_of(live, NodeTier.EDGE)
    publisher = publish(ffmpeg, clip, edge_node.address, key, seconds)
    try:
        async def on_air() -> bool:
            b = await live.live_broadcast(channel)
            return b is not None and bool(b.renditions)
        await until("the broadcast live on a transcoding node", on_air)
        first = await live.live_broadcast(channel)
        assert first is not None
        yield OnAir(publisher, first, edge_node)
    finally:
        if publisher.poll() is None:
            publisher.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            publisher.wait(10)


async def until_elsewhere(live: LiveState, first: Broadcast, what: str,
                          timeout_s: float) -> Broadcast:
    """The broadcast, once on another node than it went live on: the same one."""
    async def elsewhere() -> bool:
        b = await live.live_broadcast(first.channel)
        return b is not None and b.node_id != first.node_id
    await until(what, elsewhere, timeout_s=timeout_s)
    now = await live.live_broadcast(first.channel)
    assert now is not None and now.id == first.id  # the same broadcast, not a new one
    return now


async def test_a_draining_node_hands_its_broadcast_to_another_through_the_edge(
        backend: LocalBackend, edge: EdgeProcess, live: LiveState,
        channels: dict[str, str], h264_aac_flv: Path) -> None:
    async with on_air_through_the_edge(backend, live, "alpha", channels["alpha"],
                                       h264_aac_flv) as air:
        watch = WindowWatch(live, air.broadcast.id)
        async with watching(watch):
            await asyncio.sleep(6)  # a few segments on the first node
            await live.set_node_command(air.broadcast.node_id, DRAIN)
            await until_elsewhere(live, air.broadcast, "the broadcast moved", 60)
            assert air.publisher.poll() is None, "the publisher stays connected to the edge"
            await asyncio.sleep(8)  # segments on the new node
        assert watch.went_back == []
        assert watch.largest_gap_s() <= 2.5, watch.segments
        assert watch.largest_gap_s(clock=2) <= 2.5, watch.segments
        drained = {n.id: n for n in await live.list_nodes()}[air.broadcast.node_id]
        assert drained.active_broadcasts == 0  # the drained node is empty: it may stop


def pid_of(backend: LocalBackend, node_id: str) -> int:
    record = json.loads((backend.state_dir / f"{node_id}.json").read_text())
    return int(record["pid"])


async def test_a_broadcast_whose_node_dies_goes_on_on_another_node(
        backend: LocalBackend, edge: EdgeProcess, live: LiveState,
        channels: dict[str, str], h264_aac_flv: Path) -> None:
    async with on_air_through_the_edge(backend, live, "beta", channels["beta"],
                                       h264_aac_flv) as air:
        watch = WindowWatch(live, air.broadcast.id)
        async with watching(watch):
            await asyncio.sleep(5)
            os.kill(pid_of(backend, air.broadcast.node_id), signal.SIGKILL)
            killed_at = time.monotonic()
            # within the grace window (CASTWAY_RECONNECT_GRACE_S=10)
            await until_elsewhere(live, air.broadcast, "the broadcast going on elsewhere", 10)
            recovered_s = time.monotonic() - killed_at
            assert air.publisher.poll() is None, "the publisher stays connected to the edge"
            at_recovery = dict(watch.last_msn)
            await asyncio.sleep(6)
        # every rendition goes on with new segments from the new node
        assert all(watch.last_msn[r] > msn for r, msn in at_recovery.items()), \
            (at_recovery, watch.last_msn)
        assert watch.went_back == []
        print(f"broadcast recovered on another node {recovered_s:.1f} s after its node died; "
              f"largest gap: {watch.largest_gap_s():.2f} s of program date time, "
              f"{watch.largest_gap_s(clock=2):.2f} s of media time")


def logged(log: Path, message: str) -> dict[str, object] | None:
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("msg") == message:
                return dict(record)
    return None


async def test_an_edge_refuses_a_second_publisher_and_told_to_stop_waits_for_its_own(
        backend: LocalBackend, edge: EdgeProcess, live: LiveState,
        channels: dict[str, str], h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    async with on_air_through_the_edge(backend, live, "alpha", channels["alpha"],
                                       h264_aac_flv, transcoding_nodes=1,
                                       seconds=12.0) as air:
        up = logged(edge.log, "edge node up")
        assert up is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{up['http_port']}") as http:
            assert (await http.get("/healthz")).status_code == 200
            assert "castway_edge_relays 1.0" in (await http.get("/metrics")).text
        # one publisher a channel, through the edge as anywhere: a second is refused
        second = publish(ffmpeg, h264_aac_flv, air.edge.address, channels["alpha"], 5.0)
        assert second.wait(30) != 0
        now = await live.live_broadcast("alpha")
        assert now is not None and now.id == air.broadcast.id and air.publisher.poll() is None
        edge.process.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return len(await nodes_of(live, NodeTier.EDGE, NodeState.DRAINING)) == 1
        await until("the edge draining", draining, timeout_s=10)
        refused = publish(ffmpeg, h264_aac_flv, air.edge.address, channels["beta"], 5.0)
        assert refused.wait(30) != 0  # a new publisher is refused
        assert await live.live_broadcast("beta") is None
        assert edge.process.poll() is None  # still relaying the one it has
        assert air.publisher.wait(40) == 0  # which runs to its own end
        assert edge.process.wait(20) == 0  # and then the edge exits
