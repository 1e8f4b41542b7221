"""Cross-node handover: two BroadcastManagers (two ingest nodes) on one live state, the
in-process one and Redis (each node with its own connection, as in production), and one
catalog. A publisher that comes back to the other node within the grace window continues
the same broadcast there; anything else is refused as before."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from castway.catalog import open_catalog
from castway.catalog.sql import SqlCatalog
from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEnded, BroadcastResumed
from castway.events.handover import HandoverReply, HandoverRequest, Verdict, request_topic
from castway.keys import hash_stream_key
from castway.live.base import LiveState
from castway.live.memory import MemoryLiveState
from castway.live.redis import RedisLiveState
from castway.model import Broadcast, BroadcastState, Channel, NodeState, StreamKey
from castway.model import Node as FleetNode
from castway.settings import Settings
from ingest import handover
from ingest.broadcasts import BroadcastManager
from ingest.handover import Decision, decide
from ingest.publish import PublishRequest, Rejection
from tests.ingest.test_broadcasts import (
    AUDIO_CONFIG,
    KEY,
    VIDEO_CONFIG,
    RecordingPipeline,
    accepted,
    frame,
    next_event,
)

# Short waits keep the refusals fast; the protocol is the same.
ACK_TIMEOUT_S = 0.5
PUBLISHER_WAIT_S = 0.3


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqlCatalog]:
    cat = open_catalog(Settings(data_dir=tmp_path))
    cat.create_channel(Channel("alpha"))
    cat.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    yield cat
    cat.close()


@pytest.fixture(params=["memory", "redis"])
async def lives(request: pytest.FixtureRequest) -> AsyncIterator[tuple[LiveState, LiveState]]:
    """The live state as node A and node B see it."""
    if request.param == "memory":
        memory = MemoryLiveState()
        yield memory, memory
        await memory.close()
        return
    url: str = request.getfixturevalue("redis_url")
    a, b = RedisLiveState(url), RedisLiveState(url)
    yield a, b
    await a.close()
    await b.close()


@dataclass
class Node:
    manager: BroadcastManager
    pipeline: RecordingPipeline
    registry: CollectorRegistry
    live: LiveState


@pytest.fixture
async def nodes(catalog: SqlCatalog, lives: tuple[LiveState, LiveState]
                ) -> AsyncIterator[tuple[Node, Node]]:
    made = []
    for node_id, live in zip(("node-a", "node-b"), lives, strict=True):
        registry, pipeline = CollectorRegistry(), RecordingPipeline()
        manager = BroadcastManager(
            Settings(node_id=node_id, reconnect_grace_s=30.0), catalog=catalog, live=live,
            pipeline=pipeline, registry=registry, handover_ack_timeout_s=ACK_TIMEOUT_S,
            handover_publisher_wait_s=PUBLISHER_WAIT_S)
        await manager.start()
        made.append(Node(manager, pipeline, registry, live))
    yield made[0], made[1]
    for node in made:
        await node.manager.stop()


def request(connection_id: str) -> PublishRequest:
    return PublishRequest(app="live", stream_key=KEY, peer="127.0.0.1:5000",
                          connection_id=connection_id)


async def test_a_publisher_back_on_another_node_within_grace_continues_the_broadcast(
        nodes: tuple[Node, Node], catalog: SqlCatalog) -> None:
    a, b = nodes
    on_a = await accepted(a.manager, request("a-1"))
    for packet in (VIDEO_CONFIG, AUDIO_CONFIG, frame(0)):
        await on_a.on_packet(packet)
    broadcast_id = a.manager.broadcast_id("alpha")
    assert broadcast_id is not None
    async with await b.live.subscribe(BROADCASTS_TOPIC) as events:
        await on_a.on_close("disconnected")  # A's grace window starts
        on_b = await accepted(b.manager, request("b-1"))
        assert await next_event(events) == BroadcastResumed(broadcast_id, "alpha", "node-b")
        # Same broadcast, now B's; A forgot it without ending it.
        assert b.manager.broadcast_id("alpha") == broadcast_id
        assert a.manager.broadcast_id("alpha") is None and a.manager.live_broadcasts == 0
        [a_media] = a.pipeline.started
        assert a_media.handed_over and not a_media.finished
        [b_media] = b.pipeline.handovers
        assert b_media.broadcast.id == broadcast_id and b_media.broadcast.node_id == "node-b"
        live = await b.live.live_broadcast("alpha")
        assert live is not None and live.id == broadcast_id and live.node_id == "node-b"
        stored = catalog.get_broadcast(broadcast_id)
        assert stored is not None and stored.node_id == "node-b"
        assert stored.state is BroadcastState.LIVE
        # The claim went straight to B's connection.
        assert await b.live.claim_channel("alpha", "someone-else", 30) == "b-1"
        assert b.registry.get_sample_value("castway_ingest_publishes_total",
                                           {"result": "handover"}) == 1
        await on_b.on_packet(frame(40))
        assert b_media.packets == [frame(40)]
        # The broadcast ends on B, when B's publisher goes and B's grace runs out: the
        # first event after "resumed" is that end.
        b.manager.settings = Settings(node_id="node-b", reconnect_grace_s=0)
        await on_b.on_close("disconnected")
        assert await next_event(events) == BroadcastEnded(broadcast_id, "alpha")
    assert b_media.finished and not a_media.finished
    ended = catalog.get_broadcast(broadcast_id)
    assert ended is not None and ended.state is BroadcastState.ENDED
    assert ended.node_id == "node-b"


async def test_a_publish_on_another_node_while_the_publisher_is_connected_is_refused(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    on_a = await accepted(a.manager, request("a-1"))
    broadcast_id = a.manager.broadcast_id("alpha")
    assert await b.manager.on_publish(request("b-1")) == Rejection.already_live()
    # A is untouched: same broadcast, same claim, its media still fed, not handed over.
    assert a.manager.broadcast_id("alpha") == broadcast_id
    [a_media] = a.pipeline.started
    assert not a_media.handed_over and not a_media.finished
    await on_a.on_packet(frame(0))
    assert a_media.packets == [frame(0)]
    live = await a.live.live_broadcast("alpha")
    assert live is not None and live.id == broadcast_id and live.node_id == "node-a"
    assert await a.live.claim_channel("alpha", "someone-else", 30) == "a-1"
    assert b.manager.live_broadcasts == 0 and b.pipeline.started == []
    # And A's own reconnect path still works afterwards.
    await on_a.on_close("disconnected")
    await accepted(a.manager, request("a-2"))
    assert a.manager.broadcast_id("alpha") == broadcast_id


async def test_a_publisher_asked_to_move_is_handed_over_before_it_disconnects(
        nodes: tuple[Node, Node]) -> None:
    """E-RTMP v2 make-before-break: the publisher A sent a reconnect request publishes on
    B while still connected to A; A hands over at once and ignores the old connection."""
    a, b = nodes
    a.manager.handover_publisher_wait_s = 30.0  # no waiting involved: this is not it
    on_a = await accepted(a.manager, request("a-1"))
    broadcast_id = a.manager.broadcast_id("alpha")
    a.manager.asked_to_move = lambda connection_id: connection_id == "a-1"
    on_b = await accepted(b.manager, request("b-1"))
    assert b.manager.broadcast_id("alpha") == broadcast_id
    assert a.manager.broadcast_id("alpha") is None
    [a_media] = a.pipeline.started
    assert a_media.handed_over
    # The old connection's last packets and its close change nothing.
    await on_a.on_packet(frame(0))
    await on_a.on_close("disconnected")
    assert a_media.packets == [] and not a_media.finished
    await on_b.on_packet(frame(40))
    assert b.pipeline.handovers[0].packets == [frame(40)]
    live = await b.live.live_broadcast("alpha")
    assert live is not None and live.id == broadcast_id and live.node_id == "node-b"


async def test_the_old_publisher_closing_while_the_holder_waits_hands_over(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.manager.handover_publisher_wait_s = 30.0  # the close below ends the wait, not this
    on_a = await accepted(a.manager, request("a-1"))
    broadcast_id = a.manager.broadcast_id("alpha")
    async with await a.live.subscribe(request_topic("node-a")) as requests:
        publish_on_b = asyncio.create_task(b.manager.on_publish(request("b-1")))
        assert (await next_event(requests)).broadcast_id == broadcast_id
        await on_a.on_close("disconnected")  # the TCP close of a break-before-make client
        outcome = await asyncio.wait_for(publish_on_b, 10)
    assert not isinstance(outcome, Rejection)
    assert b.manager.broadcast_id("alpha") == broadcast_id
    assert a.manager.broadcast_id("alpha") is None


async def test_a_silent_holder_that_still_takes_connections_keeps_its_broadcast(
        nodes: tuple[Node, Node]) -> None:
    _, b = nodes
    # Alive but deaf (cut off from the live state's pub/sub, say): it may still be
    # publishing the broadcast, so no second node may take it.
    listener = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        await b.live.heartbeat(FleetNode(id="node-deaf", image_version="v1",
                                         address=f"127.0.0.1:{port}",
                                         state=NodeState.ACTIVE), 30)
        await b.live.put_broadcast(Broadcast(id="deaf-1", channel="alpha",
                                             node_id="node-deaf"))
        assert await b.live.claim_channel("alpha", "deaf-conn", 30) is None
        assert await b.manager.on_publish(request("b-1")) == Rejection.already_live()
    finally:
        listener.close()
    assert b.manager.live_broadcasts == 0
    live = await b.live.live_broadcast("alpha")
    assert live is not None and live.node_id == "node-deaf"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("holder", ["no heartbeat left", "its port refuses connections"])
async def test_a_dead_holders_broadcast_goes_on_where_its_publisher_comes_back(
        nodes: tuple[Node, Node], holder: str) -> None:
    _, b = nodes
    if holder == "its port refuses connections":  # the process died a moment ago
        await b.live.heartbeat(FleetNode(id="node-dead", image_version="v1",
                                         address=f"127.0.0.1:{closed_port()}",
                                         state=NodeState.ACTIVE), 30)
    await b.live.put_broadcast(Broadcast(id="dead-1", channel="alpha", node_id="node-dead"))
    assert await b.live.claim_channel("alpha", "dead-conn", 30) is None
    async with await b.live.subscribe(BROADCASTS_TOPIC) as events:
        outcome = await b.manager.on_publish(request("b-1"))
        assert not isinstance(outcome, Rejection)
        assert await next_event(events) == BroadcastResumed("dead-1", "alpha", "node-b")
    assert b.manager.broadcast_id("alpha") == "dead-1"  # the same broadcast, not a new one
    live = await b.live.live_broadcast("alpha")
    assert live is not None and live.node_id == "node-b"
    assert len(b.pipeline.handovers) == 1  # goes on from the dead node's windows
    # the claim is the new publisher's now
    assert await b.live.claim_channel("alpha", "someone-else", 30) == "b-1"


async def test_a_handover_request_for_another_broadcast_is_refused(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    on_a = await accepted(a.manager, request("a-1"))
    await on_a.on_close("disconnected")
    ask = HandoverRequest("r-1", "alpha", "not-that-broadcast", "b-1", "node-b")
    reply = await handover.request_handover(b.live, "node-a", ask)
    assert reply == HandoverReply("r-1", Verdict.REFUSED, "broadcast not on this node")
    assert a.manager.broadcast_id("alpha") is not None
    assert not a.pipeline.started[0].handed_over


@pytest.mark.parametrize("holds,publishing,moving,stopping,waited_out,expected", [
    (True, False, False, False, False, Decision.GRANT),
    (True, True, False, False, False, Decision.WAIT),
    (True, True, False, False, True, Decision.REFUSE),
    (True, True, True, False, False, Decision.GRANT),  # asked to move: make-before-break
    (False, False, False, False, False, Decision.REFUSE),
    (False, True, True, False, False, Decision.REFUSE),
    (True, False, False, True, False, Decision.REFUSE),
    (True, True, True, True, False, Decision.REFUSE),
])
def test_the_holders_decision(holds: bool, publishing: bool, moving: bool, stopping: bool,
                              waited_out: bool, expected: Decision) -> None:
    decision, reason = decide(holds_broadcast=holds, publishing=publishing, moving=moving,
                              stopping=stopping, waited_out=waited_out, quiet=True)
    assert decision is expected
    assert (reason == "") is (decision is not Decision.REFUSE)


@pytest.mark.parametrize("quiet,waited_out,expected", [
    (False, False, Decision.WAIT),  # a moving publisher's last packets are still coming
    (True, False, Decision.GRANT),
    (False, True, Decision.GRANT),  # it keeps sending here: it moved all the same
])
def test_a_moving_publisher_is_handed_over_once_quiet(quiet: bool, waited_out: bool,
                                                      expected: Decision) -> None:
    decision, _ = decide(holds_broadcast=True, publishing=True, moving=True,
                         stopping=False, quiet=quiet, waited_out=waited_out)
    assert decision is expected


def test_a_late_start_is_refused_and_the_requester_outwaits_any_hand_over() -> None:
    from transcoder.supervisor import FINISH_TIMEOUT_S, STOP_TIMEOUT_S

    decision, reason = decide(holds_broadcast=True, publishing=False, stopping=False,
                              waited_out=False, late=True)
    assert (decision, reason) == (Decision.REFUSE, "too late")
    # A grant can come at most COMMIT_WITHIN_S + the transcoder's bounded flush after the
    # request: the requester, whose wait starts later (at the ack), still listens then.
    assert handover.FLUSH_BOUND_S >= FINISH_TIMEOUT_S + 2 * STOP_TIMEOUT_S
    assert handover.GRANT_TIMEOUT_S > handover.COMMIT_WITHIN_S + handover.FLUSH_BOUND_S
    assert handover.PUBLISHER_WAIT_S < handover.COMMIT_WITHIN_S
