"""One broadcast through the edge: the publisher's packets go to a transcoding node
over a :class:`~ingest.edge.link.RelayLink`, and to another one, without the
publisher noticing, when that node asks the relay to move (it drains) or dies.

A move is make-before-break, cut at a source keyframe: the packets up to the keyframe
go to the old node; from the keyframe on they are held while the new relay publishes
(the new node asks the old one for the broadcast, which hands it over once the relay
went quiet there), then sent to the new node after the codec configurations and
metadata. The broadcast keeps its id and playlists, and no packet is lost or sent
twice. If no node takes it, the packets held go back to the old node (still live there)
and the move is tried again later.

A node that dies (its connection drops) is replaced the same way, from the next
keyframe; what the dead node had not published is lost (the new node marks a
discontinuity). If no node takes the broadcast within ``retry_s``, the publisher is
disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from castway.media import MediaKind, MediaPacket
from castway.model import Node
from ingest.edge.link import RelayFailed, RelayLink, RelayRefused
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.flv import fourcc, needs_enhanced

logger = logging.getLogger(__name__)

#: A move waits for a source keyframe at most this long, then cuts where it is.
KEYFRAME_WAIT_S = 10.0
#: After a move no node took, the next try comes this much later.
MOVE_RETRY_S = 5.0
#: Between attempts to find a node for a broadcast whose node died.
LOST_RETRY_S = 0.5


def is_switch_point(packet: MediaPacket, has_video: bool) -> bool:
    """Where a relay may change nodes: a keyframe of the source's video (track 0), or
    any audio frame of an audio-only broadcast."""
    if packet.is_config:
        return False
    if packet.kind is MediaKind.VIDEO:
        return packet.track == 0 and packet.is_keyframe
    return not has_video


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """What a relay needs to reach transcoding nodes: how to choose one (None: none
    now), and the relay's settings."""

    choose: Callable[[frozenset[str], str | None], Awaitable[Node | None]]
    app: str
    open_timeout_s: float  # a handover may take this long before the publish starts
    retry_s: float  # a broadcast whose node died finds another within this long
    max_held_bytes: int
    #: Relays name their publisher to the node in a PROXY v2 header.
    proxy_protocol: bool = False
    #: Told of each switch as it happens: ("move" or "node_lost", seconds it took).
    on_switch: Callable[[str, float], None] = lambda reason, seconds: None


@dataclass
class RelayStats:
    moves: int = 0
    recoveries: int = 0  # broadcasts re-relayed after their node died
    dropped_packets: int = 0
    held_peak_bytes: int = 0
    switch_ms: list[float] = field(default_factory=list)


