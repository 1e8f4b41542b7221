"""Live state: which broadcasts are live, node heartbeats, the live segment window, events.

``open_live_state(settings)`` picks the backend: Redis when ``CASTWAY_REDIS_URL`` is set
(distributed mode), else in-process memory (the embedded default).
"""

from __future__ import annotations

from castway.live.base import (
    LiveState,
    LiveStateError,
    RenditionWindow,
    Subscription,
    SubscriptionClosed,
)
from castway.settings import Settings

__all__ = [
    "LiveState",
    "LiveStateError",
    "RenditionWindow",
    "Subscription",
    "SubscriptionClosed",
    "open_live_state",
]


def open_live_state(settings: Settings) -> LiveState:
    """The live state the settings ask for. Opening connects nothing: the Redis backend
    connects on first use, so this is safe to call outside an event loop."""
    if settings.redis_url:
        from castway.live.redis import RedisLiveState

        return RedisLiveState(settings.redis_url)
    from castway.live.memory import MemoryLiveState

    return MemoryLiveState()
