"""Live state in Redis (:class:`RedisLiveState`): the distributed mode, shared by every
ingest node and origin; one pub/sub connection per instance.

Design: docs/architecture.md, "The live state in Redis" (its keys and pub/sub).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError, WatchError

from castway.cancellation import cancellation_kept
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
from castway.redis_client import DEFAULT_POLICY, Reconnect, RedisPolicy, async_client
from castway.serde import from_jsonable, to_jsonable

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PREFIX = "castway:"
SUBSCRIBE_TIMEOUT_S = 10.0
# Longest any one operation may take, retries included, before it fails: below the
# client policy's failure bound, so an origin request gets its 503 sooner.
OPERATION_TIMEOUT_S = 5.0
DELETE_BATCH = 500
# WATCH/MULTI rounds of update_broadcast before giving up (each lost round means another
# writer changed the broadcasts hash in between, so progress is being made).
UPDATE_ATTEMPTS = 100

# Claim, or re-claim by the same owner (extends the TTL). Returns the other owner, if any.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return false
end
return current
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_TRANSFER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
# Media bytes plus its broadcast's index, trimmed of expired entries by server time; the
# index lives as long as its longest-lived member.
_PUT_MEDIA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""


def _ttl_ms(ttl_s: float) -> int:
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl_s}")
    return max(1, round(ttl_s * 1000))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it. Cancel again if it survives: on Python 3.11 a
    cancellation landing as redis-py's internal ``asyncio.wait_for`` completes is lost."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        logger.error("live-state task failed", exc_info=task.exception())


@dataclass
class _Topic:
    """Local subscriptions of one topic and the state of its Redis subscription."""

    codec: Topic[Any]  # decodes what arrives (every subscriber's topic has this name)
    subs: set[QueueSubscription[Any]] = field(default_factory=set)
    confirmed: bool = False  # Redis holds the subscription (as of the last reply)
    inflight: deque[str] = field(default_factory=deque)  # "subscribe"/"unsubscribe" sent
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class RedisLiveState:
    """:class:`~castway.live.base.LiveState` in Redis (redis.asyncio, one connection pool).

    Constructing connects nothing; the first operation does. Every Redis failure surfaces
    as :class:`~castway.live.base.LiveStateError`.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 subscription_maxsize: int = DEFAULT_SUBSCRIPTION_MAXSIZE,
                 subscribe_timeout_s: float = SUBSCRIBE_TIMEOUT_S,
                 health_interval_s: float | None = None,
                 operation_timeout_s: float = OPERATION_TIMEOUT_S,
                 policy: RedisPolicy = DEFAULT_POLICY) -> None:
        self._prefix = prefix
        self._operation_timeout_s = operation_timeout_s
        self._subscription_maxsize = subscription_maxsize
        self._subscribe_timeout_s = subscribe_timeout_s
        # The pub/sub connection is PINGed after this long without traffic; no reply by
        # the next interval means it is dead (a silent partition never raises by itself).
        self._health_interval_s = (policy.health_check_interval_s
                                   if health_interval_s is None else health_interval_s)
        self._policy = policy
        self._redis: aioredis.Redis[bytes] = async_client(url, policy)
        self._claim = self._redis.register_script(_CLAIM)
        self._refresh = self._redis.register_script(_REFRESH)
        self._release = self._redis.register_script(_RELEASE)
        self._transfer = self._redis.register_script(_TRANSFER)
        self._put_media = self._redis.register_script(_PUT_MEDIA)
        self._closed = False
        # pub/sub
        self._topics: dict[str, _Topic] = {}
        self._pubsub_conn: Connection | None = None
        self._connected = False  # the pub/sub connection is up and may be written
        self._outbox: deque[tuple[str, str | None]] = deque()
        self._outbox_ready = asyncio.Event()
        self._ping_outstanding = False
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.reconnects = 0  # of the pub/sub connection, since construction
        self.pubsub_pings = 0  # keepalive PINGs sent on the pub/sub connection

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    @contextlib.asynccontextmanager
    async def _errors(self, operation: str) -> AsyncIterator[None]:
        """Redis failures as LiveStateError, and no operation outlasting
        ``operation_timeout_s``: a frozen server (accepting, never answering) would
        otherwise hold every caller for the socket timeout times the retries, and an
        origin request with them, instead of a 503. A cancellation redis-py drops is
        raised again (``cancellation_kept``)."""
        self._check_open()
        try:
            async with cancellation_kept(), asyncio.timeout(self._operation_timeout_s):
                yield
        except TimeoutError as exc:
            raise LiveStateError(f"redis {operation}: no answer within "
                                 f"{self._operation_timeout_s}s") from exc
        except (RedisError, OSError) as exc:
            raise LiveStateError(f"redis {operation} failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise LiveStateError("live state is closed")

    @staticmethod
    def _dump(value: Any) -> str:
        return json.dumps(to_jsonable(value), separators=(",", ":"))

    @staticmethod
    def _load(cls: type[T], raw: bytes | str, what: str) -> T:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            return from_jsonable(cls, data)
        except (ValueError, TypeError, KeyError) as exc:
            raise LiveStateError(f"unreadable {what} in redis: {exc}") from exc

    # --- channel ownership -----------------------------------------------------------
    async def claim_channel(self, channel: str, owner: str, ttl_s: float) -> str | None:
        async with self._errors("claim_channel"):
            current = await self._claim(keys=[self._key("claim", channel)],
                                        args=[owner, _ttl_ms(ttl_s)])
        return None if current is None else _text(current)

    async def refresh_claim(self, channel: str, owner: str, ttl_s: float) -> bool:
        async with self._errors("refresh_claim"):
            done = await self._refresh(keys=[self._key("claim", channel)],
                                       args=[owner, _ttl_ms(ttl_s)])
        return bool(done)

    async def release_claim(self, channel: str, owner: str) -> None:
        async with self._errors("release_claim"):
            await self._release(keys=[self._key("claim", channel)], args=[owner])

    async def transfer_claim(self, channel: str, owner: str, new_owner: str,
                             ttl_s: float) -> bool:
        async with self._errors("transfer_claim"):
            done = await self._transfer(keys=[self._key("claim", channel)],
                                        args=[owner, new_owner, _ttl_ms(ttl_s)])
        return bool(done)

    # --- live broadcasts -------------------------------------------------------------
    async def put_broadcast(self, broadcast: Broadcast) -> None:
        async with self._errors("put_broadcast"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._key("broadcasts"), broadcast.id, self._dump(broadcast))
                pipe.sadd(self._key("channel-broadcasts", broadcast.channel), broadcast.id)
                # the publish log (publishes_since): a broadcast counts once, at its start
                started = broadcast.started_at.timestamp()
                pipe.zadd(self._key("publishes"), {broadcast.id: started}, nx=True)
                pipe.zremrangebyscore(self._key("publishes"), "-inf",
                                      f"({started - PUBLISH_LOG_S}")
                await pipe.execute()

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        async with self._errors("get_broadcast"):
            raw = await self._redis.hget(self._key("broadcasts"), broadcast_id)
        return None if raw is None else self._load(Broadcast, raw, "broadcast")

    async def update_broadcast(self, broadcast_id: str, **changes: Any) -> Broadcast | None:
        # Optimistic: WATCH the broadcasts hash, read, write in MULTI; a concurrent write
        # to the hash aborts the transaction (WatchError) and the update is redone on
        # what that writer stored.
        key = self._key("broadcasts")
        async with self._errors("update_broadcast"):
            async with self._redis.pipeline(transaction=True) as pipe:
                for _ in range(UPDATE_ATTEMPTS):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hget(key, broadcast_id)
                        if raw is None:
                            await pipe.unwatch()
                            return None
                        updated = updated_broadcast(self._load(Broadcast, raw, "broadcast"),
                                                    changes)
                        pipe.multi()
                        pipe.hset(key, broadcast_id, self._dump(updated))
                        await pipe.execute()
                        return updated
                    except WatchError:
                        continue
                    finally:
                        await pipe.reset()
        raise LiveStateError(f"update_broadcast {broadcast_id}: still contended after "
                             f"{UPDATE_ATTEMPTS} attempts")

    async def live_broadcast(self, channel: str) -> Broadcast | None:
        index = self._key("channel-broadcasts", channel)
        async with self._errors("live_broadcast"):
            ids = sorted(_text(i) for i in await self._redis.smembers(index))
            if not ids:
                return None
            raws = await self._redis.hmget(self._key("broadcasts"), ids)
            stale = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            if stale:
                await self._redis.srem(index, *stale)
        live = [b for b in (self._load(Broadcast, raw, "broadcast") for raw in raws
                            if raw is not None)
                if b.state is BroadcastState.LIVE and b.channel == channel]
        return max(live, key=lambda b: (b.started_at, b.id)) if live else None

    async def list_broadcasts(self) -> list[Broadcast]:
        async with self._errors("list_broadcasts"):
            raws = await self._redis.hvals(self._key("broadcasts"))
        return sorted((self._load(Broadcast, raw, "broadcast") for raw in raws),
                      key=lambda b: (b.started_at, b.id))

    async def publishes_since(self, since: datetime) -> int:
        async with self._errors("publishes_since"):
            return int(await self._redis.zcount(self._key("publishes"),
                                                since.timestamp(), "+inf"))

    async def remove_broadcast(self, broadcast_id: str) -> None:
        windows_index = self._key("windows", broadcast_id)
        media_index = self._key("media-index", broadcast_id)
        async with self._errors("remove_broadcast"):
            raw = await self._redis.hget(self._key("broadcasts"), broadcast_id)
            renditions = [_text(r) for r in await self._redis.smembers(windows_index)]
            media_keys = [_text(k) for k in await self._redis.zrange(media_index, 0, -1)]
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key("broadcasts"), broadcast_id)
                if raw is not None:
                    channel = self._load(Broadcast, raw, "broadcast").channel
                    pipe.srem(self._key("channel-broadcasts", channel), broadcast_id)
                pipe.delete(self._key("stats", broadcast_id), windows_index, media_index,
                            *(self._key("window", broadcast_id, r) for r in renditions))
                await pipe.execute()
            for i in range(0, len(media_keys), DELETE_BATCH):
                await self._redis.delete(*media_keys[i:i + DELETE_BATCH])

    async def put_stats(self, broadcast_id: str, stats: dict[str, float | str]) -> None:
        async with self._errors("put_stats"):
            await self._redis.set(self._key("stats", broadcast_id), json.dumps(stats))

    async def get_stats(self, broadcast_id: str) -> dict[str, float | str]:
        async with self._errors("get_stats"):
            raw = await self._redis.get(self._key("stats", broadcast_id))
        if raw is None:
            return {}
        try:
            stats = json.loads(raw)
        except ValueError as exc:
            raise LiveStateError(f"unreadable stats in redis: {exc}") from exc
        if not isinstance(stats, dict):
            raise LiveStateError("unreadable stats in redis: not a JSON object")
        return stats

    # --- nodes -----------------------------------------------------------------------
    async def heartbeat(self, node: Node, ttl_s: float) -> None:
        ttl_ms = _ttl_ms(ttl_s)
        async with self._errors("heartbeat"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key("node", node.id), self._dump(node), px=ttl_ms)
                pipe.zadd(self._key("nodes"), {node.id: node.heartbeat_at.timestamp()})
                await pipe.execute()

    async def list_nodes(self) -> list[Node]:
        index = self._key("nodes")
        async with self._errors("list_nodes"):
            ids = [_text(i) for i in await self._redis.zrange(index, 0, -1)]
            if not ids:
                return []
            raws = await self._redis.mget([self._key("node", i) for i in ids])
            # A node whose heartbeat key expired is gone: drop it from the index too.
            stale = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            if stale:
                await self._redis.zrem(index, *stale)
        nodes = [self._load(Node, raw, "node") for raw in raws if raw is not None]
        return sorted(nodes, key=lambda n: n.id)

    async def set_node_command(self, node_id: str, command: str | None) -> None:
        key = self._key("node-command", node_id)
        async with self._errors("set_node_command"):
            if command is None:
                await self._redis.delete(key)
            else:
                await self._redis.set(key, command)

    async def get_node_command(self, node_id: str) -> str | None:
        async with self._errors("get_node_command"):
            raw = await self._redis.get(self._key("node-command", node_id))
        return None if raw is None else _text(raw)

    # --- the live segment window -----------------------------------------------------
    async def put_media(self, key: str, data: bytes, ttl_s: float) -> None:
        ttl_ms = _ttl_ms(ttl_s)
        broadcast_id = broadcast_of(key)  # media keys follow the storage key layout
        async with self._errors("put_media"):
            if broadcast_id is None:
                await self._redis.set(self._key("media", key), data, px=ttl_ms)
            else:
                await self._put_media(
                    keys=[self._key("media", key), self._key("media-index", broadcast_id)],
                    args=[data, ttl_ms])

    async def get_media(self, key: str) -> bytes | None:
        async with self._errors("get_media"):
            raw = await self._redis.get(self._key("media", key))
        return None if raw is None else bytes(raw)

    async def put_window(self, broadcast_id: str, rendition: str,
                         window: RenditionWindow) -> None:
        async with self._errors("put_window"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key("window", broadcast_id, rendition), self._dump(window))
                pipe.sadd(self._key("windows", broadcast_id), rendition)
                await pipe.execute()

    async def get_window(self, broadcast_id: str, rendition: str) -> RenditionWindow | None:
        async with self._errors("get_window"):
            raw = await self._redis.get(self._key("window", broadcast_id, rendition))
        return None if raw is None else self._load(RenditionWindow, raw, "window")

    async def append_segment_log(self, broadcast_id: str, rendition: str,
                                 segment: Segment) -> None:
        async with self._errors("append_segment_log"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self._key("seglog", broadcast_id, rendition), self._dump(segment))
                pipe.sadd(self._key("seglogs", broadcast_id), rendition)
                await pipe.execute()

    async def segment_log(self, broadcast_id: str, rendition: str,
                          start: int = 0) -> list[Segment]:
        if start < 0:
            raise ValueError(f"segment log start must be >= 0, got {start}")
        async with self._errors("segment_log"):
            raws = await self._redis.lrange(self._key("seglog", broadcast_id, rendition),
                                            start, -1)
        return [self._load(Segment, raw, "segment") for raw in raws]

    async def drop_segment_log(self, broadcast_id: str) -> None:
        index = self._key("seglogs", broadcast_id)
        async with self._errors("drop_segment_log"):
            renditions = [_text(r) for r in await self._redis.smembers(index)]
            await self._redis.delete(
                index, *(self._key("seglog", broadcast_id, r) for r in renditions))

    # --- events ----------------------------------------------------------------------
    async def publish(self, topic: Topic[T], message: T) -> int:
        payload = json.dumps(topic.encode(message), separators=(",", ":"))
        async with self._errors("publish"):
            return int(await self._redis.publish(self._prefix + topic.name, payload))

    async def subscribe(self, topic: Topic[T]) -> QueueSubscription[T]:
        self._check_open()
        self._start_pubsub()
        name = topic.name
        subscription = QueueSubscription(topic, self._subscription_maxsize, self._unsubscribe)
        state = self._topics.get(name)
        if state is None:
            state = self._topics[name] = _Topic(topic)
        state.subs.add(subscription)
        self._sync_topic(name, state)
        if state.confirmed and not state.inflight:
            return subscription
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        try:
            async with asyncio.timeout(self._subscribe_timeout_s):
                await waiter
        except BaseException as exc:
            with contextlib.suppress(ValueError):
                state.waiters.remove(waiter)
            await subscription.close()
            if self._closed:
                raise LiveStateError("live state closed while subscribing") from exc
            if isinstance(exc, TimeoutError):
                raise LiveStateError(f"redis did not confirm SUBSCRIBE {name!r} within "
                                     f"{self._subscribe_timeout_s}s") from exc
            raise
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription[Any]) -> None:
        name = subscription.topic.name
        state = self._topics.get(name)
        if state is None:
            return
        state.subs.discard(subscription)
        self._sync_topic(name, state)

    def subscriber_count(self, topic: Topic[Any]) -> int:
        state = self._topics.get(topic.name)
        return len(state.subs) if state else 0

    def _sync_topic(self, topic: str, state: _Topic) -> None:
        """Bring Redis's subscription of ``topic`` towards "subscribed iff local
        subscribers" by queueing the next command; forget an idle, settled topic."""
        wanted = bool(state.subs)
        if state.inflight:
            last_sent_subscribe = state.inflight[-1] == "subscribe"
        else:
            last_sent_subscribe = state.confirmed
        if wanted != last_sent_subscribe and self._connected:
            command = "subscribe" if wanted else "unsubscribe"
            state.inflight.append(command)
            self._outbox.append((command, topic))
            self._outbox_ready.set()
        elif not wanted and not state.inflight and not state.confirmed:
            for waiter in state.waiters:
                if not waiter.done():
                    waiter.cancel()
            del self._topics[topic]

    def _start_pubsub(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name="castway-live-reader")
            self._writer = asyncio.create_task(self._write_loop(), name="castway-live-writer")

    async def _read_loop(self) -> None:
        backoff = Reconnect(self._policy)
        ever_connected = False
        while not self._closed:
            if self._pubsub_conn is None:
                # Our own connection, made by the pool's factory (same URL and options) but
                # never returned to it: it lives in subscribed mode.
                self._pubsub_conn = self._redis.connection_pool.make_connection()
            conn = self._pubsub_conn
            try:
                await conn.connect()
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                logger.warning("redis pub/sub connect failed, retrying",
                               extra={"error": str(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                continue
            if ever_connected:
                self.reconnects += 1
                logger.info("redis pub/sub reconnected, re-subscribing",
                            extra={"topics": sum(1 for t in self._topics.values() if t.subs)})
            ever_connected = True
            backoff.succeeded()
            self._connected = True
            self._ping_outstanding = False
            for topic, state in list(self._topics.items()):
                self._sync_topic(topic, state)
            try:
                await self._read_messages(conn)
            except (RedisError, OSError) as exc:
                if not self._closed:
                    logger.warning("redis pub/sub connection lost, reconnecting",
                                   extra={"error": str(exc)})
            finally:
                self._connection_lost()
                await conn.disconnect(nowait=True)

    def _connection_lost(self) -> None:
        self._connected = False
        self._outbox.clear()
        for topic, state in list(self._topics.items()):
            state.inflight.clear()
            state.confirmed = False
            if not state.subs:
                self._sync_topic(topic, state)

    async def _read_messages(self, conn: Connection) -> None:
        while True:
            # push_request: without it redis-py (5+) routes pub/sub messages to its push
            # handler instead of returning them. types-redis 4.6 predates the argument.
            async with cancellation_kept():
                response = await conn.read_response(  # type: ignore[call-arg]
                    timeout=self._health_interval_s, push_request=True)
            if response is None:
                if self._ping_outstanding:
                    raise ConnectionError("no reply to PING on the pub/sub connection")
                self._ping_outstanding = True
                self.pubsub_pings += 1
                self._outbox.append(("ping", None))
                self._outbox_ready.set()
                continue
            self._ping_outstanding = False
            self._dispatch(response)

    def _dispatch(self, response: Any) -> None:
        if not isinstance(response, list) or len(response) < 2:
            return  # +PONG when subscribed to nothing
        kind = _text(response[0])
        channel = _text(response[1])
        if not channel.startswith(self._prefix):
            return
        topic = channel[len(self._prefix):]
        if kind == "message" and len(response) >= 3:
            self._deliver(topic, response[2])
        elif kind in ("subscribe", "unsubscribe"):
            self._confirm(topic, kind)

    def _deliver(self, topic: str, payload: Any) -> None:
        state = self._topics.get(topic)
        if state is None or not state.subs:
            return
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
        message = state.codec.decode(event) if isinstance(event, dict) else None
        if message is None:  # peer input: another version, or not castway's at all
            logger.warning("ignoring an event that is none of its topic's messages",
                           extra={"topic": topic})
            return
        for subscription in state.subs:
            subscription.deliver(message)

    def _confirm(self, topic: str, kind: str) -> None:
        state = self._topics.get(topic)
        if state is None:
            return
        if state.inflight and state.inflight[0] == kind:
            state.inflight.popleft()
        else:
            logger.warning("unexpected redis pub/sub confirmation",
                           extra={"topic": topic, "kind": kind})
            state.inflight.clear()
        state.confirmed = kind == "subscribe"
        if not state.inflight and state.confirmed:
            for waiter in state.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            state.waiters.clear()
        self._sync_topic(topic, state)

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            conn = self._pubsub_conn
            while self._outbox and self._connected and conn is not None:
                command, first = self._outbox.popleft()
                args = [] if first is None else [self._prefix + first]
                # Consecutive commands of one kind go out as one (Redis confirms per channel).
                while first is not None and self._outbox and self._outbox[0][0] == command:
                    args.append(self._prefix + str(self._outbox.popleft()[1]))
                try:
                    await conn.send_command(command.upper(), *args, check_health=False)
                except (RedisError, OSError) as exc:
                    logger.warning("redis pub/sub write failed", extra={"error": str(exc)})
                    await conn.disconnect(nowait=True)  # the reader reconnects
                    break

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            async with asyncio.timeout(self._operation_timeout_s):
                return bool(await self._redis.ping())
        except (RedisError, OSError):  # TimeoutError is an OSError
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._outbox_ready.set()
        for task in (self._reader, self._writer):
            if task is not None:
                await _stop(task)
        for state in self._topics.values():
            for waiter in state.waiters:
                if not waiter.done():
                    waiter.cancel()
            for subscription in state.subs:
                subscription.close_nowait()
        self._topics.clear()
        if self._pubsub_conn is not None:
            await self._pubsub_conn.disconnect(nowait=True)
            self._pubsub_conn = None
        await self._redis.aclose()  # type: ignore[attr-defined]  # types-redis 4.6 predates it
