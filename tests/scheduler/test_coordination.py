"""The tick lock and memory in a real redis-server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis

from castway.redis_client import DEFAULT_POLICY
from scheduler.coordination import LOCK_KEY, MEMORY_KEY, LocalCoordinator, RedisCoordinator
from scheduler.decide import Drain, DrainReason, FleetMemory
from tests.fixtures.redis_server import RedisServer


async def test_only_one_holder_at_a_time(redis_url: str) -> None:
    a, b = RedisCoordinator(redis_url), RedisCoordinator(redis_url)
    try:
        assert await a.acquire(30)
        assert not await b.acquire(30)
        await b.release()  # not the holder: the lock stays
        assert not await b.acquire(30)
        await a.release()
        assert await b.acquire(30)
    finally:
        await b.release()
        await a.close()
        await b.close()


async def test_a_lock_whose_tick_died_expires(redis_url: str) -> None:
    a, b = RedisCoordinator(redis_url), RedisCoordinator(redis_url)
    try:
        assert await a.acquire(0.2)
        client = redis.Redis.from_url(redis_url)
        assert client.pttl(LOCK_KEY) <= 200
        client.close()
        while not await b.acquire(30):
            await asyncio.sleep(0.05)  # waiting for Redis to expire the key
        await a.release()  # too late: b's lock must survive a's release
        assert not await a.acquire(30)
    finally:
        await b.release()
        await a.close()
        await b.close()


async def test_memory_round_trips_and_survives_garbage(redis_url: str) -> None:
    coordinator = RedisCoordinator(redis_url)
    try:
        assert await coordinator.load_memory() == FleetMemory()
        when = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
        memory = FleetMemory(last_scale_out_at=when,
                             drains=(Drain("n1", when, DrainReason.SCALE_IN),))
        await coordinator.save_memory(memory)
        assert await RedisCoordinator(redis_url).load_memory() == memory
        client = redis.Redis.from_url(redis_url)
        client.set(MEMORY_KEY, b"{not json")
        client.close()
        assert await coordinator.load_memory() == FleetMemory()
    finally:
        await coordinator.close()


async def test_local_coordinator_is_a_non_blocking_lock() -> None:
    c = LocalCoordinator()
    assert await c.acquire(1) and not await c.acquire(1)
    await c.release()
    assert await c.acquire(1)


async def test_a_frozen_redis_fails_the_lock_in_bounded_time_not_a_hung_tick(
        restartable_redis: RedisServer) -> None:
    """SIGSTOPped Redis: the tick's lock fails within the client policy's bound (the
    scheduler logs it and ticks again on time) and works again after the thaw."""
    policy = replace(DEFAULT_POLICY, connect_timeout_s=0.3, socket_timeout_s=0.3)
    coordinator = RedisCoordinator(restartable_redis.url, policy=policy)
    try:
        assert await coordinator.load_memory() == FleetMemory()  # connected
        restartable_redis.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                await coordinator.acquire(30)
            assert time.monotonic() - started < policy.failure_bound_s + 0.5
        finally:
            restartable_redis.thaw()
        assert await coordinator.acquire(30)
    finally:
        await coordinator.release()
        await coordinator.close()
