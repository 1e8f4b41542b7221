"""The edge's relay, on real RTMP connections in one process: a publisher (castway's
RTMP client) publishes to a real edge server (IngestServer + EdgeHandler); the
transcoding nodes are real RTMP servers that record what reaches them, heartbeating
into a live state. What is checked is what each node received, packet by packet."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from castway.catalog import open_catalog
from castway.catalog.base import Catalog
from castway.keys import hash_stream_key
from castway.live.memory import MemoryLiveState
from castway.media import Codec, MediaKind, MediaPacket
from castway.model import Channel, Node, NodeState, NodeTier, StreamKey
from castway.settings import Settings
from ingest.edge.handler import EdgeHandler
from ingest.edge.link import RelayLink, RelayRefused
from ingest.edge.placement import pick_transcoding_node
from ingest.server import IngestServer
from tests.ingest.helpers import RecordedPublication, RecordingHandler

KEY = "cw_alpha-key"


def node(node_id: str, *, version: str = "v1", state: NodeState = NodeState.ACTIVE,
         tier: NodeTier = NodeTier.TRANSCODE, free: int = 4, cost_free: float = 0.0,
         address: str = "127.0.0.1:1") -> Node:
    return Node(id=node_id, image_version=version, address=address, state=state,
                capacity=8, active_broadcasts=8 - free, tier=tier,
                cost_capacity=1.0 if cost_free else 0.0,
                cost_used=1.0 - cost_free if cost_free else 0.0)


# --- placement --------------------------------------------------------------------------

def test_a_broadcast_goes_to_an_active_transcoding_node_with_room() -> None:
    nodes = [node("edge", tier=NodeTier.EDGE, free=8), node("draining", state=NodeState.DRAINING),
             node("full", free=0), node("ok", free=1)]
    assert pick_transcoding_node(nodes, version="v1").id == "ok"  # type: ignore[union-attr]
    assert pick_transcoding_node(nodes[:3], version="v1") is None


def test_the_same_version_first_then_the_fullest_node_with_room() -> None:
    # packing: the scheduler can only empty nodes the edges do not keep busy
    nodes = [node("a", version="v0", free=1), node("b", free=5), node("c", free=3)]
    assert pick_transcoding_node(nodes, version="v1").id == "c"  # type: ignore[union-attr]
    costed = [node("x", cost_free=0.2), node("y", cost_free=0.9, free=1)]
    assert pick_transcoding_node(costed, version="v1").id == "x"  # type: ignore[union-attr]
    # a node with less free than a broadcast is counted at only when no other has it
    chosen = pick_transcoding_node(costed, version="v1", broadcast_cost=0.5)
    assert chosen is not None and chosen.id == "y"


def test_a_node_held_out_of_rotation_takes_broadcasts_only_when_no_open_one_can() -> None:
    closed = replace(node("closing", free=1), routable=False)
    assert pick_transcoding_node([closed, node("open", free=6)],
                                 version="v1").id == "open"  # type: ignore[union-attr]
    assert pick_transcoding_node([closed, node("full", free=0)],
                                 version="v1").id == "closing"  # type: ignore[union-attr]


def test_a_move_leaves_the_draining_nodes_version_and_the_nodes_that_failed() -> None:
    nodes = [node("old", version="v1", free=8), node("new", version="v2", free=1),
             node("new2", version="v2", free=2)]
    chosen = pick_transcoding_node(nodes, version="v1", leave_version="v1",
                                   exclude={"new2"})
    assert chosen is not None and chosen.id == "new"


# --- the relay on real connections ------------------------------------------------------

@dataclass
class Transcoder:
    server: IngestServer
    handler: RecordingHandler
    node: Node

    @property
    def publications(self) -> list[RecordedPublication]:
        return self.handler.publications


@dataclass
class Rig:
    live: MemoryLiveState
    catalog: Catalog
    edge: IngestServer
    handler: EdgeHandler
    nodes: dict[str, Transcoder]
    settings: Settings
    registry: CollectorRegistry

    async def add_node(self, node_id: str, *, version: str = "v1",
                       reject: set[str] | None = None, proxy: bool = False) -> Transcoder:
        handler = RecordingHandler(reject=reject)
        server = IngestServer(self.settings.model_copy(update={"proxy_protocol": proxy}),
                              handler)
        await server.start()
        n = Node(id=node_id, image_version=version, address=f"127.0.0.1:{server.port}",
                 state=NodeState.ACTIVE, tier=NodeTier.TRANSCODE)
        await self.live.heartbeat(n, 60)
        self.nodes[node_id] = Transcoder(server, handler, n)
        return self.nodes[node_id]

    async def publisher(self, key: str = KEY) -> RelayLink:
        link = RelayLink(Node(id="edge", image_version="", address=f"127.0.0.1:{self.edge.port}"),
                         app="live", stream_key=key)
        await link.open(10)
        return link


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", rtmp_port=0,
                        database_url=f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog = open_catalog(settings)
    catalog.create_channel(Channel("alpha"))
    catalog.add_stream_key(StreamKey("alpha", hash_stream_key(KEY)))
    live = MemoryLiveState()
    registry = CollectorRegistry()
    handler = EdgeHandler(catalog=catalog, live=live, version="v1", app="live",
                          registry=registry, open_timeout_s=10, retry_s=2.0,
                          max_held_bytes=1 << 20)
    edge = IngestServer(settings, handler)
    handler.disconnect = edge.disconnect
    await edge.start()
    r = Rig(live, catalog, edge, handler, {}, settings, registry)
    try:
        yield r
    finally:
        await edge.stop()
        for t in r.nodes.values():
            await t.server.stop()
        handler.close()
        catalog.close()


def stream(frames: int, gop: int = 10) -> list[MediaPacket]:
    """Configurations, then video frames (a keyframe every ``gop``) with an audio frame
    after each; payloads numbered so every packet is told apart."""
    out = [MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0, b"\x01\x64\x00\x1f"),
           MediaPacket(MediaKind.AUDIO, Codec.AAC, True, True, 0, 0, b"\x11\x90")]
    for i in range(frames):
        ts = 40 * i
        out.append(MediaPacket(MediaKind.VIDEO, Codec.H264, i % gop == 0, False, ts, ts,
                               b"\x00\x00\x00\x01" + i.to_bytes(4, "big")))
        out.append(MediaPacket(MediaKind.AUDIO, Codec.AAC, True, False, ts + 1, ts + 1,
                               b"\x21" + i.to_bytes(4, "big")))
    return out


async def send(link: RelayLink, packets: list[MediaPacket]) -> None:
    for p in packets:
        link.send(p)
        await link.drain()
        await asyncio.sleep(0)


async def eventually(check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def frames(pub: RecordedPublication) -> list[MediaPacket]:
    return [p for p in pub.packets if not p.is_config]


async def test_a_move_cuts_at_a_keyframe_and_loses_or_repeats_nothing(rig: Rig) -> None:
    first = await rig.add_node("n1")
    publisher = await rig.publisher()
    packets = stream(40)
    await send(publisher, packets[:15])  # configurations and 6.5 frames
    await eventually(lambda: len(first.publications) == 1
                     and len(first.publications[0].packets) == 15)
    second = await rig.add_node("n2")
    assert first.server.request_reconnect(None) == 1  # the node drains
    await asyncio.sleep(0.1)
    await send(publisher, packets[15:])
    await eventually(lambda: len(second.publications) == 1
                     and len(frames(first.publications[0]))
                     + len(frames(second.publications[0])) == 80)
    on_first, on_second = frames(first.publications[0]), frames(second.publications[0])
    assert on_first + on_second == [p for p in packets if not p.is_config]
    assert on_second[0].kind is MediaKind.VIDEO and on_second[0].is_keyframe
    # the new node got the codec configurations before any frame
    head = second.publications[0].packets[:2]
    assert {(p.kind, p.is_config) for p in head} == {(MediaKind.VIDEO, True),
                                                     (MediaKind.AUDIO, True)}
    await eventually(lambda: first.publications[0].closed.is_set())  # the old relay ends
    assert not second.publications[0].closed.is_set()
    [relay] = rig.handler.relays.values()
    assert relay.node_id == "n2" and relay.stats.moves == 1
    assert rig.registry.get_sample_value("castway_edge_switches_total",
                                         {"reason": "move"}) == 1
    await publisher.close()
    await eventually(lambda: second.publications[0].closed.is_set())


async def test_a_move_no_node_takes_sends_what_was_held_back_to_the_old_node(rig: Rig) -> None:
    first = await rig.add_node("n1")
    await rig.add_node("n2", reject={KEY})  # refuses this broadcast
    rig.live._nodes.pop("n2", None)  # noqa: SLF001 -- placed later, after the first choice
    publisher = await rig.publisher()
    packets = stream(30)
    await send(publisher, packets[:6])
    await eventually(lambda: len(first.publications) == 1
                     and len(first.publications[0].packets) == 6)
    await rig.live.heartbeat(rig.nodes["n2"].node, 60)
    first.server.request_reconnect(None)
    await asyncio.sleep(0.1)
    await send(publisher, packets[6:])
    await eventually(lambda: len(frames(first.publications[0])) == 60)
    assert frames(first.publications[0]) == [p for p in packets if not p.is_config]
    assert not first.publications[0].closed.is_set()
    await publisher.close()


async def test_a_dead_node_is_replaced_from_the_next_keyframe(rig: Rig) -> None:
    first = await rig.add_node("n1")
    publisher = await rig.publisher()
    packets = stream(40)
    await send(publisher, packets[:15])
    await eventually(lambda: len(first.publications) == 1
                     and len(first.publications[0].packets) == 15)
    second = await rig.add_node("n2")
    await first.server.stop()  # its connections cut: the node is gone
    await rig.live.heartbeat(replace(first.node, state=NodeState.LOST), 60)
    await asyncio.sleep(0.2)
    await send(publisher, packets[15:])
    await eventually(lambda: len(second.publications) == 1
                     and len(frames(second.publications[0])) > 0)
    await asyncio.sleep(0.2)
    on_second = frames(second.publications[0])
    assert on_second[0].kind is MediaKind.VIDEO and on_second[0].is_keyframe
    sent = [p for p in packets if not p.is_config]
    assert on_second == sent[sent.index(on_second[0]):]  # from a keyframe on, all of it
    [relay] = rig.handler.relays.values()
    assert relay.stats.recoveries == 1
    await publisher.close()


async def test_a_publisher_nobody_can_take_is_disconnected_after_the_retry_window(
        rig: Rig) -> None:
    first = await rig.add_node("n1")
    publisher = await rig.publisher()
    packets = stream(100)
    await send(publisher, packets[:4])
    await eventually(lambda: len(first.publications) == 1)
    await first.server.stop()
    await rig.live.heartbeat(replace(first.node, state=NodeState.LOST), 60)
    with contextlib.suppress(ConnectionError, OSError):
        for p in packets[4:]:
            publisher.send(p)
            await publisher.drain()
            await asyncio.sleep(0.04)
            if publisher.lost:
                break
    await eventually(lambda: publisher.lost, timeout=10)
    assert rig.handler.relays == {}


async def test_an_unknown_key_is_refused_at_the_edge_and_reaches_no_node(rig: Rig) -> None:
    first = await rig.add_node("n1")
    with pytest.raises(RelayRefused) as refused:
        await rig.publisher("cw_not-a-key")
    assert refused.value.code == "NetStream.Publish.BadName"
    assert first.publications == []


async def test_what_the_node_refuses_the_publisher_is_refused(rig: Rig) -> None:
    await rig.add_node("n1", reject={KEY})  # e.g. the channel is live elsewhere
    with pytest.raises(RelayRefused) as refused:
        await rig.publisher()
    assert refused.value.code == "NetStream.Publish.BadName"


async def test_without_a_transcoding_node_the_publish_is_refused_as_unavailable(
        rig: Rig) -> None:
    with pytest.raises(RelayRefused) as refused:
        await rig.publisher()
    assert refused.value.code == "NetStream.Publish.Denied"
    assert "no transcoding node" in refused.value.description


async def test_an_encoder_sent_ladder_goes_through_track_by_track(rig: Rig) -> None:
    first = await rig.add_node("n1")
    publisher = await rig.publisher()
    base = stream(5)
    ladder = base + [replace(p, track=1) for p in base if p.kind is MediaKind.VIDEO] \
        + [replace(p, track=2) for p in base if p.kind is MediaKind.AUDIO]
    await send(publisher, ladder)
    await eventually(lambda: len(first.publications) == 1
                     and len(first.publications[0].packets) == len(ladder))
    assert first.publications[0].packets == ladder
    await publisher.close()


async def test_a_relay_names_its_publisher_to_the_node_in_a_proxy_header(rig: Rig) -> None:
    rig.handler.target = replace(rig.handler.target, proxy_protocol=True)
    first = await rig.add_node("n1", proxy=True)  # refuses a connection without one
    publisher = await rig.publisher()
    packets = stream(20)
    await send(publisher, packets[:10])
    await eventually(lambda: len(first.publications) == 1)
    writer = publisher._writer  # noqa: SLF001 -- the test publisher's own socket
    assert writer is not None
    host, port = writer.get_extra_info("sockname")[:2]
    assert first.publications[0].request.peer == f"{host}:{port}"
    # and so does the relay of a move
    second = await rig.add_node("n2", proxy=True)
    first.server.request_reconnect(None)
    await asyncio.sleep(0.1)
    await send(publisher, packets[10:])
    await eventually(lambda: len(second.publications) == 1)
    assert second.publications[0].request.peer == f"{host}:{port}"
    await publisher.close()


def test_a_proxy_header_names_the_publisher_unless_the_families_are_mixed() -> None:
    from castway.proxy_protocol import ProxyHeader, ProxyHeaderReader
    from ingest.edge.link import proxy_header

    def read(data: bytes) -> ProxyHeader:
        reader, pos = ProxyHeaderReader(), 0
        while True:
            wanted = reader.wanted
            header = reader.receive_data(data[pos:pos + wanted])
            pos += wanted
            if header is not None:
                assert pos == len(data)
                return header

    v4 = read(proxy_header("203.0.113.7:51000", "10.0.0.5:1935"))
    assert v4.source == ("203.0.113.7", 51000)
    named = read(proxy_header("203.0.113.7:51000", "ingest:1935"))  # compose's nodes
    assert named.source == ("203.0.113.7", 51000)
    assert named.destination == ("0.0.0.0", 1935)
    mixed = read(proxy_header("[2001:db8::1]:51000", "10.0.0.5:1935"))
    assert mixed.source is None  # LOCAL: the node uses the edge's address
