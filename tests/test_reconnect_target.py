"""Where a draining ingest node sends its reconnect-capable publishers.

Behind a load balancer (``public_rtmp_url`` set) it is the load-balanced URL. Without
one (the local and static backends: publishers reach nodes at their own address), the
node's own URL would bring the publisher straight back to a node that is draining, so
the node picks another from the fleet's heartbeats: active, not itself, with a free
slot, on a different image version than its own first (a deploy's new nodes), then the
one with the most free slots; with none, the public URL as before."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from castway.keys import hash_stream_key
from castway.model import Channel, Node, NodeState, StreamKey
from castway.settings import Settings
from launch.ingest_node import IngestNode, pick_reconnect_target
from launch.services import Services
from tests.ingest.reconnect_client import ReconnectingPublisher
from tests.support import free_port


def node(node_id: str, version: str, state: NodeState = NodeState.ACTIVE, *,
         active: int = 0, capacity: int = 4) -> Node:
    return Node(id=node_id, image_version=version, address=f"10.0.0.{len(node_id)}:1935",
                state=state, capacity=capacity, active_broadcasts=active)


def test_the_target_is_an_active_node_with_room_newer_version_first() -> None:
    me = node("me", "v1", NodeState.DRAINING, active=1)
    fleet = [me,
             node("old-roomy", "v1", active=0),        # same version, most room
             node("new-busy", "v2", active=3),         # other version, 1 slot
             node("new-roomy", "v2", active=1),        # other version, 3 slots
             node("new-draining", "v2", NodeState.DRAINING),
             node("new-full", "v2", active=4),
             node("new-starting", "v2", NodeState.STARTING)]
    target = pick_reconnect_target(fleet, "me", "v1")
    assert target is not None and target.id == "new-roomy"
    # no other version (a scale-in): the same version's roomiest active node
    same = [n for n in fleet if n.image_version == "v1"]
    target = pick_reconnect_target(same, "me", "v1")
    assert target is not None and target.id == "old-roomy"
    # room is transcode cost where a node reports it: the most free cores first
    costed = [me, replace(node("new-many-slots", "v2"), cost_capacity=1.7, cost_used=1.6),
              replace(node("new-few-slots", "v2", active=3), cost_capacity=1.7,
                      cost_used=0.4),
              replace(node("new-no-cores", "v2"), cost_capacity=1.7, cost_used=1.7)]
    target = pick_reconnect_target(costed, "me", "v1")
    assert target is not None and target.id == "new-few-slots"
    assert pick_reconnect_target([me, costed[3]], "me", "v1") is None
    # nobody else active with room: no target
    assert pick_reconnect_target([me, node("full", "v2", active=4),
                                  node("going", "v2", NodeState.DRAINING)],
                                 "me", "v1") is None


async def drained_node_sends_publisher_to(tmp_path: Path, others: list[Node],
                                          public_rtmp_url: str | None) -> tuple[str, Settings]:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "data", host="127.0.0.1", rtmp_port=port,
                        transcode=False, node_id="node-x", image_version="v1",
                        reconnect_grace_s=30.0, heartbeat_ttl_s=1.5,
                        public_rtmp_url=public_rtmp_url)
    services = Services.open(settings)
    services.catalog.create_channel(Channel("alpha"))
    services.catalog.add_stream_key(StreamKey("alpha", hash_stream_key("cw_alpha-key")))
    for other in others:  # the rest of the fleet, as their heartbeats show it
        await services.live.heartbeat(other, 60.0)
    ingest = IngestNode(services)
    await ingest.start()
    pub = ReconnectingPublisher("cw_alpha-key")
    try:
        await pub.start(f"rtmp://127.0.0.1:{port}/live")
        await pub.send_frame()
        await ingest.drain()
        return await asyncio.wait_for(_next_request(pub), 10), settings
    finally:
        await pub.close()
        await ingest.stop()
        await services.close()


async def _next_request(pub: ReconnectingPublisher) -> str:
    # Only the request is wanted here: read it without following it.
    assert pub.link is not None
    while True:
        cmd = await pub.link.commands.get()
        info = cmd[3] if len(cmd) > 3 else None
        if isinstance(info, dict) and info.get("code") == \
                "NetConnection.Connect.ReconnectRequest":
            url = info.get("tcUrl")
            assert isinstance(url, str)
            return url


async def test_without_a_load_balancer_the_publisher_is_sent_to_another_active_node(
        tmp_path: Path) -> None:
    others = [node("old-peer", "v1", active=0),
              Node(id="new-node", image_version="v2", address="127.0.0.1:41935",
                   state=NodeState.ACTIVE, capacity=4, active_broadcasts=1)]
    url, _ = await drained_node_sends_publisher_to(tmp_path, others, None)
    assert url == "rtmp://127.0.0.1:41935/live"


async def test_without_a_load_balancer_or_another_node_the_public_url_is_kept(
        tmp_path: Path) -> None:
    url, settings = await drained_node_sends_publisher_to(
        tmp_path, [node("draining-peer", "v2", NodeState.DRAINING)], None)
    assert url == settings.effective_public_rtmp_url == \
        f"rtmp://127.0.0.1:{settings.rtmp_port}/live"


async def test_behind_a_load_balancer_the_load_balanced_url_is_the_target(
        tmp_path: Path) -> None:
    url, _ = await drained_node_sends_publisher_to(
        tmp_path, [node("new-node", "v2")], "rtmp://ingest.example.com/live")
    assert url == "rtmp://ingest.example.com/live"


async def test_a_broadcast_waiting_for_its_publisher_keeps_its_slot_and_its_node(
        tmp_path: Path) -> None:
    # A dropped publisher may come back within the grace window (here or through another
    # node's handover, which needs this node alive): the heartbeat counts the broadcast,
    # so the scheduler does not stop a draining node under it, and admission keeps its slot.
    port = free_port()
    settings = Settings(data_dir=tmp_path / "data", host="127.0.0.1", rtmp_port=port,
                        transcode=False, node_id="node-x", reconnect_grace_s=30.0)
    services = Services.open(settings)
    services.catalog.create_channel(Channel("alpha"))
    services.catalog.add_stream_key(StreamKey("alpha", hash_stream_key("cw_alpha-key")))
    ingest = IngestNode(services)
    await ingest.start()
    pub = ReconnectingPublisher("cw_alpha-key")
    try:
        await pub.start(f"rtmp://127.0.0.1:{port}/live")
        await pub.send_frame()
        assert ingest.agent.snapshot().active_broadcasts == 1
        await pub.close()  # gone, within the grace window
        for _ in range(100):
            if ingest.server.active_publishers == 0:
                break
            await asyncio.sleep(0.05)
        assert ingest.server.active_publishers == 0
        assert ingest.manager.live_broadcasts == 1
        assert ingest.agent.snapshot().active_broadcasts == 1
    finally:
        await ingest.stop()
        await services.close()
