"""Where chat events meet: in-process (embedded default) or Redis shards (distributed).

A bus assigns message ids (ordered per channel), keeps the recent history and the bans,
and delivers every event of a subscribed channel to ``on_frame(channel, frame)`` in id
order, exactly once per process. The Redis bus does the id, the ban check, the history
and the PUBLISH in one Lua script, so the order of ids is the order of delivery on every
server. Rooms are spread over the shards by consistent hashing of the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from castway.cancellation import cancellation_kept
from castway.redis_client import DEFAULT_POLICY, Reconnect, RedisPolicy, async_client
from chat.history import HistoryRing
from chat.protocol import ban_frame, delete_frame, message_frame, message_prefix
from chat.sharding import HashRing

logger = logging.getLogger(__name__)

OnFrame = Callable[[str, str], None]
KEEPALIVE_CHANNEL = "chat:keepalive"  # keeps each shard's Pub/Sub connection subscribed
READ_TIMEOUT_S = 1.0
SUBSCRIBE_TIMEOUT_S = 10.0


class BusError(Exception):
    """The bus (Redis) is unavailable."""


class Banned(Exception):
    """The sender is banned from the channel."""


class ChatBus(ABC):
    """Ids, history, bans and fan-out of chat events between servers."""

    @abstractmethod
    async def start(self, on_frame: OnFrame) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Returns once every event of ``channel`` published from now on is delivered."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def publish(self, channel: str, body: str, *, user: str, nick_key: str) -> int:
        """Assign the next id, store and fan out the message; :class:`Banned` if banned."""

    @abstractmethod
    async def history(self, channel: str) -> list[str]:
        """The recent message frames, oldest first."""

    @abstractmethod
    async def delete(self, channel: str, message_id: int) -> bool:
        """Fan out a deletion; True if the message was still in the history."""

    @abstractmethod
    async def ban(self, channel: str, *, user: str | None, nick_key: str | None,
                  nick: str | None) -> None: ...


@dataclass(eq=False)
class _Room:
    history: HistoryRing
    last_id: int = 0
    bans: set[str] = field(default_factory=set)


class MemoryBus(ChatBus):
    """One process: ids from a counter, delivery by a direct call (in publish order)."""

    def __init__(self, history_size: int) -> None:
        self.history_size = history_size
        self._rooms: dict[str, _Room] = {}
        self._subscribed: set[str] = set()
        self._on_frame: OnFrame | None = None

    def _room(self, channel: str) -> _Room:
        room = self._rooms.get(channel)
        if room is None:
            room = self._rooms[channel] = _Room(HistoryRing(self.history_size))
        return room

    async def start(self, on_frame: OnFrame) -> None:
        self._on_frame = on_frame

    async def stop(self) -> None:
        self._on_frame = None
        self._subscribed.clear()

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    def _deliver(self, channel: str, frame: str) -> None:
        if self._on_frame is not None and channel in self._subscribed:
            self._on_frame(channel, frame)

    async def publish(self, channel: str, body: str, *, user: str, nick_key: str) -> int:
        room = self._room(channel)
        if f"u:{user}" in room.bans or f"n:{nick_key}" in room.bans:
            raise Banned(channel)
        room.last_id += 1
        frame = message_frame(room.last_id, body)
        room.history.append(room.last_id, frame)
        self._deliver(channel, frame)
        return room.last_id

    async def history(self, channel: str) -> list[str]:
        return self._room(channel).history.recent()

    async def delete(self, channel: str, message_id: int) -> bool:
        found = self._room(channel).history.delete(message_id)
        self._deliver(channel, delete_frame(channel, message_id))
        return found

    async def ban(self, channel: str, *, user: str | None, nick_key: str | None,
                  nick: str | None) -> None:
        room = self._room(channel)
        if user:
            room.bans.add(f"u:{user}")
        if nick_key:
            room.bans.add(f"n:{nick_key}")
        self._deliver(channel, ban_frame(channel, user, nick))


# KEYS: seq, history, bans. ARGV: pubsub channel, user member, nick member, body, size.
# Ids stay below 1e14, so Lua's "%.14g" writes them as plain integers.
_PUBLISH = """
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 or
   redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- A new (or lost) sequence starts at unix seconds x 1000: ids keep increasing even after
  -- Redis lost its data, so viewers still connected never see the order go backwards.
  redis.call('SET', KEYS[1], tonumber(redis.call('TIME')[1]) * 1000)
