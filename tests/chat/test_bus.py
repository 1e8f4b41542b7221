"""Both buses keep the same contract; the Redis one against real redis-servers.

Two RedisBus instances stand for two chat processes: ids are ordered per channel and
every subscribed bus sees every event once, in id order.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis

from castway.redis_client import DEFAULT_POLICY
from chat.bus import Banned, BusError, ChatBus, MemoryBus, RedisBus, open_bus
from chat.protocol import message_body
from tests.fixtures.redis_server import RedisServer

HISTORY = 3


@dataclass(eq=False)
class Inbox:
    frames: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, channel: str, frame: str) -> None:
        self.frames.append((channel, json.loads(frame)))
        self.changed.set()

    async def wait_for(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        async with asyncio.timeout(10):
            while len(self.frames) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.frames


def body(text: str, channel: str = "demo") -> str:
    return message_body(channel=channel, nick="alice", user="0123456789abcdef", text=text,
                        ts_ms=1, ref=None)


@pytest.fixture(params=["memory", "redis"])
async def bus_factory(request: pytest.FixtureRequest
                      ) -> AsyncIterator[Callable[[], ChatBus]]:
    """Makes buses of one kind; with Redis, all on the same server (one deployment)."""
    made: list[ChatBus] = []
    shared_memory = MemoryBus(HISTORY)
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def make() -> ChatBus:
        if url is None:
            return shared_memory
        bus = RedisBus([url], HISTORY)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.stop()
    await shared_memory.stop()


async def test_ids_are_ordered_and_history_is_capped(
        bus_factory: Callable[[], ChatBus]) -> None:
    bus = bus_factory()
    inbox = Inbox()
    await bus.start(inbox)
    await bus.subscribe("demo")
    ids = [await bus.publish("demo", body(f"m{i}"), user="u1", nick_key="alice")
           for i in range(5)]
    first = ids[0]
    assert ids == [first + i for i in range(5)]
    assert first == 1 or first > 1_700_000_000_000  # Redis: seeded from its clock
    await bus.publish("other", body("x", "other"), user="u1", nick_key="alice")
    frames = await inbox.wait_for(5)
    assert [(c, f["id"], f["text"]) for c, f in frames] == [
        ("demo", first + i, f"m{i}") for i in range(5)]  # "other" is not subscribed
    history = [json.loads(f) for f in await bus.history("demo")]
    assert [(f["id"], f["text"]) for f in history] == [
        (first + 2, "m2"), (first + 3, "m3"), (first + 4, "m4")]
    assert history[0]["type"] == "message" and history[0]["channel"] == "demo"


async def test_delete_and_ban_are_fanned_out(bus_factory: Callable[[], ChatBus]) -> None:
    bus = bus_factory()
    inbox = Inbox()
    await bus.start(inbox)
    await bus.subscribe("demo")
    first = await bus.publish("demo", body("a"), user="u1", nick_key="alice")
    await bus.publish("demo", body("b"), user="u1", nick_key="alice")
    assert await bus.delete("demo", first) is True
    assert await bus.delete("demo", 99) is False
    assert await bus.delete("demo", first) is False  # gone already
    await bus.ban("demo", user="u1", nick_key=None, nick=None)
    await bus.ban("demo", user=None, nick_key="mallory", nick="Mallory")
    frames = [f for _, f in await inbox.wait_for(7)]
    assert frames[2:] == [{"type": "delete", "channel": "demo", "id": first},
                          {"type": "delete", "channel": "demo", "id": 99},
                          {"type": "delete", "channel": "demo", "id": first},
                          {"type": "ban", "channel": "demo", "user": "u1", "nick": None},
                          {"type": "ban", "channel": "demo", "user": None, "nick": "Mallory"}]
    assert [json.loads(f)["text"] for f in await bus.history("demo")] == ["b"]
    with pytest.raises(Banned):
        await bus.publish("demo", body("c"), user="u1", nick_key="alice")
    with pytest.raises(Banned):
        await bus.publish("demo", body("c"), user="u2", nick_key="mallory")
    assert await bus.publish("demo", body("c"), user="u2", nick_key="bob") == first + 2
    await bus.publish("elsewhere", body("c"), user="u1", nick_key="alice")


async def test_unsubscribed_channels_are_not_delivered(
        bus_factory: Callable[[], ChatBus]) -> None:
    bus = bus_factory()
    inbox = Inbox()
    await bus.start(inbox)
    await bus.subscribe("demo")
    await bus.subscribe("other")
    await bus.unsubscribe("demo")
    await bus.publish("demo", body("gone"), user="u1", nick_key="alice")
    await bus.publish("other", body("here", "other"), user="u1", nick_key="alice")
    frames = await inbox.wait_for(1)
    assert [f["text"] for _, f in frames] == ["here"]


async def test_two_processes_see_each_others_messages_once_in_order(redis_url: str) -> None:
    buses = [RedisBus([redis_url], HISTORY) for _ in range(2)]
    inboxes = [Inbox(), Inbox()]
    try:
        for bus, inbox in zip(buses, inboxes, strict=True):
            await bus.start(inbox)
            await bus.subscribe("demo")

        async def talk(bus: RedisBus, name: str) -> None:
            for i in range(50):
                await bus.publish("demo", body(f"{name}{i}"), user="u", nick_key=name)

        await asyncio.gather(talk(buses[0], "a"), talk(buses[1], "b"))
        for inbox in inboxes:
            frames = await inbox.wait_for(100)
            ids = [f["id"] for _, f in frames]
            assert ids == list(range(ids[0], ids[0] + 100))
        assert [f for _, f in inboxes[0].frames] == [f for _, f in inboxes[1].frames]
    finally:
        for bus in buses:
            await bus.stop()


async def test_rooms_are_sharded_over_redis_servers_by_channel(
        redis_url: str, restartable_redis: RedisServer) -> None:
    urls = [redis_url, restartable_redis.url]
    bus = RedisBus(urls, HISTORY)
    inbox = Inbox()
    channels = [f"ch{i}" for i in range(40)]
    try:
        await bus.start(inbox)
        for channel in channels:
            await bus.subscribe(channel)
            await bus.publish(channel, body("hi", channel), user="u", nick_key="a")
        frames = await inbox.wait_for(len(channels))
        assert sorted(c for c, _ in frames) == sorted(channels)
    finally:
        await bus.stop()
    owners = {url: {c for c in channels if bus.ring.shard_for(c) == url} for url in urls}
    assert all(len(owned) >= 8 for owned in owners.values()), owners
    for url, owned in owners.items():
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            stored = {key.split("{")[1].split("}")[0] for key in client.keys("chat:*:seq")}
        finally:
            client.close()
        assert stored == owned


async def test_a_shard_down_at_start_is_a_bus_error_until_it_is_back(
        restartable_redis: RedisServer) -> None:
    restartable_redis.stop()
    bus = RedisBus([restartable_redis.url], HISTORY)
    inbox = Inbox()
    try:
        await bus.start(inbox)  # does not fail: chat must not keep the origin from starting
        with pytest.raises(BusError):
            await bus.subscribe("demo")
        with pytest.raises(BusError):
            await bus.publish("demo", body("x"), user="u", nick_key="a")
        with pytest.raises(BusError):
            await bus.history("demo")
        restartable_redis.start()
        async with asyncio.timeout(20):
            while True:
                try:
                    await bus.subscribe("demo")
                    break
                except BusError:
                    await asyncio.sleep(0.05)  # what a client's reconnect backoff does
            while True:
                try:
                    await bus.publish("demo", body("back"), user="u", nick_key="a")
                    break
                except BusError:
                    await asyncio.sleep(0.05)
            frames = await inbox.wait_for(1)
        assert [f["text"] for _, f in frames] == ["back"]
    finally:
        await bus.stop()


def test_open_bus_picks_redis_only_when_given_urls() -> None:
    assert isinstance(open_bus([], 5), MemoryBus)
    assert isinstance(open_bus(["redis://127.0.0.1:1/0"], 5), RedisBus)


async def test_ids_keep_increasing_after_redis_loses_its_data(
        restartable_redis: RedisServer) -> None:
    bus = RedisBus([restartable_redis.url], HISTORY)
    inbox = Inbox()
    try:
        await bus.start(inbox)
        await bus.subscribe("demo")
        before = await bus.publish("demo", body("before"), user="u", nick_key="a")
        await inbox.wait_for(1)
        restartable_redis.restart()  # no persistence: the sequence is gone
        after = None
        async with asyncio.timeout(20):
            while after is None:
                try:
                    after = await bus.publish("demo", body("after"), user="u", nick_key="a")
                except BusError:
                    await asyncio.sleep(0.05)  # the pool's stale connection; a client retries
            frames = await inbox.wait_for(2)  # the Pub/Sub connection resubscribed
        assert after >= before
        assert [f["text"] for _, f in frames] == ["before", "after"]
    finally:
        await bus.stop()


async def test_a_frozen_shard_is_a_bus_error_in_bounded_time_not_a_hang(
        restartable_redis: RedisServer) -> None:
    """SIGSTOPped: a post and a join's history fail within the client policy's bound
    (the chat connection gets an error frame instead of waiting forever)."""
    policy = replace(DEFAULT_POLICY, connect_timeout_s=0.3, socket_timeout_s=0.3)
    bus = RedisBus([restartable_redis.url], HISTORY, policy=policy)
    inbox = Inbox()
    try:
        await bus.start(inbox)
        await bus.subscribe("demo")
        await bus.publish("demo", body("before"), user="u", nick_key="a")
        restartable_redis.freeze()
        try:
            for call in (lambda: bus.publish("demo", body("x"), user="u", nick_key="a"),
                         lambda: bus.history("demo")):
                started = time.monotonic()
                with pytest.raises(BusError):
                    await call()
                assert time.monotonic() - started < policy.failure_bound_s + 0.5
        finally:
            restartable_redis.thaw()
        await bus.publish("demo", body("after"), user="u", nick_key="a")
        async with asyncio.timeout(10):
            while "after" not in (texts := [f["text"] for _, f in inbox.frames]):
                await inbox.wait_for(len(texts) + 1)
        # The post that timed out may still have run when the server woke: a timeout
        # cannot tell (the client was told it failed, so it may post it again).
        assert texts in (["before", "after"], ["before", "x", "after"])
    finally:
        await bus.stop()
