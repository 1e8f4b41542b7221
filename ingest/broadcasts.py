"""The ingest node's :class:`~ingest.publish.PublishHandler`: each broadcast's lifecycle
(:mod:`ingest.lifecycle`, sans-IO) carried out against the catalog, the live state, the
media pipeline and timers. How publishes, reconnects, handovers and ends go:
docs/architecture.md, "Ingest: reconnects and handovers" and "The broadcast lifecycle".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from castway.catalog.base import Catalog
from castway.events.announce import announce
from castway.events.broadcasts import (
    BROADCASTS_TOPIC,
    BroadcastEnded,
    BroadcastFailed,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.events.handover import HandoverReply, HandoverRequest, Verdict
from castway.keys import hash_stream_key, key_id
from castway.live.base import LiveState, LiveStateError
from castway.media import BroadcastMedia, MediaPacket, MediaPipelineFactory
from castway.model import Broadcast, BroadcastState, NodeState, SourceInfo, new_id, utcnow
from castway.settings import Settings
from castway.stream_health import describe
from ingest import handover, lifecycle
from ingest.ends import ENDS_CLOSE_TIMEOUT_S, PendingEnds
from ingest.health import HealthTracker
from ingest.publish import PublishRequest, PublishSession, Rejection
from ingest.publish_auth import AuthQuery, PublishAuthorizer, client_host
from ingest.source import (
    SourceCounters,
    TrackCounters,
    merge_source,
    parse_audio_specific_config,
    source_from_metadata,
)

__all__ = ["BroadcastManager", "parse_audio_specific_config", "source_from_metadata"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A channel claim lives this long unless refreshed (a dead node's claim expires).
CLAIM_TTL_S = 15.0
#: A silent holder of a broadcast is probed this long for a refused connection.
HOLDER_PROBE_TIMEOUT_S = 1.0
#: Stats and claim refreshes run this often.
STATS_INTERVAL_S = 2.0
#: Threads for this node's catalog calls (key lookups, broadcast records, some on the
#: packet path): never asyncio's default executor, which blocking calls elsewhere in the
#: process can fill (the embedded archiver's storage calls while S3 is frozen).
CATALOG_THREADS = 4

#: What the log says when a best-effort command fails (the lifecycle goes on).
_FAILURES: dict[type[lifecycle.Command], str] = {
    lifecycle.FinishMedia: "media pipeline finish failed",
    # The next node goes on from whatever got written.
    lifecycle.HandOverMedia: "media pipeline hand-over failed",
    lifecycle.Discontinuity: "media pipeline discontinuity failed",
    lifecycle.RecordEnd: "recording the end in the live state failed",
    lifecycle.ReleaseClaim: "releasing the channel claim failed",
    lifecycle.AnnounceEnd: "announcing the end of a broadcast failed",
    lifecycle.AnnounceStarted: "announcing a broadcast failed",
    lifecycle.AnnounceResumed: "announcing a broadcast failed",
}
_ACCEPTED_LOG = {"accepted": "broadcast started", "resumed": "broadcast resumed",
                 "handover": "broadcast taken over from another node"}


#: Transport stats keys a publish session may report, and their /metrics help.
TRANSPORT_GAUGES = {
    "srt_rtt_ms": "SRT round-trip time to the publisher (ms).",
    "srt_bandwidth_mbps": "SRT estimated link bandwidth from the publisher (Mbit/s).",
    "srt_recv_rate_mbps": "SRT receive rate from the publisher (Mbit/s).",
    "srt_packets_lost": "SRT packets seen missing from the publisher (most then "
                        "recovered), since it connected.",
    "srt_packets_retransmitted": "SRT retransmitted packets received, since it connected.",
    "srt_packets_dropped": "SRT packets given up as too late to play, since it connected.",
}


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.publishes = Counter("castway_ingest_publishes", "Publish requests by outcome.",
                                 ["result"], registry=registry)
        self.live = Gauge("castway_ingest_live_broadcasts",
                          "Broadcasts live on this node (including those in their "
                          "reconnect grace window).", registry=registry)
        self.bytes = Counter("castway_ingest_received_bytes",
                             "Media payload bytes received.", ["kind"], registry=registry)
        self.packets = Counter("castway_ingest_packets", "Media packets received.",
                               ["kind"], registry=registry)
        self.bitrate = Gauge("castway_ingest_bitrate_kbps", "Incoming bitrate per channel.",
                             ["channel"], registry=registry)
        self.fps = Gauge("castway_ingest_fps", "Incoming video frame rate per channel.",
                         ["channel"], registry=registry)
        #: The transport's own measures of a publisher (SRT: srt_bstats), by stats key.
        self.transport = {key: Gauge(f"castway_ingest_{key}", text, ["channel"],
                                     registry=registry)
                          for key, text in TRANSPORT_GAUGES.items()}


@dataclass(eq=False)
class _Entry:
    """One broadcast of this node: its lifecycle state and what carrying it out needs."""

    broadcast_id: str
    channel: str
    # The newest record of it read from the live state: what goes back if it vanishes.
    record: Broadcast
    state: lifecycle.State = field(default_factory=lifecycle.New)
    media: BroadcastMedia | None = None
    publication: _Publication | None = None
    grace: asyncio.Task[None] | None = None
    # Set while no publisher is connected (a handover request waits on it).
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    ended_at: datetime | None = None
    ended: Broadcast | None = None  # the end as the live state recorded it
    source: SourceInfo | None = None
    counters: SourceCounters = field(default_factory=SourceCounters)
    tracks: TrackCounters = field(default_factory=TrackCounters)  # encoder-sent renditions
    health: HealthTracker = field(default_factory=lambda: HealthTracker(segment_target_s=2.0))
    last_packet: float = 0.0  # loop time of the last packet from the publisher
    stats: dict[str, float | str] = field(default_factory=dict)
    transport: dict[str, float] = field(default_factory=dict)  # the publisher's, as sent

    @property
    def over(self) -> bool:
        return lifecycle.is_over(self.state)

    @property
    def log_fields(self) -> dict[str, str]:
        return {"broadcast_id": self.broadcast_id, "channel": self.channel}


@dataclass
class _Outcome:
    """What carrying out an input's commands answered."""

    publish: PublishSession | Rejection | None = None
    handover_replied: bool = False


