"""A broadcast's restream sink (:class:`RestreamMedia`, a
:class:`~castway.media.BroadcastMedia`) and its factory (:class:`RestreamFactory`, a
:class:`~castway.media.MediaPipelineFactory`): the wiring puts it beside the transcoder
(:class:`castway.media.TeeFactory`), so it gets the same source packets, and nothing it
does reaches the broadcast.

Every ``STATS_INTERVAL_S`` each target's state, bitrate, drops and last error go to
``/metrics`` and into the live broadcast's stats (``restream.<target id>.<name>``), where
the API reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from castway.catalog.base import Catalog
from castway.events.restreams import RESTREAMS_TOPIC, RestreamFailed
from castway.live.base import EventBus, LiveBroadcasts
from castway.media import BroadcastMedia, MediaPacket
from castway.model import Broadcast
from castway.restream.sealing import KeySealer, SealError
from castway.restream.targets import InvalidTarget, TargetState, parse_target
from castway.settings import Settings
from ingest.restream.link import Backoff, TargetLink

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 2.0
#: A packet whose timestamp goes back (the publisher reconnected and restarted its
#: clock) is moved to follow the last one by this much.
DISCONTINUITY_STEP_MS = 33
STATS_PREFIX = "restream."


class _Live(EventBus, LiveBroadcasts, Protocol):
    """What restreaming needs of the live state."""


class RestreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["channel", "target"]
        self.state = Gauge("castway_restream_state", "Restream target state (1 for the "
                           "state it is in).", [*labels, "state"], registry=registry)
        self.bitrate = Gauge("castway_restream_bitrate_kbps", "Media bitrate sent to a "
                             "restream target.", labels, registry=registry)
        self.bytes = Counter("castway_restream_sent_bytes", "Media bytes sent to restream "
                             "targets.", labels, registry=registry)
        self.dropped = Counter("castway_restream_dropped_packets", "Packets a restream "
                               "target lost by falling behind (whole GOPs).", labels,
                               registry=registry)
        self.failures = Counter("castway_restream_failures", "Failed connections to "
                                "restream targets.", labels, registry=registry)


class RestreamMedia:
    """One live broadcast's restream targets."""

    def __init__(self, broadcast: Broadcast, links: Sequence[TargetLink], live: _Live,
                 metrics: RestreamMetrics, *,
                 stats_interval_s: float = STATS_INTERVAL_S) -> None:
        self.broadcast = broadcast
        self.links = list(links)
        self.live = live
        self.metrics = metrics
        self.stats_interval_s = stats_interval_s
        self._offset_ms = 0
        self._last_dts: int | None = None
        self._after_discontinuity = False
        self._sampled: dict[str, tuple[float, int, int, int]] = {}
        self._stats_task: asyncio.Task[None] | None = None

    @property
    def dropped(self) -> int:
        """Packets its targets' queues dropped (each target's are in its own stats)."""
        return sum(link.queue.dropped_packets for link in self.links)

    def start(self) -> None:
        for link in self.links:
            link.start()
        if self.links:
            self._stats_task = asyncio.create_task(
                self._stats_loop(), name=f"restream-stats-{self.broadcast.id}")

    # --- BroadcastMedia ----------------------------------------------------------------
    async def feed(self, packet: MediaPacket) -> None:
        if not self.links or packet.track != 0:
            return  # a restream target takes one rendition: the broadcast's own track
        if self._after_discontinuity and self._last_dts is not None:
            # Keep each target's timeline going forward across a publisher's reconnect.
            self._offset_ms = self._last_dts + DISCONTINUITY_STEP_MS - packet.dts_ms
            self._after_discontinuity = False
        if self._offset_ms:
            packet = MediaPacket(packet.kind, packet.codec, packet.is_keyframe,
                                 packet.is_config, packet.dts_ms + self._offset_ms,
                                 packet.pts_ms + self._offset_ms, packet.payload)  # track 0
        if not packet.is_config:
            self._last_dts = packet.dts_ms
        for link in self.links:
            link.push(packet)

    async def discontinuity(self) -> None:
        self._after_discontinuity = True

    async def finish(self, *, failed: bool = False) -> None:
        await self._stop()

    async def hand_over(self) -> None:
        # The next node's sink publishes to the targets from there.
        await self._stop()

    async def _stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        await asyncio.gather(*(link.stop() for link in self.links), return_exceptions=True)
        for link in self.links:
            self._forget_metrics(link)
        self.links = []

    # --- stats -------------------------------------------------------------------------
    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            try:
                await self.publish_stats()
            except Exception:
                logger.exception("publishing restream stats failed",
                                 extra={"broadcast_id": self.broadcast.id})

    def sample(self) -> dict[str, float | str]:
        """Every target's figures as stats keys, and into the metrics."""
        now = time.monotonic()
        stats: dict[str, float | str] = {}
        channel = self.broadcast.channel
        for link in self.links:
            at, sent, dropped, failures = self._sampled.get(
                link.target_id, (now, 0, 0, 0))
            elapsed = now - at
            kbps = (link.bytes_sent - sent) * 8 / 1000 / elapsed if elapsed > 0 else 0.0
            self._sampled[link.target_id] = (now, link.bytes_sent, link.queue.dropped_packets,
                                             link.failures)
            labels = (channel, link.target_id)
            for state in TargetState:
                self.metrics.state.labels(*labels, state.value).set(
                    1.0 if link.state is state else 0.0)
            self.metrics.bitrate.labels(*labels).set(kbps)
            self.metrics.bytes.labels(*labels).inc(max(0, link.bytes_sent - sent))
            self.metrics.dropped.labels(*labels).inc(
                max(0, link.queue.dropped_packets - dropped))
            self.metrics.failures.labels(*labels).inc(max(0, link.failures - failures))
            key = f"{STATS_PREFIX}{link.target_id}."
            stats.update({key + "state": link.state.value,
                          key + "bitrate_kbps": round(kbps, 1),
                          key + "dropped": float(link.queue.dropped_packets),
                          key + "connections": float(link.connections),
                          key + "failures": float(link.failures),
                          key + "error": link.error})
        return stats

    async def publish_stats(self) -> None:
        stats = self.sample()
        # The ingest node and the transcoder write their own keys into the same record.
        current = await self.live.get_stats(self.broadcast.id)
        current.update(stats)
        await self.live.put_stats(self.broadcast.id, current)

    def _forget_metrics(self, link: TargetLink) -> None:
        labels = (self.broadcast.channel, link.target_id)
        for metric in (self.metrics.bitrate, self.metrics.bytes, self.metrics.dropped,
                       self.metrics.failures):
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
        for state in TargetState:
            with contextlib.suppress(KeyError):
                self.metrics.state.remove(*labels, state.value)


