"""The chat hub of one process: local rooms, bounded per-connection queues, admission.

The hub owns the bus subscription of every channel with a local viewer (one per process,
whatever the number of viewers) and copies each event into the send queue of every local
connection. A queue that is full means a client too slow to keep up: that connection is
dropped (close code 4001), never the room. Joins are paced by a token bucket so that a
reconnect storm waits its turn or is told to retry (close code 1013).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from castway.settings import Settings
from chat.bus import Banned, BusError, ChatBus, open_bus
from chat.metrics import ChatMetrics
from chat.protocol import (
    CloseCode,
    ErrorCode,
    EventHead,
    Refused,
    event_head,
    history_frame,
    issue_token,
    message_body,
    nick_key,
    user_id,
    welcome_frame,
)
from chat.ratelimit import Clock, TokenBucket

logger = logging.getLogger(__name__)

CONNECT_MAX_WAIT_S = 2.0  # a join waits this long for its setup slot, else 1013


class Busy(Exception):
    """Too many connections are being set up: retry later (with backoff and jitter)."""


def chat_redis_urls(settings: Settings) -> list[str]:
    """CHAT_REDIS_URLS (comma-separated), else REDIS_URL, else none (in-process)."""
    raw = settings.chat_redis_urls or settings.redis_url or ""
    return [url.strip() for url in raw.split(",") if url.strip()]


@dataclass(eq=False)
class Session:
    """One WebSocket connection's place in a room."""

    channel: str
    nick: str
    token: str
    user: str
    bucket: TokenBucket
    queue: asyncio.Queue[str]
    last_id: int = 0
    close_code: CloseCode | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # Live events that arrive while the join reads the history wait here (bounded like the
    # queue), then are replayed behind it.
    pending: list[str] | None = field(default_factory=list)

    def offer(self, frame: str) -> bool:
        """Queue a frame; False when the session is gone or lags too far (it is killed)."""
        if self.close_code is not None:
            return False
        if self.pending is not None:
            if len(self.pending) < self.queue.maxsize:
                self.pending.append(frame)
                return True
        else:
            try:
                self.queue.put_nowait(frame)
                return True
            except asyncio.QueueFull:
                pass
        self.kill(CloseCode.SLOW_CONSUMER)
        return False

    def kill(self, code: CloseCode) -> None:
        if self.close_code is None:
            self.close_code = code
            self.closed.set()


