"""Broadcast lifecycle: the real :class:`~ingest.publish.PublishHandler`.

A publish resolves its stream key through the catalog (only key hashes are stored),
claims the channel fleet-wide in the live state (one broadcast per channel: a second
publisher is refused while the first continues; a dead node's claim expires), and puts
a live :class:`~castway.model.Broadcast` in the live state and the catalog, announced on
``BROADCASTS_TOPIC`` (:mod:`castway.events.broadcasts`); its media pipeline (the
transcoder, or nothing) gets every packet.

When the publisher drops, the broadcast waits ``settings.reconnect_grace_s``: the same
channel publishing again within it continues the same broadcast (``discontinuity()``,
a "resumed" event); otherwise it ends ("ended": state, ended_at, ``finish()``).

The publisher may come back to *another* node (a drain's reconnect request, or the load
balancer's choice after a blip): that node's claim fails, so it asks the node named in
the live broadcast record to hand the broadcast over (:mod:`ingest.handover`). The old
node, if the broadcast is in its grace window, moves the claim to the new connection,
flushes its transcoder without ending the playlists (``hand_over()``) and forgets the
broadcast without ending it; the new node records itself as the broadcast's node, starts
its pipeline in handover mode (playlists continue from the live state after a
discontinuity) and announces "resumed". The broadcast id, playlists and segment log stay
the same; no "ended" comes in between.

Broadcast records are re-read from the live state before every update, because the
transcoder side writes their ``renditions``.

The live state is a cache this node can rebuild: every stats tick checks that each of
its broadcasts still has its record and its channel claim there, and puts back what is
missing (Redis restarted empty, or failed over to an empty replica), from the last
record it read (or the catalog's). The transcoder rewrites the windows with its next
part, so viewers get the broadcast back within seconds of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
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
    BroadcastResumed,
    BroadcastStarted,
)
from castway.events.handover import HandoverReply, HandoverRequest, Verdict, request_topic
from castway.keys import hash_stream_key
from castway.live.base import LiveState, LiveStateError, Subscription
from castway.media import BroadcastMedia, MediaKind, MediaPacket, MediaPipelineFactory
from castway.model import Broadcast, BroadcastState, SourceInfo, new_id, utcnow
from castway.settings import Settings
from ingest import handover
from ingest.handover import Decision
from ingest.publish import PublishRequest, PublishSession, Rejection

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A channel claim lives this long unless refreshed (a dead node's claim expires).
CLAIM_TTL_S = 15.0
#: Stats and claim refreshes run this often.
STATS_INTERVAL_S = 2.0
#: Retry of the handover listener's subscription while the live state is down.
HANDOVER_RESUBSCRIBE_S = 1.0
#: Threads for this node's catalog calls (key lookups, broadcast records, some on the
#: packet path): never asyncio's default executor, which blocking calls elsewhere in the
#: process can fill (the embedded archiver's storage calls while S3 is frozen).
CATALOG_THREADS = 4

_VIDEO_CODEC_IDS: dict[int, str] = {7: "h264", 12: "hevc"}
_AUDIO_CODEC_IDS: dict[int, str] = {10: "aac", 2: "mp3", 14: "mp3"}
_FOURCC_NAMES: dict[str, str] = {"avc1": "h264", "hvc1": "hevc", "av01": "av1",
                                 "vp09": "vp9", "mp4a": "aac", ".mp3": "mp3", "Opus": "opus"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _codec_name(value: object, legacy: dict[int, str]) -> str | None:
    """onMetaData's videocodecid/audiocodecid: a legacy FLV id or an E-RTMP FourCC
    (as a number, or a string)."""
    if isinstance(value, str):
        return _FOURCC_NAMES.get(value, value)
    number = _number(value)
    if number is None or number < 0 or number >= 2**32:
        return None
    n = int(number)
    if n in legacy:
        return legacy[n]
    fourcc = n.to_bytes(4, "big").decode("latin-1")
    return _FOURCC_NAMES.get(fourcc)


def source_from_metadata(metadata: dict[str, object]) -> SourceInfo:
    """SourceInfo from an onMetaData object (FLV spec E.5 field names)."""
    channels = _number(metadata.get("audiochannels"))
    if channels is None and isinstance(metadata.get("stereo"), bool):
        channels = 2.0 if metadata["stereo"] else 1.0
    rate = _number(metadata.get("audiosamplerate"))
    encoder = metadata.get("encoder")
    return SourceInfo(
        video_codec=_codec_name(metadata.get("videocodecid"), _VIDEO_CODEC_IDS),
        audio_codec=_codec_name(metadata.get("audiocodecid"), _AUDIO_CODEC_IDS),
        width=int(w) if (w := _number(metadata.get("width"))) else None,
        height=int(h) if (h := _number(metadata.get("height"))) else None,
        fps=_number(metadata.get("framerate")) or _number(metadata.get("fps")) or None,
        video_bitrate_kbps=_number(metadata.get("videodatarate")) or None,
        audio_bitrate_kbps=_number(metadata.get("audiodatarate")) or None,
        audio_sample_rate=int(rate) if rate else None,
        audio_channels=int(channels) if channels else None,
        encoder=encoder if isinstance(encoder, str) else None,
    )


def parse_audio_specific_config(asc: bytes) -> tuple[int | None, int | None]:
    """Sample rate and channel count of an AAC AudioSpecificConfig (ISO 14496-3 1.6.2.1)."""
    if len(asc) < 2:
        return None, None
    bits = int.from_bytes(asc[:5].ljust(5, b"\x00"), "big")
    pos = 40

    def take(n: int) -> int:
        nonlocal pos
        pos -= n
        return (bits >> pos) & ((1 << n) - 1)

    object_type = take(5)
    if object_type == 31:
        take(6)
    index = take(4)
    if index == 15:
        rate: int | None = take(24)
    else:
        rate = _AAC_RATES[index] if index < len(_AAC_RATES) else None
    channels = take(4)
    return rate, channels or None


def _merge(old: SourceInfo | None, new: SourceInfo) -> SourceInfo:
    """``new``'s known fields over ``old``'s."""
    if old is None:
        return new
    updates = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)
               if getattr(new, f.name) is not None}
    return dataclasses.replace(old, **updates)


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


@dataclass
class _Live:
    """One broadcast of this node, live or waiting out its reconnect grace window."""

    broadcast_id: str
    channel: str
    owner: str  # the connection id holding the channel claim
    media: BroadcastMedia | None
    publication: _Publication | None = None
    grace: asyncio.Task[None] | None = None
    ended: bool = False  # this node is done with it: ended, or handed over
    # Set while no publisher is connected (a handover request waits on it).
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    source: SourceInfo | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    video_bytes: int = 0
    audio_bytes: int = 0
    video_frames: int = 0
    last_sample: tuple[float, int, int] = (0.0, 0, 0)  # time, bytes, frames
    last_packet: float = 0.0  # loop time of the last packet from the publisher
    stats: dict[str, float | str] = field(default_factory=dict)
    # The newest record of it read from the live state: what goes back if it vanishes.
    record: Broadcast | None = None


class _Publication:
    """The PublishSession of one connection: forwards to its broadcast's media."""

    def __init__(self, manager: BroadcastManager, entry: _Live, connection_id: str) -> None:
        self._manager = manager
        self._entry = entry
        self.connection_id = connection_id
        self._closed = False

    async def on_metadata(self, metadata: dict[str, object]) -> None:
        if not self._closed:
            await self._manager._update_source(self._entry, source_from_metadata(metadata))

    async def on_packet(self, packet: MediaPacket) -> None:
        entry = self._entry
        if self._closed or entry.ended:
            return
        entry.last_packet = asyncio.get_running_loop().time()
        kind = packet.kind.value
        size = len(packet.payload)
        self._manager._metrics.bytes.labels(kind).inc(size)
        self._manager._metrics.packets.labels(kind).inc()
        if packet.kind is MediaKind.VIDEO:
            entry.video_bytes += size
            if not packet.is_config:
                entry.video_frames += 1
            elif entry.video_codec != packet.codec.value:
                entry.video_codec = packet.codec.value
                await self._manager._update_source(entry, SourceInfo(video_codec=entry.video_codec))
        else:
            entry.audio_bytes += size
            if packet.is_config and entry.audio_codec != packet.codec.value:
                entry.audio_codec = packet.codec.value
                rate, channels = (parse_audio_specific_config(packet.payload)
                                  if packet.codec.value == "aac" else (None, None))
                await self._manager._update_source(entry, SourceInfo(
                    audio_codec=entry.audio_codec, audio_sample_rate=rate,
                    audio_channels=channels))
        if entry.media is not None:
            await entry.media.feed(packet)

    async def on_close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        await self._manager._publisher_gone(self._entry, self, reason)

    def detach(self) -> None:
        """The broadcast left this connection (handed over to another node)."""
        self._closed = True


