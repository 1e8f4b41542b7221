"""In-process live state: the embedded default (one process, one event loop).

Everything is plain dicts guarded by nothing but the event loop (no threads, no awaits
inside an operation, so every method is atomic). TTLs run on an injectable monotonic
clock and are checked lazily, so tests drive expiry by moving the clock.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from castway.events.topic import Topic
from castway.layout import broadcast_of
from castway.live.base import (
    PUBLISH_LOG_S,
    LiveStateError,
    RenditionWindow,
    updated_broadcast,
)
from castway.live.subscription import DEFAULT_SUBSCRIPTION_MAXSIZE, QueueSubscription
from castway.model import Broadcast, BroadcastState, Node, Segment

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MEDIA_BUDGET_BYTES = 512 * 1024 * 1024
# Expired media is swept at most this often (clock seconds) besides under budget pressure.
MEDIA_SWEEP_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the memory live state holds now (``castway_live_*`` gauges): the numbers
    that tell a full bounded cache from a leak."""

    media_bytes: int  # expired entries included until swept
    media_objects: int
    broadcasts: int  # records, live or ended and not yet forgotten
    windows: int  # (broadcast, rendition) live windows
    segment_log_entries: int  # segments in every rendition's log


@dataclass(slots=True)
class _Media:
    data: bytes
    expires_at: float


