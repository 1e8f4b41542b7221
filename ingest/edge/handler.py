"""The edge's publish handler: a stream key is checked against the catalog, a
transcoding node is chosen from the live state's heartbeats, and the publish is
accepted only once that node started the relayed publication -- so what the node
refuses (a second publisher of a live channel, fleet-wide) the publisher is refused."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from castway.catalog.base import Catalog
from castway.keys import hash_stream_key
from castway.live.base import LiveState
from castway.model import Node
from ingest.edge.link import RelayFailed, RelayLink, RelayRefused
from ingest.edge.placement import pick_transcoding_node
from ingest.edge.relay import Relay, RelayTarget
from ingest.protocol.commands import StatusCode
from ingest.publish import PublishRequest, PublishSession, Rejection

logger = logging.getLogger(__name__)

#: Nodes tried for a new publish before it is refused as unavailable.
PLACEMENT_TRIES = 3


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.publishes = Counter("castway_edge_publishes", "Publish requests by outcome.",
                                 ["result"], registry=registry)
        self.relays = Gauge("castway_edge_relays", "Broadcasts relayed now.",
                            registry=registry)
        self.switches = Counter("castway_edge_switches",
                                "Relays moved to another transcoding node, by why.",
                                ["reason"], registry=registry)
        self.switch_seconds = Histogram(
            "castway_edge_switch_seconds", "From the cut at a keyframe to the new node "
            "taking the broadcast (a handover included).", registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 90))
        self.dropped = Counter("castway_edge_dropped_packets",
                               "Packets no node got (a node died; a held buffer full).",
                               registry=registry)


class EdgeHandler:
    """A :class:`~ingest.publish.PublishHandler` that relays. ``disconnect(connection_id,
    reason)`` cuts a publisher (the server's)."""

    def __init__(self, *, catalog: Catalog, live: LiveState, version: str, app: str,
                 registry: CollectorRegistry, open_timeout_s: float, retry_s: float,
                 max_held_bytes: int, proxy_protocol: bool = False,
                 broadcast_cost: float = 0.0,
                 admission: Callable[[], str | None] | None = None,
                 disconnect: Callable[[str, str], bool] | None = None) -> None:
        self.catalog = catalog
        self.live = live
        self.version = version
        self.admission = admission
        self.broadcast_cost = broadcast_cost
        self.disconnect = disconnect
        self.metrics = EdgeMetrics(registry)
        self.relays: dict[str, Relay] = {}  # by publisher connection id
        self._catalog_threads = ThreadPoolExecutor(2, thread_name_prefix="edge-catalog")
        self.target = RelayTarget(choose=self._choose, app=app,
                                  open_timeout_s=open_timeout_s, retry_s=retry_s,
                                  max_held_bytes=max_held_bytes,
                                  proxy_protocol=proxy_protocol, on_switch=self._switched)

    async def _choose(self, exclude: frozenset[str], leave_version: str | None) -> Node | None:
        return pick_transcoding_node(await self.live.list_nodes(), version=self.version,
                                     exclude=exclude, leave_version=leave_version,
                                     broadcast_cost=self.broadcast_cost)

    def _switched(self, reason: str, seconds: float) -> None:
        self.metrics.switches.labels(reason).inc()
        self.metrics.switch_seconds.observe(seconds)

    def _refuse(self, result: str, rejection: Rejection) -> Rejection:
        self.metrics.publishes.labels(result).inc()
        return rejection

    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection:
        fields = {"connection_id": request.connection_id, "peer": request.peer}
        reason = self.admission() if self.admission is not None else None
        if reason is not None:
            return self._refuse("unavailable", Rejection.unavailable(reason))
        channel = await asyncio.get_running_loop().run_in_executor(
            self._catalog_threads, self.catalog.channel_for_key_hash,
            hash_stream_key(request.stream_key))
        if channel is None:
            logger.info("publish with an unknown stream key", extra=fields)
            return self._refuse("bad_name", Rejection.bad_name())
        fields["channel"] = channel
        failed: set[str] = set()
        for _ in range(PLACEMENT_TRIES):
            node = await self._choose(frozenset(failed), None)
            if node is None:
                break
            link = RelayLink(node, app=request.app, stream_key=request.stream_key,
                             publisher=request.peer if self.target.proxy_protocol else None)
            try:
                await link.open(self.target.open_timeout_s)
            except RelayRefused as exc:
                if exc.code == StatusCode.PUBLISH_BAD_NAME.value:
                    # the node's answer is the publisher's: an unknown key, a channel
                    # live elsewhere with its publisher still on
                    logger.info("publish refused by the transcoding node", extra={
                        **fields, "node": node.id, "description": exc.description})
                    return self._refuse("refused", Rejection(exc.code, exc.description))
                failed.add(node.id)  # full or draining since its last heartbeat
                continue
            except RelayFailed as exc:
                logger.warning("transcoding node unreachable", extra={
                    **fields, "node": node.id, "error": str(exc)})
                failed.add(node.id)
                continue
            cid = request.connection_id
            relay = Relay(self.target, link, channel=channel, stream_key=request.stream_key,
                          disconnect=functools.partial(self._cut, cid),
                          on_closed=functools.partial(self._closed, cid),
                          publisher=request.peer)
            self.relays[request.connection_id] = relay
            self.metrics.relays.set(len(self.relays))
            self.metrics.publishes.labels("relayed").inc()
            logger.info("publish relayed", extra={**fields, "node": node.id})
            return relay
        logger.warning("publish refused: no transcoding node takes it", extra=fields)
        return self._refuse("unavailable", Rejection.unavailable("no transcoding node free"))

    def _cut(self, connection_id: str, reason: str) -> None:
        if self.disconnect is not None:
            self.disconnect(connection_id, reason)

    def _closed(self, connection_id: str, relay: Relay) -> None:
        if self.relays.pop(connection_id, None) is None:
            return
        self.metrics.relays.set(len(self.relays))
        self.metrics.dropped.inc(relay.stats.dropped_packets)

    @property
    def moves_in_progress(self) -> int:
        return sum(1 for r in self.relays.values() if r.switching)

    def close(self) -> None:
        self._catalog_threads.shutdown(wait=False)
