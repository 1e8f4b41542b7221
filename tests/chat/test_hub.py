"""The hub: joins (history, then live events without gaps or repeats), slow consumers,
admission, rate limits and bans. In-process bus, and a real Redis for the join race."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from castway.settings import Settings
from chat.bus import MemoryBus, RedisBus
from chat.hub import Busy, ChatHub, Session, chat_redis_urls
from chat.protocol import CloseCode, ErrorCode, Refused


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"redis_url": None, "chat_redis_urls": None,
                                 "chat_history": 3, "chat_rate_per_s": 1.0,
                                 "chat_rate_burst": 2, "chat_send_queue": 16}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def hub(clock: FakeClock) -> AsyncIterator[ChatHub]:
    hub = ChatHub(_settings(), clock=clock)
    await hub.start()
    yield hub
    await hub.stop()


def drain(session: Session) -> list[dict[str, Any]]:
    frames = []
    while not session.queue.empty():
        frames.append(json.loads(session.queue.get_nowait()))
    return frames


async def test_a_join_gets_welcome_history_then_live_messages(hub: ChatHub,
                                                              clock: FakeClock) -> None:
    alice = await hub.join("demo", "alice", None)
    for text in ("a", "b"):
        await hub.post(alice, text, None)
        clock.now += 1
    bob = await hub.join("demo", "bob", "bob-token-0123456789")
    welcome, history = drain(bob)
    assert welcome["type"] == "welcome" and welcome["token"] == "bob-token-0123456789"
    assert welcome["user"] == bob.user != alice.user
    assert [m["text"] for m in history["messages"]] == ["a", "b"]
    await hub.post(alice, "c", "ref")
    (message,) = drain(bob)
    assert message["id"] == 3 and message["text"] == "c" and message["ref"] == "ref"
    assert hub.viewers("demo") == 2
    await hub.leave(bob)
    await hub.leave(bob)  # twice is harmless
    assert hub.viewers("demo") == 1


async def test_a_client_that_falls_behind_is_dropped_not_the_room(clock: FakeClock) -> None:
    hub = ChatHub(_settings(chat_send_queue=4, chat_rate_burst=10), clock=clock)
    await hub.start()
    try:
        slow = await hub.join("demo", "slow", None)
        fast = await hub.join("demo", "fast", None)
        drain(fast)
        for i in range(5):
            await hub.post(fast, f"m{i}", None)
            drain(fast)
        assert slow.close_code is CloseCode.SLOW_CONSUMER
        assert slow.closed.is_set()
        assert fast.close_code is None
        assert hub.metrics.slow_consumers._value.get() == 1
    finally:
        await hub.stop()


async def test_the_send_rate_is_limited_per_connection(hub: ChatHub, clock: FakeClock) -> None:
    alice = await hub.join("demo", "alice", None)
    bob = await hub.join("demo", "bob", None)
    await hub.post(alice, "1", None)
    await hub.post(alice, "2", None)
    with pytest.raises(Refused) as refused:
        await hub.post(alice, "3", None)
    assert refused.value.code is ErrorCode.RATE_LIMITED
    await hub.post(bob, "other connections are not affected", None)
    clock.now += 1.0
    await hub.post(alice, "3", None)


async def test_banned_users_are_refused(hub: ChatHub) -> None:
    alice = await hub.join("demo", "Alice", None)
    await hub.bus.ban("demo", user=None, nick_key="alice", nick="alice")
    with pytest.raises(Refused) as refused:
        await hub.post(alice, "hi", None)
    assert refused.value.code is ErrorCode.BANNED


async def test_connection_setup_is_paced_then_refused(clock: FakeClock) -> None:
    hub = ChatHub(_settings(chat_max_connects_per_s=0.4), clock=clock)
    await hub.admit()
    with pytest.raises(Busy):
        await hub.admit()  # the next slot is 2.5 s away: more than a join waits
    clock.now += 2.5
    await hub.admit()


async def test_empty_rooms_leave_nothing_behind(hub: ChatHub) -> None:
    for i in range(50):
        await hub.leave(await hub.join(f"room{i}", "visitor", None))
    gc.collect()
    assert hub.viewers("room0") == 0
    assert len(hub._rooms) == 0 and len(hub._room_locks) == 0
    assert hub.metrics.connections._value.get() == 0


async def test_stop_closes_every_session_going_away(clock: FakeClock) -> None:
    hub = ChatHub(_settings(), clock=clock)
    await hub.start()
    session = await hub.join("demo", "alice", None)
    await hub.stop()
    assert session.close_code is CloseCode.GOING_AWAY


async def test_joins_racing_live_messages_miss_nothing_and_repeat_nothing(
        redis_url: str) -> None:
    settings = _settings(chat_history=50, chat_rate_per_s=1000.0, chat_rate_burst=1000,
                         chat_send_queue=1000)
    talker_hub = ChatHub(settings, bus=RedisBus([redis_url], 50))
    hub = ChatHub(settings, bus=RedisBus([redis_url], 50))
    await talker_hub.start()
    await hub.start()
    try:
        talker = await talker_hub.join("demo", "talker", None)

        posted: list[int] = []

        async def talk() -> None:
            for i in range(100):
                posted.append(await talker_hub.post(talker, f"m{i}", None))

        async def join_later(delay_messages: int) -> Session:
            await asyncio.sleep(0.001 * delay_messages)
            return await hub.join("demo", f"v{delay_messages}", None)

        talking = asyncio.create_task(talk())
        sessions = await asyncio.gather(*(join_later(i) for i in range(30)))
        await talking
        for session in sessions:
            def seen(frames: list[dict[str, Any]]) -> set[int]:
                # a session that joined after the last post finds it in its history
                return ({f["id"] for f in frames if "id" in f}
                        | {m["id"] for f in frames for m in f.get("messages", [])})

            async with asyncio.timeout(10):
                frames: list[dict[str, Any]] = []
                while posted[-1] not in seen(frames):
                    frames.append(json.loads(await session.queue.get()))
            welcome, history, *live = frames
            ids = [m["id"] for m in history["messages"]] + [m["id"] for m in live]
            assert ids == list(range(ids[0], posted[-1] + 1)), session.nick
    finally:
        await hub.stop()
        await talker_hub.stop()


@pytest.mark.parametrize(("chat_urls", "redis_url", "expected"), [
    (None, None, []),
    (None, "redis://r:6379/0", ["redis://r:6379/0"]),
    ("redis://a/0, redis://b/0", "redis://r:6379/0", ["redis://a/0", "redis://b/0"]),
])
def test_chat_redis_urls(chat_urls: str | None, redis_url: str | None,
                         expected: list[str]) -> None:
    settings = Settings(chat_redis_urls=chat_urls, redis_url=redis_url)
    assert chat_redis_urls(settings) == expected


def test_the_in_process_bus_is_the_default() -> None:
    assert isinstance(ChatHub(_settings()).bus, MemoryBus)