end
local id = redis.call('INCR', KEYS[1])
local frame = '{"type":"message","id":' .. id .. ',' .. ARGV[4]
local size = tonumber(ARGV[5])
if size > 0 then
  redis.call('RPUSH', KEYS[2], frame)
  redis.call('LTRIM', KEYS[2], -size, -1)
end
redis.call('PUBLISH', ARGV[1], frame)
return id
"""

# KEYS: history. ARGV: pubsub channel, message prefix, deletion frame.
_DELETE = """
local found = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #ARGV[2]) == ARGV[2] then
    redis.call('LREM', KEYS[1], 1, item)
    found = 1
    break
  end
end
redis.call('PUBLISH', ARGV[1], ARGV[3])
return found
"""

# KEYS: bans. ARGV: pubsub channel, ban frame, members...
_BAN = """
for i = 3, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""


def _keys(channel: str) -> tuple[str, str, str, str]:
    """seq, history, bans, pubsub channel; the hash tag keeps a room on one cluster slot."""
    tag = f"chat:{{{channel}}}"
    return f"{tag}:seq", f"{tag}:history", f"{tag}:bans", f"{tag}:events"


@dataclass(eq=False)
class _Shard:
    url: str
    client: Any  # redis.asyncio.Redis (untyped generics in redis-py)
    pubsub: Any = None
    ready: bool = False  # the keepalive subscription is in place
    reader: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    confirmations: dict[str, list[asyncio.Future[None]]] = field(default_factory=dict)


