"""One tick at a time, fleet-wide, and the memory one tick leaves for the next.

Two ticks may start together (an EventBridge retry, ``castway scheduler run`` on two
hosts, a Celery beat catching up): the lock makes the later one a no-op. The Redis lock
is ``SET key token NX PX ttl`` and released only by its holder (compare-and-delete in
Lua), so a tick that outlives its TTL cannot release its successor's lock.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import TYPE_CHECKING, Protocol

from castway.cancellation import cancellation_kept
from castway.serde import from_jsonable, to_jsonable
from scheduler.decide import FleetMemory

if TYPE_CHECKING:
    from castway.redis_client import RedisPolicy

LOCK_KEY = "castway:scheduler:lock"
MEMORY_KEY = "castway:scheduler:memory"

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class Coordinator(Protocol):
    async def acquire(self, ttl_s: float) -> bool:
        """Take the tick lock without waiting; False if another tick holds it."""

    async def release(self) -> None: ...
    async def load_memory(self) -> FleetMemory: ...
    async def save_memory(self, memory: FleetMemory) -> None: ...
    async def close(self) -> None: ...


class LocalCoordinator:
    """One process (``castway serve``, tests): an asyncio lock and memory in the object."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._memory = FleetMemory()

    async def acquire(self, ttl_s: float) -> bool:
        if self._lock.locked():
            return False
        await self._lock.acquire()
        return True

    async def release(self) -> None:
        if self._lock.locked():
            self._lock.release()

    async def load_memory(self) -> FleetMemory:
        return self._memory

    async def save_memory(self, memory: FleetMemory) -> None:
        self._memory = memory

    async def close(self) -> None:
        return None


class RedisCoordinator:
    """Fleet-wide: the lock and the memory live in Redis (the Lambda is stateless)."""

    def __init__(self, url: str, *, prefix: str = "",
                 policy: RedisPolicy | None = None) -> None:
        from castway.redis_client import DEFAULT_POLICY, async_client

        # The client policy's timeouts: a frozen Redis fails the tick within
        # ``policy.failure_bound_s`` (the next tick tries again) instead of holding it.
        self._redis = async_client(url, policy or DEFAULT_POLICY)
        self._lock_key = prefix + LOCK_KEY
        self._memory_key = prefix + MEMORY_KEY
        self._token: str | None = None
        # The token of an acquire that ended without an answer (timed out, cancelled):
        # Redis may have run its SET all the same (a frozen server wakes and works
        # through what it was sent).
        self._unanswered: str | None = None

    async def acquire(self, ttl_s: float) -> bool:
        if self._unanswered is not None:
            # Else our own lost SET holds off every tick until its TTL (2 minutes).
            async with cancellation_kept():
                await self._redis.eval(_RELEASE, 1, self._lock_key, self._unanswered)  # type: ignore[no-untyped-call]
            self._unanswered = None
        token = secrets.token_hex(16)
        try:
            async with cancellation_kept():
                ok = await self._redis.set(self._lock_key, token, nx=True,
                                           px=int(ttl_s * 1000))
        except BaseException:
            self._unanswered = token
            raise
        if ok:
            self._token = token
        return bool(ok)

    async def release(self) -> None:
        if self._token is not None:
            async with cancellation_kept():
                await self._redis.eval(_RELEASE, 1, self._lock_key, self._token)  # type: ignore[no-untyped-call]
            self._token = None

    async def load_memory(self) -> FleetMemory:
        async with cancellation_kept():
            raw = await self._redis.get(self._memory_key)
        if raw is None:
            return FleetMemory()
        try:
            memory: FleetMemory = from_jsonable(FleetMemory, json.loads(raw))
        except (ValueError, TypeError, KeyError):
            return FleetMemory()  # unreadable: start afresh; drains are re-read from nodes
        return memory

    async def save_memory(self, memory: FleetMemory) -> None:
        async with cancellation_kept():
            await self._redis.set(self._memory_key, json.dumps(to_jsonable(memory)))

    async def close(self) -> None:
        await self._redis.aclose()  # type: ignore[attr-defined]
