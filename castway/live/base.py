"""The live state: ephemeral, shared, fast.

Two implementations honour this one contract (``tests/castway/test_live_state.py`` runs
the same suite against both): :class:`castway.live.memory.MemoryLiveState` (the embedded
default, one process) and :class:`castway.live.redis.RedisLiveState` (distributed mode).

What lives here: which broadcast is live on which channel (and which connection owns the
channel), node heartbeats with a TTL, per-broadcast stats, the live segment window of
each rendition with the bytes of its recent segments and parts, the append-only segment
log of each rendition (for time-shift and instant VOD), and typed events (pub/sub,
:mod:`castway.events`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from castway.events.topic import Topic
from castway.model import Broadcast, Node, Part, Segment

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class LiveStateError(Exception):
    """The live state is unavailable or refused the operation (retry later)."""


class SubscriptionClosed(LiveStateError):
    """``get()`` on a subscription that was closed (by its owner or by ``LiveState.close``)."""


@dataclass(frozen=True, slots=True)
class RenditionWindow:
    """The live edge of one rendition, replaced whole on every part/segment.

    ``segments`` are the complete segments of the sliding window (oldest first);
    ``parts`` are the parts of the segment in progress (msn == ``next_msn``);
    ``preload_hint`` is the key of the next part not yet complete (EXT-X-PRELOAD-HINT).
    """

    segments: tuple[Segment, ...]
    next_msn: int
    parts: tuple[Part, ...] = ()
    preload_hint: str | None = None
    target_duration_s: float = 2.0
    part_target_s: float = 0.5
    init_key: str | None = None
    discontinuity_seq: int = 0  # EXT-X-DISCONTINUITY-SEQUENCE of segments[0]
    ended: bool = False  # EXT-X-ENDLIST
    # Ended while the broadcast goes on: overload stopped this rendition
    # (transcoder.overload); players on it must move to another variant.
    stopped: bool = False


def playlist_segments(segments: Sequence[Segment]) -> tuple[tuple[Segment, ...], int]:
    """``segments`` (oldest first) as a playlist that starts with the first of them, and
    that playlist's EXT-X-DISCONTINUITY-SEQUENCE.

    A segment's ``discontinuity_seq`` already counts its own discontinuity, so the playlist
    takes the first segment's; a discontinuity flag on that first segment would make a
    client count the same break a second time, so it is dropped. The archived VOD and the
    origin's time-shift (DVR) playlist both cut the segment log with this.
    """
    if not segments:
        return (), 0
    first = segments[0]
    if not first.discontinuity:
        return tuple(segments), first.discontinuity_seq
    return (replace(first, discontinuity=False), *segments[1:]), first.discontinuity_seq


def updated_broadcast(broadcast: Broadcast, changes: dict[str, Any]) -> Broadcast:
    """``broadcast`` with ``changes`` (for ``LiveState.update_broadcast`` implementations):
    :class:`TypeError` for an unknown field or a change of ``id`` or ``channel``."""
    for name in ("id", "channel"):
        if name in changes and changes[name] != getattr(broadcast, name):
            raise TypeError(f"update_broadcast cannot change a broadcast's {name}")
    return replace(broadcast, **changes)


class Subscription(Protocol[T_co]):
    """A subscription to one topic; bounded (drops the oldest messages when full, counted
    in ``dropped``). Close it, or use it as an async context manager."""

    dropped: int

    async def get(self) -> T_co:
        """The next message, waiting for it; raises :class:`SubscriptionClosed` once
        closed (``async for`` simply ends)."""

    def __aiter__(self) -> AsyncIterator[T_co]: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> Subscription[T_co]: ...
    async def __aexit__(self, *exc: object) -> None: ...


class ChannelClaims(Protocol):
    """Channel ownership: one publisher per channel, fleet-wide."""

    async def claim_channel(self, channel: str, owner: str, ttl_s: float) -> str | None:
        """Atomically make ``owner`` the channel's publisher if it has none (or is owner).

        Returns None on success, else the current owner. The claim expires after
        ``ttl_s`` unless refreshed, so a dead node's claim does not block forever.
        """

    async def refresh_claim(self, channel: str, owner: str, ttl_s: float) -> bool:
        """Extend a claim; False if ``owner`` no longer holds it."""

    async def release_claim(self, channel: str, owner: str) -> None:
        """Drop the claim if ``owner`` still holds it."""

    async def transfer_claim(self, channel: str, owner: str, new_owner: str,
                             ttl_s: float) -> bool:
        """Atomically hand ``owner``'s claim to ``new_owner`` (for ``ttl_s``); False, and
        nothing changed, if ``owner`` no longer holds it. No third publisher can slip in
        between, as it could between a release and a claim (a cross-node handover)."""



#: How far back :meth:`LiveBroadcasts.publishes_since` can count.
PUBLISH_LOG_S = 3600.0


class LiveBroadcasts(Protocol):
    """The records and stats of the broadcasts that are live (or in their grace window)."""

    async def put_broadcast(self, broadcast: Broadcast) -> None: ...
    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None: ...
    async def update_broadcast(self, broadcast_id: str, **changes: Any) -> Broadcast | None:
        """Atomically replace fields of the stored broadcast (``dataclasses.replace``
        semantics) and return the result; None (nothing written) when it is not stored.

        Concurrent updates of different fields never lose each other, unlike
        ``get_broadcast`` + ``put_broadcast``. ``id`` and ``channel`` cannot change;
        an unknown field raises :class:`TypeError`.
        """

    async def live_broadcast(self, channel: str) -> Broadcast | None:
        """The channel's current broadcast (state live), if any."""

    async def list_broadcasts(self) -> list[Broadcast]: ...
    async def remove_broadcast(self, broadcast_id: str) -> None:
        """Forget a broadcast and its window and media (not its segment log)."""

    async def publishes_since(self, since: datetime) -> int:
        """Broadcasts that started at or after ``since`` (within :data:`PUBLISH_LOG_S`),
        ended and removed ones too: ``put_broadcast`` logs each id once with its start.
        The scheduler's publish rate; counting the listed broadcasts missed the short
        ones the archiver had already removed."""

    async def put_stats(self, broadcast_id: str, stats: dict[str, float | str]) -> None: ...
    async def get_stats(self, broadcast_id: str) -> dict[str, float | str]: ...