class _Publication:
    """The PublishSession of one connection: its media and close go to the lifecycle."""

    def __init__(self, manager: BroadcastManager, entry: _Entry, connection_id: str) -> None:
        self._manager = manager
        self._entry = entry
        self.connection_id = connection_id
        self._closed = False

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        if not self._closed:
            self._entry.tracks.declare(metadata)
            await self._manager._update_source(self._entry, source_from_metadata(metadata))

    async def on_packet(self, packet: MediaPacket) -> None:
        if self._closed:
            return
        entry = self._entry
        # Not under the manager's lock: packets never wait for an end or a handover of
        # another broadcast. A step is synchronous, and a packet changes no state.
        received = lifecycle.PacketReceived(self.connection_id, packet)
        entry.state, commands = lifecycle.step(entry.state, received)
        for command in commands:
            if isinstance(command, lifecycle.Feed):
                await self._manager._feed(entry, command.packet)

    def on_transport_stats(self, stats: Mapping[str, float]) -> None:
        if self._closed:
            return
        entry = self._entry
        entry.transport = {k: float(v) for k, v in stats.items() if k in TRANSPORT_GAUGES}
        for key, value in entry.transport.items():
            self._manager._metrics.transport[key].labels(entry.channel).set(value)

    async def on_close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        await self._manager._publisher_gone(self._entry, self.connection_id, reason)

    def detach(self) -> None:
        """The broadcast is over here: what this connection still sends is ignored."""
        self._closed = True