class ChatHub:
    """Rooms of this process over a :class:`ChatBus`. ``start()``/``stop()`` own it."""

    def __init__(self, settings: Settings, *, bus: ChatBus | None = None,
                 registry: CollectorRegistry | None = None,
                 clock: Clock = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.bus = bus if bus is not None else open_bus(chat_redis_urls(settings),
                                                        settings.chat_history)
        self.metrics = ChatMetrics(registry if registry is not None else CollectorRegistry())
        self.clock = clock
        self.wall_clock = wall_clock
        self._admission = TokenBucket(settings.chat_max_connects_per_s,
                                      max(1.0, settings.chat_max_connects_per_s), clock)
        self._rooms: dict[str, set[Session]] = {}
        self._per_address: collections.Counter[str] = collections.Counter()
        # Per-channel join/leave locks, gone once nobody holds or awaits them: a
        # client naming endless channels must not grow this.
        self._room_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self.bus.start(self._on_frame)
            self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for sessions in self._rooms.values():
            for session in sessions:
                session.kill(CloseCode.GOING_AWAY)
        self._rooms.clear()
        self.metrics.connections.set(0)
        await self.bus.stop()

    # --- admission and membership ----------------------------------------------------

    def _room_lock(self, channel: str) -> asyncio.Lock:
        lock = self._room_locks.get(channel)
        if lock is None:
            lock = asyncio.Lock()
            self._room_locks[channel] = lock
        return lock

    def claim_address(self, address: str) -> bool:
        """Count a socket from ``address``; False (nothing counted) when the address
        already holds ``chat_max_connections_per_ip``. Each True needs a
        :meth:`release_address`."""
        if self._per_address[address] >= self.settings.chat_max_connections_per_ip:
            self.metrics.connects.labels("too_many").inc()
            return False
        self._per_address[address] += 1
        return True

    def release_address(self, address: str) -> None:
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    async def admit(self) -> None:
        """Wait for a connection-setup slot; :class:`Busy` when the wait would be too long."""
        wait = self._admission.reserve(CONNECT_MAX_WAIT_S)
        if wait is None:
            self.metrics.connects.labels("busy").inc()
            raise Busy("too many connections are being set up; retry later")
        if wait > 0:
            await asyncio.sleep(wait)

    async def join(self, channel: str, nick: str, token: str | None) -> Session:
        """Enter a room: the session's queue starts with welcome and history frames, then
        every later event in order (messages already in the history are not repeated)."""
        token = token or issue_token()
        session = Session(channel=channel, nick=nick, token=token, user=user_id(token),
                          bucket=TokenBucket(self.settings.chat_rate_per_s,
                                             self.settings.chat_rate_burst, self.clock),
                          queue=asyncio.Queue(maxsize=max(2, self.settings.chat_send_queue)))
        lock = self._room_lock(channel)
        async with lock:
            sessions = self._rooms.get(channel)
            if sessions is None:
                await self.bus.subscribe(channel)
                sessions = self._rooms.setdefault(channel, set())
            # Live events wait in session.pending from here on: add first, then read.
            sessions.add(session)
            try:
                frames = await self.bus.history(channel)
            except BusError:
                sessions.discard(session)
                if not sessions:
                    del self._rooms[channel]
                    with contextlib.suppress(BusError):
                        await self.bus.unsubscribe(channel)
                raise
        for frame in frames:
            head = event_head(frame)
            if head.message_id is not None:
                session.last_id = max(session.last_id, head.message_id)
        pending, session.pending = session.pending or [], None
        session.offer(welcome_frame(channel=channel, nick=nick, user=session.user,
                                    token=token, rate_per_s=self.settings.chat_rate_per_s,
                                    burst=self.settings.chat_rate_burst))
        session.offer(history_frame(channel, frames))
        for frame in pending:  # no await in between: nothing can overtake them
            self._offer(session, frame, event_head(frame))
        self.metrics.connects.labels("accepted").inc()
        self.metrics.connections.inc()
        logger.debug("chat join", extra={"channel": channel, "user": session.user})
        return session

    async def leave(self, session: Session) -> None:
        session.kill(CloseCode.NORMAL)
        lock = self._room_lock(session.channel)
        async with lock:
            sessions = self._rooms.get(session.channel)
            if sessions is None or session not in sessions:
                return
            sessions.discard(session)
            self.metrics.connections.dec()
            if not sessions:
                del self._rooms[session.channel]
                if self._started:
                    try:
                        await self.bus.unsubscribe(session.channel)
                    except BusError as exc:
                        logger.warning("chat unsubscribe failed",
                                       extra={"channel": session.channel,
                                              "error": repr(exc)})

    @property
    def started(self) -> bool:
        return self._started

    def viewers(self, channel: str) -> int:
        return len(self._rooms.get(channel, ()))

    # --- traffic ---------------------------------------------------------------------

    async def post(self, session: Session, text: str, ref: str | None) -> int:
        """Publish a validated text from ``session``; :class:`Refused` says why not."""
        if not session.bucket.take():
            self.metrics.refused.labels(ErrorCode.RATE_LIMITED.value).inc()
            raise Refused(ErrorCode.RATE_LIMITED,
                          f"slow down: at most {self.settings.chat_rate_per_s:g} messages "
                          f"per second (bursts of {self.settings.chat_rate_burst})")
        body = message_body(channel=session.channel, nick=session.nick, user=session.user,
                            text=text, ts_ms=int(self.wall_clock() * 1000), ref=ref)
        try:
            message_id = await self.bus.publish(session.channel, body, user=session.user,
                                                nick_key=nick_key(session.nick))
        except Banned:
            self.metrics.refused.labels(ErrorCode.BANNED.value).inc()
            raise Refused(ErrorCode.BANNED, "you are banned from this channel's chat") from None
        except BusError as exc:
            self.metrics.refused.labels(ErrorCode.UNAVAILABLE.value).inc()
            raise Refused(ErrorCode.UNAVAILABLE, "chat is unavailable, retry later") from exc
        self.metrics.messages_in.inc()
        return message_id

    def _on_frame(self, channel: str, frame: str) -> None:
        """A bus event of a subscribed channel: copy it to every local viewer, in order."""
        sessions = self._rooms.get(channel)
        if not sessions:
            return
        head = event_head(frame)
        if head.kind == "invalid":
            logger.warning("chat bus frame ignored", extra={"channel": channel})
            return
        delivered = 0
        for session in list(sessions):
            if self._offer(session, frame, head):
                delivered += 1
        if head.kind == "message":
            self.metrics.messages_out.inc(delivered)
            if head.ts_ms is not None:
                self.metrics.fanout_seconds.observe(
                    max(0.0, self.wall_clock() - head.ts_ms / 1000))

    def _offer(self, session: Session, frame: str, head: EventHead) -> bool:
        # A message published while the join read the history may arrive on the Pub/Sub
        # connection after that read: ids only grow (the Redis sequence is seeded from the
        # clock should Redis lose it), so anything not above the last id sent is a repeat.
        if head.message_id is not None and session.pending is None:
            if head.message_id <= session.last_id:
                return False
            session.last_id = head.message_id
        alive = session.close_code is None
        if session.offer(frame):
            return True
        if alive and session.close_code is CloseCode.SLOW_CONSUMER:
            self.metrics.slow_consumers.inc()
            logger.info("chat slow consumer dropped", extra={"channel": session.channel,
                                                             "user": session.user})
        return False