class NodeRegistry(Protocol):
    """Node heartbeats, and the scheduler's orders to nodes."""

    async def heartbeat(self, node: Node, ttl_s: float) -> None:
        """Record a node's state; it disappears from ``list_nodes`` after ``ttl_s``."""

    async def list_nodes(self) -> list[Node]: ...
    async def set_node_command(self, node_id: str, command: str | None) -> None:
        """The scheduler's order to a node ("drain", "stop"), read at its heartbeat."""

    async def get_node_command(self, node_id: str) -> str | None: ...



class LiveMedia(Protocol):
    """The live edge of every rendition: recent media bytes, windows, segment logs."""

    async def put_media(self, key: str, data: bytes, ttl_s: float) -> None:
        """Bytes of a segment, part or init segment, kept ``ttl_s``."""

    async def get_media(self, key: str) -> bytes | None: ...
    async def put_window(self, broadcast_id: str, rendition: str,
                         window: RenditionWindow) -> None: ...
    async def get_window(self, broadcast_id: str, rendition: str) -> RenditionWindow | None: ...

    async def append_segment_log(self, broadcast_id: str, rendition: str,
                                 segment: Segment) -> None:
        """Append to the rendition's full segment list (time-shift, instant VOD)."""

    async def segment_log(self, broadcast_id: str, rendition: str,
                          start: int = 0) -> list[Segment]:
        """Segments from index ``start`` of the log, oldest first."""

    async def drop_segment_log(self, broadcast_id: str) -> None: ...



class EventBus(Protocol):
    """Typed publish/subscribe between processes (the topics: castway.events)."""

    async def publish(self, topic: Topic[T], message: T) -> int:
        """Send ``message`` to every subscriber of ``topic``, in every process; returns
        how many got it: subscriptions (in-process) or subscribed processes (Redis)."""

    async def subscribe(self, topic: Topic[T]) -> Subscription[T]:
        """Subscribe to ``topic``. Registered when this returns: every message published
        afterwards is delivered, so "subscribe, check state, then wait" has no race."""


class LiveState(ChannelClaims, LiveBroadcasts, NodeRegistry, LiveMedia, EventBus, Protocol):
    """All of the live state, as one back end (memory or Redis) implements it. A part of
    castway that needs only one side of it asks for that narrow protocol instead."""

    async def ping(self) -> bool:
        """True when the backing service answers (readiness)."""

    async def close(self) -> None: ...