def _log_source_save(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.warning("source update not saved to the catalog (saved at the end)",
                       extra={"error": str(error)})


ENDS_CLOSE_TIMEOUT_S = 10.0
ENDS_MAX_BACKOFF_S = 30.0


class PendingEnds:
    """Ends of broadcasts not yet saved in the catalog, saved again until they are.

    The live state may have lost the broadcast (Redis restarted), so the ended record
    is built from the catalog's own row when the live state has none. What is still
    unsaved when the node stops is left to the archiver's sweep, which fails the
    broadcast once this node stops heartbeating and makes its VOD all the same."""

    def __init__(self, catalog: Catalog, threads: ThreadPoolExecutor, *,
                 base_backoff_s: float = 0.25,
                 max_backoff_s: float = ENDS_MAX_BACKOFF_S) -> None:
        self.catalog = catalog
        self.threads = threads
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._pending: dict[str, tuple[Broadcast | None, datetime]] = {}
        self._retry: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, broadcast_id: str, ended: Broadcast | None, ended_at: datetime) -> None:
        self._pending[broadcast_id] = (ended, ended_at)

    async def save_now(self) -> bool:
        """Try to save every pending end once; retry in the background what fails."""
        saved = await self._save_pending()
        if not saved and self._retry is None:
            self._retry = asyncio.create_task(self._retry_loop(), name="ingest-save-ends")
        return saved

    def _save(self, broadcast_id: str, ended: Broadcast | None, ended_at: datetime) -> None:
        if ended is None:
            current = self.catalog.get_broadcast(broadcast_id)
            if current is None:
                return  # never recorded: nothing to end
            ended = dataclasses.replace(current, state=BroadcastState.ENDED,
                                        ended_at=ended_at)
        self.catalog.save_broadcast(ended)

    async def _retry_loop(self) -> None:
        attempt = 0
        try:
            while self._pending:
                await asyncio.sleep(min(self.max_backoff_s,
                                        self.base_backoff_s * 2.0 ** attempt))
                attempt += 1
                if await self._save_pending():
                    logger.info("broadcast ends saved in the catalog after a failure")
        finally:
            self._retry = None

    async def _save_pending(self) -> bool:
        for broadcast_id, (ended, ended_at) in list(self._pending.items()):
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self.threads, self._save, broadcast_id, ended, ended_at)
            except Exception as e:  # CatalogError, a full disk's OSError, ...
                logger.warning("cannot save a broadcast's end in the catalog; retrying",
                               extra={"broadcast_id": broadcast_id, "error": str(e)})
                return False  # the catalog is down for the others too
            self._pending.pop(broadcast_id, None)
        return True

    async def close(self, timeout_s: float) -> None:
        """Give pending ends up to ``timeout_s`` more, then stop retrying."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._save_pending(), timeout_s)
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._pending:
            logger.error("broadcast ends never saved in the catalog; the archiver's sweep "
                         "will fail and archive them", extra={"broadcasts": sorted(self._pending)})


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
        #: Closes a publisher's connection, by its id (the RTMP server's): a stopped
        #: broadcast's publisher is cut off at once, not when it goes quiet.
        self.disconnect: Callable[[str], bool] | None = None
        self.node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_ttl_s = claim_ttl_s
        self.stats_interval_s = stats_interval_s
        self.handover_ack_timeout_s = handover_ack_timeout_s
        self.handover_publisher_wait_s = handover_publisher_wait_s
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        self._by_channel: dict[str, _Live] = {}
        self._lock = asyncio.Lock()  # publish decisions and endings never interleave
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._handover_sub: Subscription[HandoverRequest] | None = None
        self._handover_task: asyncio.Task[None] | None = None
        self._handovers: set[asyncio.Task[None]] = set()  # requests being served
        self._catalog_threads = ThreadPoolExecutor(CATALOG_THREADS,
                                                   thread_name_prefix="ingest-catalog")
        self._ends = PendingEnds(catalog, self._catalog_threads)
        self._source_saves = ThreadPoolExecutor(1, thread_name_prefix="ingest-source")

    async def _catalog_call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._catalog_threads, fn,
                                                                *args)

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the stats loop and the listener for handover requests (subscribed when
        this returns, unless the live state is down: then it keeps trying)."""
        self._loop_task = asyncio.create_task(self._stats_loop(), name="ingest-stats")
        try:
            self._handover_sub = await self.live.subscribe(request_topic(self.node_id))
        except LiveStateError:
            logger.exception("cannot listen for handover requests yet; retrying",
                             extra={"node": self.node_id})
        self._handover_task = asyncio.create_task(self._handover_loop(),
                                                  name="ingest-handover")

    async def stop(self) -> None:
        """End every broadcast of this node now (grace windows included)."""
        self._stopping = True
        for task in (self._loop_task, self._handover_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._handover_sub is not None:
            with contextlib.suppress(LiveStateError):
                await self._handover_sub.close()
        # Requests being served refuse from now on; one flushing its media finishes.
        if self._handovers:
            await asyncio.gather(*self._handovers, return_exceptions=True)
        for entry in list(self._by_channel.values()):
            if entry.grace is not None:
                entry.grace.cancel()
            await self._end(entry, "node stopping")
        await self._ends.close(ENDS_CLOSE_TIMEOUT_S)
        self._catalog_threads.shutdown(wait=False)
        self._source_saves.shutdown(wait=False)

    @property
    def live_broadcasts(self) -> int:
        return len(self._by_channel)

    def broadcast_id(self, channel: str) -> str | None:
        entry = self._by_channel.get(channel)
        return entry.broadcast_id if entry else None

    async def stop_broadcast(self, broadcast_id: str) -> bool:
        """End a broadcast of this node now (an operator's stop): its publisher is
        disconnected and no grace window waits for it to come back. False when it is
        not live here."""
        entry = next((e for e in self._by_channel.values()
                      if e.broadcast_id == broadcast_id and not e.ended), None)
        if entry is None:
            return False
        if entry.publication is not None and self.disconnect is not None:
            self.disconnect(entry.publication.connection_id)
        await self._end(entry, "stopped")
        return True

    # --- PublishHandler --------------------------------------------------------------
    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection:
        fields = {"connection_id": request.connection_id, "peer": request.peer}
        if self._stopping:
            return self._rejected("unavailable", Rejection.unavailable("shutting down"))
        channel = await self._catalog_call(self.catalog.channel_for_key_hash,
                                          hash_stream_key(request.stream_key))
        if channel is None:
            logger.info("publish with an unknown stream key", extra=fields)
            return self._rejected("bad_name", Rejection.bad_name())
        fields["channel"] = channel
        async with self._lock:
            entry = self._by_channel.get(channel)
            if entry is not None and entry.publication is not None:
                logger.info("publish refused: channel already live on this node", extra=fields)
                return self._rejected("already_live", Rejection.already_live())
            if entry is not None:
                return await self._resume(entry, request)
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

    async def _go_live(self, channel: str, request: PublishRequest) -> PublishSession:
        """A new broadcast on the channel this connection has just claimed; the claim is
        released if starting it fails."""
        try:
            return await self._start_broadcast(channel, request)
        except BaseException:
            await self.live.release_claim(channel, request.connection_id)
            raise

    async def _start_broadcast(self, channel: str, request: PublishRequest
                               ) -> PublishSession:
        broadcast = Broadcast(id=new_id(), channel=channel, node_id=self.node_id,
                              segment_format=self.settings.segment_format.value)
        await self.live.put_broadcast(broadcast)
        await self._catalog_call(self.catalog.save_broadcast, broadcast)
        media = await self.pipeline.start(broadcast) if self.pipeline is not None else None
        entry = _Live(broadcast.id, channel, request.connection_id, media,
                      last_sample=(time.monotonic(), 0, 0), record=broadcast)
        publication = _Publication(self, entry, request.connection_id)
        entry.publication = publication
        self._by_channel[channel] = entry
        self._metrics.live.set(len(self._by_channel))
        self._metrics.publishes.labels("accepted").inc()
        await self.live.publish(BROADCASTS_TOPIC, BroadcastStarted(broadcast.id, channel))
        logger.info("broadcast started", extra={"broadcast_id": broadcast.id, "channel": channel,
                                                "connection_id": request.connection_id})
        return publication

    async def _resume(self, entry: _Live, request: PublishRequest) -> PublishSession | Rejection:
        """The channel's publisher is back within the grace window: same broadcast."""
        if entry.grace is not None:
            entry.grace.cancel()
            entry.grace = None
        # One atomic step from the old connection to the new one: no other node's
        # publisher can claim the channel in between. If the old claim has lapsed, claim
        # it afresh (refused if another node got it meanwhile).
        if not await self.live.transfer_claim(entry.channel, entry.owner,
                                              request.connection_id, self.claim_ttl_s):
            holder = await self.live.claim_channel(entry.channel, request.connection_id,
                                                   self.claim_ttl_s)
            if holder is not None:
                await self._end(entry, "channel claimed elsewhere", locked=True)
                return self._rejected("already_live", Rejection.already_live())
        entry.owner = request.connection_id
        publication = _Publication(self, entry, request.connection_id)
        entry.publication = publication
        entry.idle.clear()
        if entry.media is not None:
            await entry.media.discontinuity()
        self._metrics.publishes.labels("resumed").inc()
        await self._announce_resumed(entry)
        logger.info("broadcast resumed", extra={"broadcast_id": entry.broadcast_id,
                                                "channel": entry.channel,
                                                "connection_id": request.connection_id})
        return publication

    async def _announce_resumed(self, entry: _Live) -> None:
        """The broadcast goes on, on this node (a reconnect here, or a handover)."""
        await self.live.publish(BROADCASTS_TOPIC, BroadcastResumed(
            entry.broadcast_id, entry.channel, self.node_id))

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
        if reply is None or reply.verdict is not Verdict.GRANTED:
            reason = "no answer" if reply is None else reply.reason
            logger.info("publish refused: channel live on another node", extra={
                **fields, "handover": reason})
            return self._rejected("already_live", Rejection.already_live())
        async with self._lock:
            return await self._continue(broadcast, request, fields)

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
        await self._catalog_call(self.catalog.save_broadcast, updated)
        media = (await self.pipeline.start(updated, handover=True)
                 if self.pipeline is not None else None)
        entry = _Live(updated.id, channel, request.connection_id, media,
                      source=updated.source, last_sample=(time.monotonic(), 0, 0),
                      record=updated)
        self._by_channel[channel] = entry
        self._metrics.live.set(len(self._by_channel))
        if holder is not None or self._stopping:
            # The claim expired during a very slow flush and someone else has it, or
            # this node is stopping: the broadcast is ours, and ends here.
            await self._end(entry, "node stopping" if self._stopping
                            else "channel claimed elsewhere", locked=True)
            return self._rejected("already_live", Rejection.already_live())
        publication = _Publication(self, entry, request.connection_id)
        entry.publication = publication
        self._metrics.publishes.labels("handover").inc()
        await self._announce_resumed(entry)
        logger.info("broadcast taken over from another node", extra={
            **fields, "node": self.node_id, "connection_id": request.connection_id})
        return publication

    async def _handover_loop(self) -> None:
        """Serve handover requests addressed to this node, each in its own task."""
        while True:
            if self._handover_sub is None:
                try:
                    self._handover_sub = await self.live.subscribe(
                        request_topic(self.node_id))
                except LiveStateError:
                    await asyncio.sleep(HANDOVER_RESUBSCRIBE_S)
                    continue
            try:
                ask = await self._handover_sub.get()
            except LiveStateError:  # closed under us (the live state closing)
                return
            if len(self._handovers) >= handover.MAX_IN_FLIGHT:
                await self._reply(HandoverReply(ask.request_id, Verdict.REFUSED, "busy"))
                continue
            task = asyncio.create_task(self._serve_handover(ask),
                                       name=f"handover-{ask.request_id}")
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)

    async def _reply(self, reply: HandoverReply) -> None:
        try:
            await handover.send_reply(self.live, reply)
        except LiveStateError:
            logger.exception("handover reply failed", extra={"request_id": reply.request_id})

    async def _serve_handover(self, ask: HandoverRequest) -> None:
        fields = {"broadcast_id": ask.broadcast_id, "channel": ask.channel,
                  "to_node": ask.node_id, "request_id": ask.request_id}
        await self._reply(HandoverReply(ask.request_id, Verdict.ACK))
        try:
            reason = await self._hand_over(ask, fields)
        except Exception:
            logger.exception("handover failed", extra=fields)
            reason = "internal error"
        verdict = Verdict.GRANTED if reason is None else Verdict.REFUSED
        if reason is not None:
            logger.info("handover refused", extra={**fields, "reason": reason})
        await self._reply(HandoverReply(ask.request_id, verdict, reason or ""))

    async def _hand_over(self, ask: HandoverRequest, fields: dict[str, str]) -> str | None:
        """Give the broadcast to the requesting node if its publisher is gone (waiting a
        little for a close not seen yet); None when granted, else why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handover_publisher_wait_s
        commit_by = loop.time() + handover.COMMIT_WITHIN_S
        while True:
            async with self._lock:
                entry = self._by_channel.get(ask.channel)
                holds = (entry is not None and not entry.ended
                         and entry.broadcast_id == ask.broadcast_id)
                publishing = entry is not None and entry.publication is not None
                moving = (publishing and entry is not None and self.asked_to_move is not None
                          and self.asked_to_move(entry.owner))
                quiet_at = (entry.last_packet if entry is not None else 0.0) \
                    + handover.MOVE_QUIET_S
                now = loop.time()
                decision, reason = handover.decide(
                    holds_broadcast=holds, stopping=self._stopping, publishing=publishing,
                    moving=moving, quiet=now >= quiet_at, waited_out=now >= deadline,
                    late=now > commit_by)
                if decision is Decision.REFUSE or entry is None:
                    return reason
                if decision is Decision.GRANT:
                    return await self._give_away(entry, ask, fields)
                idle = entry.idle
                wake = min(deadline, quiet_at) if moving else deadline
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):
                    await idle.wait()

    async def _give_away(self, entry: _Live, ask: HandoverRequest,
                         fields: dict[str, str]) -> str | None:
        """Under the lock, publisher gone (or moving): the claim to the new connection
        (atomically, so no third publisher slips in), then flush and forget -- without
        ending."""
        if not await self.live.transfer_claim(entry.channel, entry.owner, ask.owner,
                                              self.claim_ttl_s):
            return "channel claim lost"
        if entry.publication is not None:
            # A publisher that moved on request: what it still sends here is ignored
            # (the new node has it), and its close changes nothing.
            entry.publication.detach()
            entry.publication = None
        entry.ended = True  # no longer ours: the grace task and _end leave it alone
        if entry.grace is not None:
            entry.grace.cancel()
            entry.grace = None
        self._forget(entry)
        if entry.media is not None:
            try:
                await entry.media.hand_over()
            except Exception:  # the next node continues from whatever got written
                logger.exception("media pipeline hand-over failed", extra=fields)
        logger.info("broadcast handed over to another node", extra=fields)
        return None

    def _forget(self, entry: _Live) -> None:
        self._by_channel.pop(entry.channel, None)
        self._metrics.live.set(len(self._by_channel))
        for gauge in (self._metrics.bitrate, self._metrics.fps):
            with contextlib.suppress(KeyError):
                gauge.remove(entry.channel)

    # --- publisher gone: grace window, then the end ----------------------------------
    async def _publisher_gone(self, entry: _Live, publication: _Publication,
                              reason: str) -> None:
        async with self._lock:
            if entry.publication is not publication or entry.ended:
                return
            entry.publication = None
            entry.idle.set()
            logger.info("publisher gone; waiting for a reconnect", extra={
                "broadcast_id": entry.broadcast_id, "channel": entry.channel,
                "reason": reason, "grace_s": self.settings.reconnect_grace_s})
            if self._stopping or self.settings.reconnect_grace_s <= 0:
                await self._end(entry, reason, locked=True)
                return
            entry.grace = asyncio.create_task(self._grace(entry, reason),
                                              name=f"grace-{entry.broadcast_id}")

    async def _grace(self, entry: _Live, reason: str) -> None:
        await asyncio.sleep(self.settings.reconnect_grace_s)
        async with self._lock:
            if entry.publication is None and not entry.ended:
                entry.grace = None  # we are it: do not cancel ourselves in _end
                await self._end(entry, reason, locked=True)

    async def _end(self, entry: _Live, reason: str, *, locked: bool = False) -> None:
        if not locked:
            async with self._lock:
                await self._end(entry, reason, locked=True)
            return
        if entry.ended:
            return
        entry.ended = True
        if entry.grace is not None and entry.grace is not asyncio.current_task():
            entry.grace.cancel()
        self._forget(entry)
        fields = {"broadcast_id": entry.broadcast_id, "channel": entry.channel,
                  "reason": reason}
        if entry.media is not None:
            try:
                await entry.media.finish()
            except Exception:
                logger.exception("media pipeline finish failed", extra=fields)
        ended_at = utcnow()
        ended: Broadcast | None = None
        try:
            # Atomic: the transcoder may be recording renditions at this very moment.
            ended = await self.live.update_broadcast(
                entry.broadcast_id, state=BroadcastState.ENDED, ended_at=ended_at)
        except Exception:
            logger.exception("recording the end in the live state failed", extra=fields)
        # The catalog's record of the end is what the archiver trusts (docs/reliability.md):
        # if it cannot be written now (a full disk, the database down), keep trying.
        self._ends.record(entry.broadcast_id, ended, ended_at)
        await self._ends.save_now()
        try:
            await self.live.release_claim(entry.channel, entry.owner)
            await announce(self.live, BroadcastEnded(entry.broadcast_id, entry.channel))
        except Exception:
            logger.exception("announcing the end of a broadcast failed", extra=fields)
        logger.info("broadcast ended", extra=fields)

    # --- source info and stats -------------------------------------------------------
    async def _update_source(self, entry: _Live, new: SourceInfo) -> None:
        merged = _merge(entry.source, new)
        if merged == entry.source:
            return
        entry.source = merged
        if entry.ended:
            return
        # entry.source accumulates every source update of this broadcast (only this
        # manager writes it); the atomic update keeps the transcoder's renditions.
        updated = await self.live.update_broadcast(entry.broadcast_id, source=merged)
        if updated is None or entry.ended:  # ended meanwhile: the end saves the catalog
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
            then, last_bytes, last_frames = entry.last_sample
            elapsed = max(now - then, 1e-3)
            total = entry.video_bytes + entry.audio_bytes
            kbps = (total - last_bytes) * 8 / 1000 / elapsed
            fps = (entry.video_frames - last_frames) / elapsed
            entry.last_sample = (now, total, entry.video_frames)
            dropped = getattr(entry.media, "dropped", 0)
            stats: dict[str, float | str] = {
                "bitrate_kbps": round(kbps, 1), "fps": round(fps, 2),
                "video_codec": entry.video_codec or "", "audio_codec": entry.audio_codec or "",
                "encoder": (entry.source.encoder if entry.source else None) or "",
                "dropped": float(dropped) if isinstance(dropped, int | float) else 0.0,
                "publishing": 1.0 if entry.publication is not None else 0.0,
            }
            entry.stats = stats
            self._metrics.bitrate.labels(entry.channel).set(kbps)
            self._metrics.fps.labels(entry.channel).set(fps)
            # The transcoder writes its own keys (lag, drops, health warnings) into the
            # same record: keep them rather than blank them every second.
            merged = await self.live.get_stats(entry.broadcast_id)
            merged.update(stats)
            await self.live.put_stats(entry.broadcast_id, merged)
            if not await self.live.refresh_claim(entry.channel, entry.owner, self.claim_ttl_s):
                await self._reclaim(entry)
            await self._keep_registered(entry)

    async def _reclaim(self, entry: _Live) -> None:
        """The claim is gone from the live state (expired while it was unreachable, or
        it restarted empty): claim the channel again, unless someone else has it now."""
        holder = await self.live.claim_channel(entry.channel, entry.owner, self.claim_ttl_s)
        fields = {"broadcast_id": entry.broadcast_id, "channel": entry.channel}
        if holder is None:
            logger.warning("channel claim was missing from the live state; claimed again",
                           extra=fields)
        else:
            logger.warning("channel claim lost", extra={**fields, "holder": holder})

    async def _keep_registered(self, entry: _Live) -> None:
        """Put the broadcast's record back if the live state lost it (origins answer
        "not live" without it while the publisher streams on)."""
        current = await self.live.get_broadcast(entry.broadcast_id)
        if current is not None:
            entry.record = current
            return
        record = entry.record or await self._catalog_call(self.catalog.get_broadcast,
                                                         entry.broadcast_id)
        async with self._lock:  # never resurrect a broadcast that is ending right now
            if entry.ended or record is None or record.state is not BroadcastState.LIVE:
                return
            if await self.live.get_broadcast(entry.broadcast_id) is not None:
                return
            await self.live.put_broadcast(record)
        logger.warning("broadcast record was missing from the live state; put back",
                       extra={"broadcast_id": entry.broadcast_id, "channel": entry.channel})

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            try:
                await self.publish_stats()
            except Exception:
                logger.exception("publishing ingest stats failed")
