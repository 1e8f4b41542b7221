"""The bounded message queue behind every :class:`~castway.live.base.Subscription`.

Both live-state implementations hand messages to subscriptions synchronously
(``deliver``) from the one place that fans them out (``publish`` in memory, the pub/sub
reader task in Redis), decoded once by the topic's codec: messages are frozen, so every
subscriber may hold the same one. A slow subscriber never holds up the others: its queue
drops the oldest message and counts it in ``dropped``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from castway.events.topic import Topic
from castway.live.base import SubscriptionClosed

T = TypeVar("T")

logger = logging.getLogger(__name__)

DEFAULT_SUBSCRIPTION_MAXSIZE = 256


class QueueSubscription(Generic[T]):
    """One subscriber's bounded queue of messages on one topic."""

    __slots__ = ("topic", "maxsize", "dropped", "_events", "_ready", "_closed", "_on_close")

    def __init__(self, topic: Topic[T], maxsize: int = DEFAULT_SUBSCRIPTION_MAXSIZE,
                 on_close: Callable[[QueueSubscription[Any]], Awaitable[None]] | None = None
                 ) -> None:
        if maxsize < 1:
            raise ValueError(f"subscription maxsize must be >= 1, got {maxsize}")
        self.topic = topic
        self.maxsize = maxsize
        self.dropped = 0
        self._events: deque[T] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    def deliver(self, event: T) -> None:
        """Queue a message; when full, drop the oldest queued one (counted)."""
        if self._closed:
            return
        if len(self._events) >= self.maxsize:
            self._events.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("subscription queue full, dropping oldest events",
                               extra={"topic": self.topic.name, "dropped": self.dropped})
        self._events.append(event)
        self._ready.set()

    async def get(self) -> T:
        while not self._events:
            if self._closed:
                raise SubscriptionClosed(f"subscription to {self.topic.name!r} is closed")
            self._ready.clear()
            await self._ready.wait()
        if self._closed:
            raise SubscriptionClosed(f"subscription to {self.topic.name!r} is closed")
        return self._events.popleft()

    def __aiter__(self) -> QueueSubscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    def close_nowait(self) -> None:
        """Close without telling the owner (the owner itself is closing). Wakes waiters."""
        if self._closed:
            return
        self._closed = True
        self._events.clear()
        self._ready.set()

    async def close(self) -> None:
        if self._closed:
            return
        self.close_nowait()
        if self._on_close is not None:
            await self._on_close(self)

    async def __aenter__(self) -> QueueSubscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