class RedisBus(ChatBus):
    """Redis shards: commands on a pool, one Pub/Sub connection per shard per process."""

    def __init__(self, urls: list[str], history_size: int, *,
                 policy: RedisPolicy = DEFAULT_POLICY) -> None:
        if not urls:
            raise ValueError("RedisBus needs at least one Redis URL")
        self.ring = HashRing(tuple(urls))
        self.history_size = history_size
        self._policy = policy
        self._shards = {url: _Shard(url, async_client(url, policy, decode_responses=True))
                        for url in self.ring.shards}
        self._on_frame: OnFrame | None = None
        self._channels: dict[str, str] = {}  # redis channel -> chat channel

    def _shard(self, channel: str) -> _Shard:
        return self._shards[self.ring.shard_for(channel)]

    async def start(self, on_frame: OnFrame) -> None:
        """Open each shard's Pub/Sub connection. A shard that is down does not fail the
        start (chat must not keep the origin from starting): its reader keeps retrying,
        and joins of its rooms get :class:`BusError` until it is back."""
        self._on_frame = on_frame
        for shard in self._shards.values():
            shard.pubsub = shard.client.pubsub()
            try:
                await self._ensure_subscribed(shard)
            except (RedisError, OSError) as exc:
                logger.warning("chat Redis shard unavailable at start; retrying",
                               extra={"shard": shard.url, "error": repr(exc)})
            shard.reader = asyncio.create_task(self._read(shard),
                                               name=f"chat-pubsub-{shard.url}")

    async def _ensure_subscribed(self, shard: _Shard) -> None:
        # redis-py reads a Pub/Sub connection only once something is subscribed.
        async with shard.lock:
            if not shard.ready:
                async with cancellation_kept():
                    await shard.pubsub.subscribe(KEEPALIVE_CHANNEL)
                shard.ready = True

    async def stop(self) -> None:
        for shard in self._shards.values():
            if shard.reader is not None:
                shard.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shard.reader
                shard.reader = None
            if shard.pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await shard.pubsub.aclose()
                shard.pubsub = None
            for futures in shard.confirmations.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(BusError("the chat bus stopped"))
            shard.confirmations.clear()
            shard.ready = False
            with contextlib.suppress(RedisError, OSError):
                await shard.client.aclose()
        self._on_frame = None

    async def _read(self, shard: _Shard) -> None:
        """The shard's only Pub/Sub reader; redis-py resubscribes after a reconnect, this
        loop waits out the client policy's reconnect backoff between failed reads."""
        backoff = Reconnect(self._policy)
        while True:
            try:
                await self._ensure_subscribed(shard)
                async with cancellation_kept():
                    message = await shard.pubsub.get_message(timeout=READ_TIMEOUT_S)
                backoff.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reader must outlive any one failure
                delay = backoff.next_delay()
                logger.warning("chat pubsub read failed", extra={
                    "shard": shard.url, "error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                continue
            if message is None:
                continue
            kind = message.get("type")
            redis_channel = message.get("channel")
            if kind == "subscribe":
                for future in shard.confirmations.pop(redis_channel, []):
                    if not future.done():
                        future.set_result(None)
            elif kind == "message" and self._on_frame is not None:
                channel = self._channels.get(redis_channel)
                if channel is not None and isinstance(message["data"], str):
                    self._on_frame(channel, message["data"])

    async def subscribe(self, channel: str) -> None:
        shard = self._shard(channel)
        redis_channel = _keys(channel)[3]
        self._channels[redis_channel] = channel
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        shard.confirmations.setdefault(redis_channel, []).append(future)
        try:
            await self._ensure_subscribed(shard)
            async with shard.lock, cancellation_kept():
                await shard.pubsub.subscribe(redis_channel)
        except (RedisError, OSError) as exc:
            shard.confirmations.pop(redis_channel, None)
            raise BusError(f"chat Redis {shard.url} is unavailable: {exc}") from exc
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):  # not wait_for: castway.cancellation
                await future
        except TimeoutError:
            raise BusError(f"chat Redis {shard.url} did not confirm the subscription") from None

    async def unsubscribe(self, channel: str) -> None:
        shard = self._shard(channel)
        redis_channel = _keys(channel)[3]
        async with shard.lock, cancellation_kept():
            with contextlib.suppress(RedisError):
                await shard.pubsub.unsubscribe(redis_channel)
        self._channels.pop(redis_channel, None)

    async def _call(self, channel: str, script: str, keys: list[str], args: list[Any]) -> Any:
        shard = self._shard(channel)
        try:
            async with cancellation_kept():
                return await shard.client.eval(script, len(keys), *keys, *args)
        except RedisError as exc:
            raise BusError(f"chat Redis {shard.url} is unavailable: {exc}") from exc

    async def publish(self, channel: str, body: str, *, user: str, nick_key: str) -> int:
        seq, history, bans, events = _keys(channel)
        result = int(await self._call(channel, _PUBLISH, [seq, history, bans],
                                      [events, f"u:{user}", f"n:{nick_key}", body,
                                       self.history_size]))
        if result < 0:
            raise Banned(channel)
        return result

    async def history(self, channel: str) -> list[str]:
        shard = self._shard(channel)
        try:
            async with cancellation_kept():
                frames: list[str] = await shard.client.lrange(_keys(channel)[1], 0, -1)
        except RedisError as exc:
            raise BusError(f"chat Redis {shard.url} is unavailable: {exc}") from exc
        return frames

    async def delete(self, channel: str, message_id: int) -> bool:
        _, history, _, events = _keys(channel)
        found = await self._call(channel, _DELETE, [history],
                                 [events, message_prefix(message_id),
                                  delete_frame(channel, message_id)])
        return bool(found)

    async def ban(self, channel: str, *, user: str | None, nick_key: str | None,
                  nick: str | None) -> None:
        _, _, bans, events = _keys(channel)
        members = ([f"u:{user}"] if user else []) + ([f"n:{nick_key}"] if nick_key else [])
        await self._call(channel, _BAN, [bans], [events, ban_frame(channel, user, nick),
                                                 *members])


def open_bus(urls: list[str], history_size: int) -> ChatBus:
    """The Redis bus over ``urls``, or the in-process bus when there are none."""
    return RedisBus(urls, history_size) if urls else MemoryBus(history_size)