class RestreamFactory:
    """Starts a :class:`RestreamMedia` for each broadcast that goes live: one link per
    target of its channel. A target it cannot use (a key sealed under another restream
    key, a URL no longer valid) is reported (``restream.failed``) and left out."""

    def __init__(self, settings: Settings, catalog: Catalog, live: _Live,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.live = live
        self.metrics = RestreamMetrics(registry if registry is not None
                                       else CollectorRegistry())
        self.sealer = KeySealer(settings.restream_key) if settings.restream_key else None

    async def _report(self, event: RestreamFailed) -> None:
        await self.live.publish(RESTREAMS_TOPIC, event)

    async def start(self, broadcast: Broadcast, *, handover: bool = False) -> BroadcastMedia:
        targets = await asyncio.to_thread(self.catalog.list_restream_targets,
                                          broadcast.channel)
        s = self.settings
        links: list[TargetLink] = []
        for target in targets:
            try:
                if self.sealer is None:
                    raise SealError("no restream key (CASTWAY_RESTREAM_KEY) on this node")
                address = parse_target(target.url, self.sealer.open(target.sealed_key))
            except (SealError, InvalidTarget) as e:
                logger.error("restream target unusable", extra={
                    "broadcast_id": broadcast.id, "channel": broadcast.channel,
                    "target": target.id, "error": str(e)})
                await self._report(RestreamFailed(broadcast.id, broadcast.channel,
                                                  target.id, target.url, str(e), 1, True))
                continue
            links.append(TargetLink(
                target.id, address, broadcast_id=broadcast.id, channel=broadcast.channel,
                queue_bytes=s.restream_queue_bytes,
                backoff=Backoff(s.restream_backoff_base_s, s.restream_backoff_max_s),
                alert_after=s.restream_alert_after, on_failed=self._report))
        media = RestreamMedia(broadcast, links, self.live, self.metrics)
        media.start()
        if links:
            logger.info("restreaming", extra={"broadcast_id": broadcast.id,
                                              "channel": broadcast.channel,
                                              "targets": len(links)})
        return media