class Relay:
    """A :class:`~ingest.publish.PublishSession` of the edge's RTMP server."""

    def __init__(self, target: RelayTarget, link: RelayLink, *, channel: str,
                 stream_key: str, disconnect: Callable[[str], None],
                 on_closed: Callable[[Relay], None], publisher: str = "") -> None:
        self.target = target
        self.publisher = publisher
        self.link = link
        self.channel = channel
        self.stream_key = stream_key
        self._disconnect = disconnect
        self._on_closed = on_closed
        self.configs: dict[tuple[MediaKind, int], MediaPacket] = {}
        self.metadata: dict[str, AmfValue] | None = None
        self.has_video = False
        self.stats = RelayStats()
        self._held: list[MediaPacket] | None = None  # a switch in progress holds these
        self._configs_at_switch: dict[tuple[MediaKind, int], MediaPacket] = {}
        self._held_bytes = 0
        self._switch: asyncio.Task[None] | None = None
        self._move_wanted_since: float | None = None
        self._next_move_try = 0.0
        self._lost_since: float | None = None
        self._closed = False

    @property
    def node_id(self) -> str:
        return self.link.node_id

    @property
    def switching(self) -> bool:
        return self._held is not None

    @property
    def log_fields(self) -> dict[str, object]:
        return {"channel": self.channel, "node": self.link.node_id}

    # --- PublishSession ----------------------------------------------------------------
    async def on_metadata(self, metadata: dict[str, object]) -> None:
        self.metadata = metadata  # type: ignore[assignment]  # AMF0 values, as decoded
        if self._held is None and not self.link.lost:
            self.link.send_metadata(self.metadata)  # type: ignore[arg-type]

    async def on_packet(self, packet: MediaPacket) -> None:
        if packet.is_config:
            self.configs[packet.stream] = packet
        if packet.kind is MediaKind.VIDEO and packet.track == 0:
            self.has_video = True
        if self._held is not None:  # switching: hold it for the new node
            self._hold(packet)
            return
        now = time.monotonic()
        if self.link.lost:
            self._node_lost(now)
            if is_switch_point(packet, self.has_video):
                self._start_switch(packet, leaving=False)
            else:
                self.stats.dropped_packets += 1  # the next node starts at a keyframe
            return
        if self.link.move_requested and now >= self._next_move_try:
            if self._move_wanted_since is None:
                self._move_wanted_since = now
            if is_switch_point(packet, self.has_video) \
                    or now - self._move_wanted_since > KEYFRAME_WAIT_S:
                self._start_switch(packet, leaving=True)
                return
        self.link.send(packet)
        await self.link.drain()

    async def on_close(self, reason: str) -> None:
        self._closed = True
        if self._switch is not None:
            self._switch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._switch
        await self.link.close(unpublish=True)
        self._on_closed(self)

    # --- switching nodes -----------------------------------------------------------------
    def _node_lost(self, now: float) -> None:
        if self._lost_since is None:
            self._lost_since = now
            logger.warning("relay lost its transcoding node; relaying elsewhere",
                           extra=self.log_fields)

    def _hold(self, packet: MediaPacket) -> None:
        if self._held is None:
            return
        if self._held_bytes + len(packet.payload) > self.target.max_held_bytes:
            self.stats.dropped_packets += 1
            return
        self._held.append(packet)
        self._held_bytes += len(packet.payload)
        self.stats.held_peak_bytes = max(self.stats.held_peak_bytes, self._held_bytes)

    def _start_switch(self, first: MediaPacket, *, leaving: bool) -> None:
        self._configs_at_switch = dict(self.configs)
        self._held, self._held_bytes = [], 0
        self._hold(first)
        self._switch = asyncio.create_task(self._run_switch(leaving),
                                           name=f"relay-switch-{self.channel}")

    def _fourccs(self) -> tuple[str, ...]:
        found = {fourcc(p.codec) for p in self.configs.values()
                 if needs_enhanced(p.codec) or p.track}
        return tuple(sorted(found))

    async def _run_switch(self, leaving: bool) -> None:
        old = self.link
        started = time.monotonic()
        failed: set[str] = {old.node_id}
        deadline = (self._lost_since or started) + self.target.retry_s
        while True:
            node = await self._choose(failed, old.node.image_version if leaving else None)
            if node is not None:
                link = RelayLink(node, app=self.target.app, stream_key=self.stream_key,
                                 fourccs=self._fourccs(), publisher=self.publisher
                                 if self.target.proxy_protocol else None)
                try:
                    await link.open(self.target.open_timeout_s)
                except RelayRefused as exc:
                    logger.info("relay refused by a transcoding node", extra={
                        **self.log_fields, "to_node": node.id, "code": exc.code,
                        "description": exc.description})
                    failed.add(node.id)
                except RelayFailed as exc:
                    logger.info("relay to a transcoding node failed", extra={
                        **self.log_fields, "to_node": node.id, "error": str(exc)})
                    failed.add(node.id)
                else:
                    await self._switch_to(link, started, leaving)
                    return
            if leaving and not old.lost:
                self._resume(old)  # the old node still has it: back there, try later
                return
            if time.monotonic() >= deadline:
                logger.warning("no transcoding node took the broadcast; disconnecting "
                               "its publisher", extra=self.log_fields)
                self._held = None
                self._disconnect("no transcoding node available")
                return
            await asyncio.sleep(LOST_RETRY_S)
            failed = {old.node_id}  # nodes that refused may take it now

    async def _choose(self, exclude: set[str], leave_version: str | None) -> Node | None:
        try:
            return await self.target.choose(frozenset(exclude), leave_version)
        except Exception:
            logger.exception("cannot list transcoding nodes", extra=self.log_fields)
            return None

    async def _switch_to(self, link: RelayLink, started: float, leaving: bool) -> None:
        """The new node publishes: configurations and metadata first, then what was
        held, in one go (nothing else runs meanwhile), then the old relay ends."""
        held = self._held or []
        first_ts = held[0].dts_ms if held else 0
        if self.metadata is not None:
            link.send_metadata(self.metadata)
        for config in self._configs_at_switch.values():
            link.send(config, timestamp=first_ts)
        for packet in held:
            link.send(packet)
        old, self.link = self.link, link
        self._held, self._held_bytes = None, 0
        self._move_wanted_since = self._lost_since = None
        elapsed_ms = (time.monotonic() - started) * 1000
        self.stats.switch_ms.append(elapsed_ms)
        if leaving:
            self.stats.moves += 1
        else:
            self.stats.recoveries += 1
        self.target.on_switch("move" if leaving else "node_lost", elapsed_ms / 1000)
        logger.info("relay moved" if leaving else "relay recovered", extra={
            "channel": self.channel, "from_node": old.node_id, "node": link.node_id,
            "held_packets": len(held), "switch_ms": round(elapsed_ms, 1)})
        await old.close(unpublish=not old.lost)
        await link.drain()

    def _resume(self, old: RelayLink) -> None:
        held = self._held or []
        self._held, self._held_bytes = None, 0
        for packet in held:
            old.send(packet)
        self._next_move_try = time.monotonic() + MOVE_RETRY_S
        self._move_wanted_since = None
        logger.info("no node took the broadcast; it stays where it is for now",
                    extra={**self.log_fields, "retry_in_s": MOVE_RETRY_S})