def _log_source_save(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.warning("source update not saved to the catalog (saved at the end)",
                       extra={"error": str(error)})


class BroadcastManager:
    """The ingest node's :class:`~ingest.publish.PublishHandler`."""

    def __init__(self, settings: Settings, *, catalog: Catalog, live: LiveState,
                 pipeline: MediaPipelineFactory | None = None,
                 registry: CollectorRegistry | None = None,
                 admission: Callable[[], str | None] | None = None,
                 claim_ttl_s: float = CLAIM_TTL_S,
                 stats_interval_s: float = STATS_INTERVAL_S,
                 handover_ack_timeout_s: float = handover.ACK_TIMEOUT_S,
                 handover_publisher_wait_s: float = handover.PUBLISHER_WAIT_S) -> None:
        self.settings = settings
        self.catalog = catalog
        self.live = live
        self.pipeline = pipeline
        #: None to accept new broadcasts, else the reason they are refused (draining, full).
        self.admission = admission
        #: Whether the server asked a connection's publisher to reconnect elsewhere (E-RTMP
        #: v2): its broadcast is handed over even before that connection closes.
        self.asked_to_move: Callable[[str], bool] | None = None
        #: The platform's say on each publish (CASTWAY_PUBLISH_AUTH_URL), if it has one.
        self.authorizer = PublishAuthorizer.from_settings(settings)
        #: Closes a publisher's connection (the RTMP server's): a stopped broadcast's.
        self.disconnect_publisher: Callable[[str], object] | None = None
        self.node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_ttl_s = claim_ttl_s
        self.stats_interval_s = stats_interval_s
        self.handover_ack_timeout_s = handover_ack_timeout_s
        self.handover_publisher_wait_s = handover_publisher_wait_s
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        self._by_channel: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()  # inputs other than packets never interleave
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._handovers = handover.RequestListener(live, self.node_id, self._hand_over)
        self._catalog_threads = ThreadPoolExecutor(CATALOG_THREADS,
                                                   thread_name_prefix="ingest-catalog")
        self._ends = PendingEnds(catalog, self._catalog_threads)
        self._source_saves = ThreadPoolExecutor(1, thread_name_prefix="ingest-source")

    async def _catalog_call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._catalog_threads, fn,
                                                                *args)

    # --- start and stop --------------------------------------------------------------
    async def start(self) -> None:
        """Start the stats loop and the listener for handover requests (subscribed when
        this returns, unless the live state is down: then it keeps trying)."""
        self._loop_task = asyncio.create_task(self._stats_loop(), name="ingest-stats")
        await self._handovers.start()

    async def stop(self) -> None:
        """End every broadcast of this node now (grace windows included)."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        # Requests being served refuse from now on; one flushing its media finishes.
        await self._handovers.close()
        # Again until none is left: a broadcast taken over meanwhile is ended too.
        stopped: set[int] = set()
        while entries := [e for e in self._by_channel.values() if id(e) not in stopped]:
            for entry in entries:
                stopped.add(id(entry))
                async with self._lock:
                    await self._drive(entry, lifecycle.NodeStopping())
        await self._ends.close(ENDS_CLOSE_TIMEOUT_S)
        self._catalog_threads.shutdown(wait=False)
        self._source_saves.shutdown(wait=False)
        if self.authorizer is not None:
            await self.authorizer.aclose()

    async def stop_broadcast(self, broadcast_id: str) -> bool:
        """End a broadcast of this node at once: its publisher is disconnected, no grace
        window. True if it was live on this node (its grace window included)."""
        async with self._lock:
            entry = next((e for e in self._by_channel.values()
                          if e.broadcast_id == broadcast_id), None)
            if entry is None or not lifecycle.on_this_node(entry.state):
                return False
            await self._drive(entry, lifecycle.StopRequested())
            return True

    @property
    def live_broadcasts(self) -> int:
        return len(self._by_channel)

    def broadcast_id(self, channel: str) -> str | None:
        entry = self._by_channel.get(channel)
        return entry.broadcast_id if entry else None

    # --- PublishHandler --------------------------------------------------------------
    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection:
        fields = {"connection_id": request.connection_id, "peer": request.peer}
        if self._stopping:
            return self._rejected("unavailable", Rejection.unavailable("shutting down"))
        key_hash = hash_stream_key(request.stream_key)
        channel = await self._catalog_call(self.catalog.channel_for_key_hash, key_hash)
        if channel is None:
            logger.info("publish with an unknown stream key", extra=fields)
            return self._rejected("bad_name", Rejection.bad_name())
        fields["channel"] = channel
        if request.channel is not None and request.channel != channel:
            logger.info("publish with another channel's stream key",
                        extra={**fields, "named": request.channel})
            return self._rejected("bad_name", Rejection.bad_name(
                "This stream key is not the named channel's."))
        if self.authorizer is not None:  # before the lock: the platform may take a while
            refused = await self.authorizer.check(AuthQuery(
                channel, key_id(key_hash), client_host(request.peer)))
            if refused is not None:
                logger.info("publish refused by the authorization callback",
                            extra={**fields, "reason": refused.description})
                return self._rejected("unauthorized", refused)
        async with self._lock:
            entry = self._by_channel.get(channel)
            if entry is not None:  # live here, or in its grace window
                back = lifecycle.PublisherBack(request.connection_id)
                return self._answer(await self._drive(entry, back))
            reason = self.admission() if self.admission is not None else None
            if reason is not None:
                logger.info("publish refused by admission", extra={**fields, "reason": reason})
                return self._rejected("unavailable", Rejection.unavailable(reason))
            holder = await self.live.claim_channel(channel, request.connection_id,
                                                   self.claim_ttl_s)
            if holder is None:
                return await self._go_live(channel, request)
        # Not under the lock: the other node may take a few seconds to answer.
        return await self._take_over(channel, request, holder, fields)

    def _rejected(self, result: str, rejection: Rejection) -> Rejection:
        self._metrics.publishes.labels(result).inc()
        return rejection

    def _answer(self, outcome: _Outcome) -> PublishSession | Rejection:
        if outcome.publish is not None:
            return outcome.publish
        return self._rejected("already_live", Rejection.already_live())  # never reached

    def _register(self, record: Broadcast) -> _Entry:
        entry = _Entry(record.id, record.channel, record, source=record.source,
                       health=HealthTracker(segment_target_s=self.settings.target_segment_s))
        entry.counters.sampled = (time.monotonic(), 0, 0)
        self._by_channel[record.channel] = entry
        self._metrics.live.set(len(self._by_channel))
        return entry

    async def _go_live(self, channel: str, request: PublishRequest) -> PublishSession | Rejection:
        """A new broadcast on the channel this connection has just claimed."""
        entry = self._register(Broadcast(id=new_id(), channel=channel, node_id=self.node_id,
                                         segment_format=self.settings.segment_format.value))
        accepted = lifecycle.PublishAccepted(request.connection_id)
        return self._answer(await self._drive(entry, accepted))

    # --- handover: the publisher came back to another node ----------------------------
    async def _take_over(self, channel: str, request: PublishRequest, holder: str,
                         fields: dict[str, str]) -> PublishSession | Rejection:
        """The channel is claimed: if its broadcast runs on another node, ask that node to
        hand it over (it does when its publisher is gone, within its grace window)."""
        fields = {**fields, "owner": holder}
        try:
            broadcast = await self.live.live_broadcast(channel)
        except LiveStateError:
            logger.exception("publish refused: live broadcast unreadable", extra=fields)
            return self._rejected("already_live", Rejection.already_live())
        if broadcast is None or broadcast.node_id == self.node_id:
            logger.info("publish refused: channel claimed elsewhere", extra=fields)
            return self._rejected("already_live", Rejection.already_live())
        fields.update(broadcast_id=broadcast.id, from_node=broadcast.node_id)
        ask = HandoverRequest(request_id=new_id(), channel=channel, broadcast_id=broadcast.id,
                              owner=request.connection_id, node_id=self.node_id)
        try:
            reply = await handover.request_handover(
                self.live, broadcast.node_id, ask, ack_timeout_s=self.handover_ack_timeout_s)
        except LiveStateError:
            logger.exception("handover request failed", extra=fields)
            reply = None
        if reply is None and await self._holder_dead(broadcast.node_id, fields):
            # Its node died with the broadcast (an edge relaying it re-relays here): the
            # broadcast goes on here from what that node published, after a
            # discontinuity, if its claim is still the dead connection's.
            if await self.live.transfer_claim(channel, holder, request.connection_id,
                                              self.claim_ttl_s):
                logger.warning("taking over a broadcast from a dead node", extra=fields)
                async with self._lock:
                    return await self._continue(broadcast, request, fields)
        if reply is None or reply.verdict is not Verdict.GRANTED:
            reason = "no answer" if reply is None else reply.reason
            logger.info("publish refused: channel live on another node", extra={
                **fields, "handover": reason})
            return self._rejected("already_live", Rejection.already_live())
        async with self._lock:
            return await self._continue(broadcast, request, fields)

    async def _holder_dead(self, node_id: str, fields: dict[str, str]) -> bool:
        """Whether the node holding a broadcast, silent on a handover request, is dead:
        no heartbeat record left, or its RTMP port refuses connections (its process is
        gone). A node that accepts connections but did not answer (cut from the live
        state, say) is alive and keeps its broadcast."""
        try:
            node = next((n for n in await self.live.list_nodes() if n.id == node_id), None)
        except LiveStateError:
            return False
        if node is None or node.state in (NodeState.STOPPED, NodeState.LOST):
            return True
        host, _, port = node.address.rpartition(":")
        try:
            async with asyncio.timeout(HOLDER_PROBE_TIMEOUT_S):
                _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
        except (ConnectionRefusedError, ValueError):
            logger.info("the node holding the broadcast refuses connections",
                        extra={**fields, "address": node.address})
            return True
        except (OSError, TimeoutError):
            return False  # unreachable is not dead: a partition heals
        writer.close()
        return False

    async def _continue(self, handed: Broadcast, request: PublishRequest,
                        fields: dict[str, str]) -> PublishSession | Rejection:
        """Granted: the claim is this connection's, the other node flushed and forgot the
        broadcast. From here it is this node's to continue (or to end)."""
        channel = handed.channel
        holder = await self.live.claim_channel(channel, request.connection_id,
                                               self.claim_ttl_s)  # ours: extends it
        updated = await self.live.update_broadcast(handed.id, node_id=self.node_id)
        if updated is None or updated.state is not BroadcastState.LIVE:
            # Gone from the live state meanwhile (the scheduler failed it, say): nothing
            # to continue; with the claim in hand the channel starts a new broadcast.
            logger.warning("handed-over broadcast no longer live; starting a new one",
                           extra=fields)
            if holder is not None:
                return self._rejected("already_live", Rejection.already_live())
            return await self._go_live(channel, request)
        entry = self._register(updated)
        return self._answer(await self._drive(entry, lifecycle.TakenOver(
            request.connection_id, claim_kept=holder is None, node_stopping=self._stopping)))

    async def _hand_over(self, ask: HandoverRequest) -> str | None:
        """Ask the broadcast's lifecycle until it answers (it waits a little for a
        publisher's close not seen yet); None once it did, else why there is nothing
        here to ask."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handover_publisher_wait_s
        commit_by = loop.time() + handover.COMMIT_WITHIN_S
        while True:
            async with self._lock:
                entry = self._by_channel.get(ask.channel)
                if entry is None or entry.broadcast_id != ask.broadcast_id:
                    _, refusal = handover.decide(holds_broadcast=False, publishing=False,
                                                 stopping=self._stopping, waited_out=True)
                    return refusal
                publisher = lifecycle.publisher(entry.state)
                moving = (publisher is not None and self.asked_to_move is not None
                          and self.asked_to_move(publisher))
                quiet_at = entry.last_packet + handover.MOVE_QUIET_S
                now = loop.time()
                outcome = await self._drive(entry, lifecycle.HandoverAsked(
                    ask.request_id, ask.owner, moving=moving, quiet=now >= quiet_at,
                    waited_out=now >= deadline, late=now > commit_by,
                    node_stopping=self._stopping))
                if outcome.handover_replied:
                    return None
                idle = entry.idle
                wake = min(deadline, quiet_at) if moving else deadline
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):
                    await idle.wait()

    # --- publisher gone: the grace window -------------------------------------------
    async def _publisher_gone(self, entry: _Entry, connection_id: str, reason: str) -> None:
        async with self._lock:
            grace_s = 0.0 if self._stopping else self.settings.reconnect_grace_s
            await self._drive(entry, lifecycle.PublisherGone(connection_id, reason, grace_s))

    async def _grace(self, entry: _Entry, timer: int, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with self._lock:
            await self._drive(entry, lifecycle.GraceExpired(timer))

    # --- carrying out the lifecycle ----------------------------------------------------
    async def _drive(self, entry: _Entry, event: lifecycle.Input) -> _Outcome:
        """Step ``entry``'s lifecycle with ``event`` and carry out the commands, feeding
        their answers back, under the lock. A step that raises is reported to the
        lifecycle, which undoes what it must; then the error goes on to the caller."""
        outcome = _Outcome()
        inputs: list[lifecycle.Input] = [event]
        error: BaseException | None = None
        while inputs:
            entry.state, commands = lifecycle.step(entry.state, inputs.pop(0))
            self._settle(entry)
            for command in commands:
                if not isinstance(command, lifecycle.Step):
                    await self._carry_out(entry, command, outcome)
                    continue
                try:
                    answer = await self._take_step(entry, command)
                except BaseException as e:  # CancelledError too: the claim is undone
                    error = error or e
                    inputs.append(lifecycle.StepFailed(command, f"{type(e).__name__}: {e}"))
                    break
                if answer is not None:
                    inputs.append(answer)
        if error is not None:
            raise error
        return outcome

    def _settle(self, entry: _Entry) -> None:
        """What follows from the state itself: the idle flag, forgetting the broadcast."""
        if lifecycle.publisher(entry.state) is None:
            entry.idle.set()
        else:
            entry.idle.clear()
        if entry.over:
            if entry.publication is not None:
                entry.publication.detach()
            if self._by_channel.get(entry.channel) is entry:
                del self._by_channel[entry.channel]
            self._metrics.live.set(len(self._by_channel))
            for gauge in (self._metrics.bitrate, self._metrics.fps,
                          *self._metrics.transport.values()):
                with contextlib.suppress(KeyError):
                    gauge.remove(entry.channel)

    async def _take_step(self, entry: _Entry, command: lifecycle.Step) -> lifecycle.Input | None:
        match command:
            case lifecycle.PutLiveRecord():
                await self.live.put_broadcast(entry.record)
            case lifecycle.SaveCatalogRecord():
                await self._catalog_call(self.catalog.save_broadcast, entry.record)
            case lifecycle.StartMedia(handover=handing):
                entry.media = (await self.pipeline.start(entry.record, handover=handing)
                               if self.pipeline is not None else None)
                return lifecycle.MediaStarted()
            case lifecycle.MoveClaim(from_owner=old, to_owner=new):
                moved = (await self.live.transfer_claim(entry.channel, old, new,
                                                        self.claim_ttl_s)
                         or await self.live.claim_channel(entry.channel, new,
                                                          self.claim_ttl_s) is None)
                return lifecycle.ClaimMoved(moved)
            case lifecycle.TransferClaim(from_owner=old, to_owner=new):
                return lifecycle.ClaimMoved(await self.live.transfer_claim(entry.channel, old, new,
                                                                 self.claim_ttl_s))
        return None

    async def _carry_out(self, entry: _Entry, command: lifecycle.Command,
                         outcome: _Outcome) -> None:
        fields = entry.log_fields
        try:
            match command:
                case lifecycle.AcceptPublisher(connection=connection, how=how):
                    entry.publication = _Publication(self, entry, connection)
                    outcome.publish = entry.publication
                    self._metrics.publishes.labels(how).inc()
                    logger.info(_ACCEPTED_LOG[how], extra={
                        **fields, "connection_id": connection, "node": self.node_id})
                case lifecycle.RejectPublisher(connection=connection):
                    logger.info("publish refused: channel already live",
                                extra={**fields, "connection_id": connection})
                    outcome.publish = self._rejected("already_live", Rejection.already_live())
                case lifecycle.AnnounceStarted():
                    await self.live.publish(BROADCASTS_TOPIC, BroadcastStarted(
                        entry.broadcast_id, entry.channel))
                case lifecycle.AnnounceResumed():
                    await self.live.publish(BROADCASTS_TOPIC, BroadcastResumed(
                        entry.broadcast_id, entry.channel, self.node_id))
                case lifecycle.Discontinuity():
                    entry.health.discontinuity()
                    if entry.media is not None:
                        await entry.media.discontinuity()
                case lifecycle.StartGraceTimer(timer=timer, delay_s=delay_s):
                    logger.info("publisher gone; waiting for a reconnect",
                                extra={**fields, "grace_s": delay_s})
                    entry.grace = asyncio.create_task(self._grace(entry, timer, delay_s),
                                                      name=f"grace-{entry.broadcast_id}")
                case lifecycle.CancelGraceTimer():
                    if entry.grace is not None and entry.grace is not asyncio.current_task():
                        entry.grace.cancel()
                    entry.grace = None
                case lifecycle.DisconnectPublisher(connection=connection):
                    if self.disconnect_publisher is not None:
                        self.disconnect_publisher(connection)
                case lifecycle.FinishMedia():
                    if entry.media is not None:
                        await entry.media.finish()
                case lifecycle.HandOverMedia():
                    if entry.media is not None:
                        await entry.media.hand_over()
                case lifecycle.RecordEnd(state=state):
                    entry.ended_at = utcnow()
                    # Atomic: the transcoder may be recording renditions at this moment.
                    entry.ended = await self.live.update_broadcast(
                        entry.broadcast_id, state=state, ended_at=entry.ended_at)
                case lifecycle.SaveEnd(state=state, wait=wait):
                    self._ends.record(entry.broadcast_id, entry.ended,
                                      entry.ended_at or utcnow(), state)
                    if wait:
                        await self._ends.save_now()
                    else:
                        self._ends.save_soon()
                case lifecycle.ReleaseClaim(owner=owner):
                    await self.live.release_claim(entry.channel, owner)
                case lifecycle.AnnounceEnd(state=state, reason=reason):
                    # On its media topic too: origins answer blocked reloads at once.
                    await announce(self.live, BroadcastFailed(
                        entry.broadcast_id, entry.channel, reason)
                        if state is BroadcastState.FAILED
                        else BroadcastEnded(entry.broadcast_id, entry.channel))
                    logger.info(f"broadcast {state.value}", extra={**fields, "reason": reason})
                case lifecycle.ReplyHandover(request_id=request_id, verdict=verdict, reason=reason):
                    if verdict is Verdict.GRANTED:
                        logger.info("broadcast handed over to another node",
                                    extra={**fields, "request_id": request_id})
                    else:
                        logger.info("handover refused", extra={
                            **fields, "request_id": request_id, "reason": reason})
                    outcome.handover_replied = True
                    await self._handovers.reply(HandoverReply(request_id, verdict, reason))
                case lifecycle.Feed(packet=packet):
                    await self._feed(entry, packet)
        except Exception:
            logger.exception(_FAILURES.get(type(command), "broadcast lifecycle command failed"),
                             extra={**fields, "command": type(command).__name__})

    # --- media, source info and stats ----------------------------------------------
    async def _feed(self, entry: _Entry, packet: MediaPacket) -> None:
        entry.last_packet = asyncio.get_running_loop().time()
        self._metrics.bytes.labels(packet.kind.value).inc(len(packet.payload))
        self._metrics.packets.labels(packet.kind.value).inc()
        if packet.track != 0:
            # An encoder-sent rendition: the source's figures and health are track 0's.
            entry.tracks.count(packet)
        else:
            if (learned := entry.counters.count(packet)) is not None:
                await self._update_source(entry, learned)
            for code in entry.health.on_packet(packet):
                self._warn_streamer(entry, code)
        if entry.media is not None:
            await entry.media.feed(packet)

    async def _update_source(self, entry: _Entry, new: SourceInfo) -> None:
        merged = merge_source(entry.source, new)
        if merged == entry.source:
            return
        entry.source = merged
        if entry.over:
            return
        # entry.source accumulates every source update of this broadcast (only this
        # manager writes it); the atomic update keeps the transcoder's renditions.
        updated = await self.live.update_broadcast(entry.broadcast_id, source=merged)
        if updated is None or entry.over:  # ended meanwhile: the end saves the catalog
            return
        # Not awaited: the publisher's packets never wait for the catalog (frozen, or its
        # disk full), and a refusal costs only this early copy -- the end saves the
        # broadcast with its source whatever happens here. One thread of their own keeps
        # them in order, and none lands on a broadcast that has ended.
        future = asyncio.get_running_loop().run_in_executor(
            self._source_saves, self.catalog.set_source, updated.id, merged)
        future.add_done_callback(_log_source_save)

    async def publish_stats(self) -> None:
        """Sample every broadcast's rates, store them in the live state, refresh claims."""
        now = time.monotonic()
        for entry in list(self._by_channel.values()):
            kbps, fps = entry.counters.sample(now)
            stats: dict[str, float | str] = {
                "bitrate_kbps": round(kbps, 1), "fps": round(fps, 2),
                "video_codec": entry.counters.video_codec or "",
                "audio_codec": entry.counters.audio_codec or "",
                "encoder": (entry.source.encoder if entry.source else None) or "",
                "dropped": float(entry.media.dropped) if entry.media is not None else 0.0,
                "publishing": 1.0 if lifecycle.publisher(entry.state) is not None else 0.0,
            }
            for code in entry.health.on_bitrate(kbps):
                self._warn_streamer(entry, code)
            stats.update(_health_stats(entry.health))
            stats.update(entry.tracks.sample(now))
            stats.update(entry.transport)
            entry.stats = stats
            self._metrics.bitrate.labels(entry.channel).set(kbps)
            self._metrics.fps.labels(entry.channel).set(fps)
            # The transcoder writes its own keys (lag, drops, health warnings) into the
            # same record: keep them rather than blank them every second.
            merged = await self.live.get_stats(entry.broadcast_id)
            merged.update(stats)
            await self.live.put_stats(entry.broadcast_id, merged)
            owner = lifecycle.claim_owner(entry.state)
            if owner is not None and not await self.live.refresh_claim(entry.channel, owner,
                                                                       self.claim_ttl_s):
                await self._reclaim(entry, owner)
            await self._keep_registered(entry)

    @staticmethod
    def _warn_streamer(entry: _Entry, code: str) -> None:
        text = describe(code)
        logger.warning("source health: %s; %s", text.message, text.advice,
                       extra={**entry.log_fields, "warning": code,
                              "keyframe_interval_s": entry.health.keyframe_interval_s})

    async def _reclaim(self, entry: _Entry, owner: str) -> None:
        """The claim is gone from the live state (expired while it was unreachable, or
        it restarted empty): claim the channel again, unless someone else has it now."""
        holder = await self.live.claim_channel(entry.channel, owner, self.claim_ttl_s)
        if holder is None:
            logger.warning("channel claim was missing from the live state; claimed again",
                           extra=entry.log_fields)
        else:
            logger.warning("channel claim lost", extra={**entry.log_fields, "holder": holder})

    async def _keep_registered(self, entry: _Entry) -> None:
        """Put the broadcast's record back if the live state lost it (origins answer
        "not live" without it while the publisher streams on)."""
        current = await self.live.get_broadcast(entry.broadcast_id)
        if current is not None:
            entry.record = current
            return
        async with self._lock:  # never resurrect a broadcast that is ending right now
            if (not lifecycle.on_this_node(entry.state)
                    or entry.record.state is not BroadcastState.LIVE):
                return
            if await self.live.get_broadcast(entry.broadcast_id) is not None:
                return
            await self.live.put_broadcast(entry.record)
        logger.warning("broadcast record was missing from the live state; put back",
                       extra=entry.log_fields)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            try:
                await self.publish_stats()
            except Exception:
                logger.exception("publishing ingest stats failed")


def _health_stats(health: HealthTracker) -> dict[str, float | str]:
    """The source's health as stats keys (a measure not known yet is left out)."""
    report = health.report()
    stats: dict[str, float | str] = {
        "audio": 1.0 if report.audio else 0.0,
        "source_warnings": ",".join(w.value for w in report.warnings)}
    for key, value in (("keyframe_interval_s", report.keyframe_interval_s),
                       ("source_fps", report.fps),
                       ("bitrate_variation", report.bitrate_variation)):
        if value is not None:
            stats[key] = value
    return stats