class MemoryLiveState:
    """:class:`~castway.live.base.LiveState` in process memory.

    ``media_budget_bytes`` bounds the media bytes held: when a put would exceed it,
    expired entries go first, then the oldest (counted in ``media_evictions``); an
    object larger than the whole budget is not stored (counted in ``media_rejected``).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 media_budget_bytes: int = DEFAULT_MEDIA_BUDGET_BYTES,
                 subscription_maxsize: int = DEFAULT_SUBSCRIPTION_MAXSIZE) -> None:
        if media_budget_bytes < 1:
            raise ValueError("media_budget_bytes must be positive")
        self._clock = clock
        self._media_budget = media_budget_bytes
        self._subscription_maxsize = subscription_maxsize
        self._claims: dict[str, tuple[str, float]] = {}
        self._broadcasts: dict[str, Broadcast] = {}
        self._publishes: dict[str, datetime] = {}  # broadcast id -> its start
        self._stats: dict[str, dict[str, float | str]] = {}
        self._nodes: dict[str, tuple[Node, float]] = {}
        self._node_commands: dict[str, str] = {}
        self._media: OrderedDict[str, _Media] = OrderedDict()
        self._media_bytes = 0
        self._last_sweep = clock()
        self._windows: dict[tuple[str, str], RenditionWindow] = {}
        self._segment_logs: dict[tuple[str, str], list[Segment]] = {}
        self._subscriptions: dict[str, set[QueueSubscription[Any]]] = {}
        self._closed = False
        self.media_evictions = 0
        self.media_rejected = 0

    # --- channel ownership -----------------------------------------------------------
    def _claim_owner(self, channel: str) -> str | None:
        claim = self._claims.get(channel)
        if claim is None:
            return None
        if claim[1] <= self._clock():
            del self._claims[channel]
            return None
        return claim[0]

    async def claim_channel(self, channel: str, owner: str, ttl_s: float) -> str | None:
        self._check_open()
        current = self._claim_owner(channel)
        if current is not None and current != owner:
            return current
        self._claims[channel] = (owner, self._clock() + ttl_s)
        return None

    async def refresh_claim(self, channel: str, owner: str, ttl_s: float) -> bool:
        self._check_open()
        if self._claim_owner(channel) != owner:
            return False
        self._claims[channel] = (owner, self._clock() + ttl_s)
        return True

    async def release_claim(self, channel: str, owner: str) -> None:
        self._check_open()
        if self._claim_owner(channel) == owner:
            del self._claims[channel]

    async def transfer_claim(self, channel: str, owner: str, new_owner: str,
                             ttl_s: float) -> bool:
        self._check_open()
        if self._claim_owner(channel) != owner:
            return False
        self._claims[channel] = (new_owner, self._clock() + ttl_s)
        return True

    # --- live broadcasts -------------------------------------------------------------
    async def put_broadcast(self, broadcast: Broadcast) -> None:
        self._check_open()
        self._broadcasts[broadcast.id] = broadcast
        if broadcast.id not in self._publishes:
            horizon = broadcast.started_at - timedelta(seconds=PUBLISH_LOG_S)
            self._publishes = {b: at for b, at in self._publishes.items() if at >= horizon}
            self._publishes[broadcast.id] = broadcast.started_at

    async def publishes_since(self, since: datetime) -> int:
        self._check_open()
        return sum(1 for at in self._publishes.values() if at >= since)

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        self._check_open()
        return self._broadcasts.get(broadcast_id)

    async def update_broadcast(self, broadcast_id: str, **changes: Any) -> Broadcast | None:
        self._check_open()
        current = self._broadcasts.get(broadcast_id)
        if current is None:
            return None
        # No await between the read and the write: atomic within the event loop.
        updated = updated_broadcast(current, changes)
        self._broadcasts[broadcast_id] = updated
        return updated

    async def live_broadcast(self, channel: str) -> Broadcast | None:
        self._check_open()
        live = [b for b in self._broadcasts.values()
                if b.channel == channel and b.state is BroadcastState.LIVE]
        return max(live, key=lambda b: (b.started_at, b.id)) if live else None

    async def list_broadcasts(self) -> list[Broadcast]:
        self._check_open()
        return sorted(self._broadcasts.values(), key=lambda b: (b.started_at, b.id))

    async def remove_broadcast(self, broadcast_id: str) -> None:
        self._check_open()
        self._broadcasts.pop(broadcast_id, None)
        self._stats.pop(broadcast_id, None)
        for window_key in [k for k in self._windows if k[0] == broadcast_id]:
            del self._windows[window_key]
        # Live-window media keys follow the storage key layout.
        for key in [k for k in self._media if broadcast_of(k) == broadcast_id]:
            self._drop_media(key)

    async def put_stats(self, broadcast_id: str, stats: dict[str, float | str]) -> None:
        self._check_open()
        self._stats[broadcast_id] = dict(stats)

    async def get_stats(self, broadcast_id: str) -> dict[str, float | str]:
        self._check_open()
        return dict(self._stats.get(broadcast_id, {}))

    # --- nodes -----------------------------------------------------------------------
    async def heartbeat(self, node: Node, ttl_s: float) -> None:
        self._check_open()
        self._nodes[node.id] = (node, self._clock() + ttl_s)

    async def list_nodes(self) -> list[Node]:
        self._check_open()
        now = self._clock()
        for node_id in [i for i, (_, expires_at) in self._nodes.items() if expires_at <= now]:
            del self._nodes[node_id]
        return sorted((node for node, _ in self._nodes.values()), key=lambda n: n.id)

    async def set_node_command(self, node_id: str, command: str | None) -> None:
        self._check_open()
        if command is None:
            self._node_commands.pop(node_id, None)
        else:
            self._node_commands[node_id] = command

    async def get_node_command(self, node_id: str) -> str | None:
        self._check_open()
        return self._node_commands.get(node_id)

    # --- the live segment window -----------------------------------------------------
    def _drop_media(self, key: str) -> None:
        entry = self._media.pop(key, None)
        if entry is not None:
            self._media_bytes -= len(entry.data)

    def _sweep_expired_media(self, now: float) -> None:
        self._last_sweep = now
        for key in [k for k, m in self._media.items() if m.expires_at <= now]:
            self._drop_media(key)

    async def put_media(self, key: str, data: bytes, ttl_s: float) -> None:
        self._check_open()
        now = self._clock()
        self._drop_media(key)
        size = len(data)
        if size > self._media_budget:
            self.media_rejected += 1
            logger.warning("media object larger than the live media budget, not kept",
                           extra={"key": key, "size": size, "budget": self._media_budget})
            return
        if now - self._last_sweep >= MEDIA_SWEEP_INTERVAL_S:
            self._sweep_expired_media(now)
        if self._media_bytes + size > self._media_budget:
            self._sweep_expired_media(now)
        while self._media_bytes + size > self._media_budget:
            oldest = next(iter(self._media))
            self._drop_media(oldest)
            self.media_evictions += 1
        self._media[key] = _Media(bytes(data), now + ttl_s)
        self._media_bytes += size

    async def get_media(self, key: str) -> bytes | None:
        self._check_open()
        entry = self._media.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop_media(key)
            return None
        return entry.data

    @property
    def media_bytes(self) -> int:
        """Bytes of media currently held (expired entries included until swept)."""
        return self._media_bytes

    def holdings(self) -> Holdings:
        # Only len() and an int: safe from the scraping thread of /metrics.
        return Holdings(self._media_bytes, len(self._media), len(self._broadcasts),
                        len(self._windows),
                        sum(len(log) for log in list(self._segment_logs.values())))

    async def put_window(self, broadcast_id: str, rendition: str,
                         window: RenditionWindow) -> None:
        self._check_open()
        self._windows[(broadcast_id, rendition)] = window

    async def get_window(self, broadcast_id: str, rendition: str) -> RenditionWindow | None:
        self._check_open()
        return self._windows.get((broadcast_id, rendition))

    async def append_segment_log(self, broadcast_id: str, rendition: str,
                                 segment: Segment) -> None:
        self._check_open()
        self._segment_logs.setdefault((broadcast_id, rendition), []).append(segment)

    async def segment_log(self, broadcast_id: str, rendition: str,
                          start: int = 0) -> list[Segment]:
        self._check_open()
        if start < 0:
            raise ValueError(f"segment log start must be >= 0, got {start}")
        return self._segment_logs.get((broadcast_id, rendition), [])[start:]

    async def drop_segment_log(self, broadcast_id: str) -> None:
        self._check_open()
        for log_key in [k for k in self._segment_logs if k[0] == broadcast_id]:
            del self._segment_logs[log_key]

    # --- events ----------------------------------------------------------------------
    async def publish(self, topic: Topic[T], message: T) -> int:
        self._check_open()
        # Through the JSON the Redis backend sends: a message that would not survive
        # Redis fails here too (whether or not anyone listens). Decoded once: messages
        # are frozen, every subscriber gets the same one.
        wire = json.dumps(topic.encode(message))
        subscribers = self._subscriptions.get(topic.name)
        if not subscribers:
            return 0
        decoded = topic.decode(json.loads(wire))
        if decoded is None:
            raise ValueError(f"{message!r} does not decode from its own topic's codec")
        for subscription in subscribers:
            subscription.deliver(decoded)
        return len(subscribers)

    async def subscribe(self, topic: Topic[T]) -> QueueSubscription[T]:
        self._check_open()
        subscription = QueueSubscription(topic, self._subscription_maxsize, self._unsubscribe)
        self._subscriptions.setdefault(topic.name, set()).add(subscription)
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription[Any]) -> None:
        subscribers = self._subscriptions.get(subscription.topic.name)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._subscriptions[subscription.topic.name]

    def subscriber_count(self, topic: Topic[Any]) -> int:
        return len(self._subscriptions.get(topic.name, ()))

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.close_nowait()
        self._subscriptions.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise LiveStateError("live state is closed")
