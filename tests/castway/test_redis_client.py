"""Redis clients from castway/redis_client.py against a real redis-server: a restart is
invisible to the next command, a frozen server is an error within the policy's bound,
and the pub/sub reconnect backoff grows, caps and resets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from castway.redis_client import (
    DEFAULT_POLICY,
    PROBE_POLICY,
    Reconnect,
    RedisPolicy,
    async_client,
    ping,
    sync_client,
)
from tests.fixtures.redis_server import RedisServer

# Short timeouts so a frozen server costs the test under a second per command.
FAST = replace(DEFAULT_POLICY, connect_timeout_s=0.3, socket_timeout_s=0.3)
SLACK_S = 0.5  # scheduling on a loaded 2-core machine


async def test_an_async_client_survives_a_restart(restartable_redis: RedisServer) -> None:
    client = async_client(restartable_redis.url)
    try:
        await client.set("k", "v")  # a pooled connection, now stale
        await asyncio.to_thread(restartable_redis.restart)
        assert await client.get("k") is None  # no error: the stale connection is replaced
        await client.set("k", "again")
        assert await client.get("k") == b"again"
    finally:
        await client.aclose()  # type: ignore[attr-defined]


async def _kill_the_blocked_client(admin: aioredis.Redis[bytes]) -> None:
    """CLIENT KILL the connection blocked in BLPOP, once it is (a broken connection in
    the middle of a command, as a restarting server or a reset causes)."""
    async with asyncio.timeout(10):
        while True:
            blocked = [c for c in await admin.client_list() if c["cmd"] == "blpop"]
            if blocked:
                await admin.client_kill_filter(_id=blocked[0]["id"])
                return
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("retries", [DEFAULT_POLICY.retries, 0])
async def test_a_command_whose_connection_breaks_is_retried_on_a_fresh_one(
        redis_url: str, retries: int) -> None:
    client = async_client(redis_url, replace(DEFAULT_POLICY, retries=retries))
    admin = async_client(redis_url)
    try:
        waiting = asyncio.ensure_future(client.blpop(["queue"], timeout=0))
        await _kill_the_blocked_client(admin)
        await admin.rpush("queue", "item")  # kept in the list until someone pops it
        if retries:
            assert await waiting == (b"queue", b"item")
        else:  # without the policy's retries the caller sees the break
            with pytest.raises(redis.exceptions.ConnectionError):
                await waiting
    finally:
        await client.aclose()  # type: ignore[attr-defined]
        await admin.aclose()  # type: ignore[attr-defined]


def test_a_sync_client_survives_a_restart(restartable_redis: RedisServer) -> None:
    client = sync_client(restartable_redis.url)
    try:
        client.set("k", "v")
        restartable_redis.restart()
        assert client.get("k") is None
    finally:
        client.close()


async def test_a_text_client_decodes_replies(redis_url: str) -> None:
    client = async_client(redis_url, decode_responses=True)
    try:
        await client.set("k", "v")
        assert await client.get("k") == "v"
    finally:
        await client.aclose()  # type: ignore[attr-defined]


async def test_a_frozen_server_is_a_timeout_within_the_bound(
        restartable_redis: RedisServer) -> None:
    """SIGSTOPped: connections are accepted and never answered. Both the pooled
    connection and a client that must connect first fail within the bound, and the
    client works again once the server does."""
    pooled = async_client(restartable_redis.url, FAST)
    fresh = async_client(restartable_redis.url, FAST)
    try:
        await pooled.set("k", "v")
        restartable_redis.freeze()
        try:
            for client in (pooled, fresh):
                started = time.monotonic()
                with pytest.raises(redis.exceptions.TimeoutError):
                    await client.get("k")
                assert time.monotonic() - started < FAST.failure_bound_s + SLACK_S
        finally:
            restartable_redis.thaw()
        assert await pooled.get("k") == b"v"
        assert await fresh.get("k") == b"v"
    finally:
        await pooled.aclose()  # type: ignore[attr-defined]
        await fresh.aclose()  # type: ignore[attr-defined]


def test_a_frozen_server_is_a_timeout_within_the_bound_for_the_sync_client(
        restartable_redis: RedisServer) -> None:
    client = sync_client(restartable_redis.url, FAST)
    try:
        client.set("k", "v")
        restartable_redis.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                client.get("k")
            assert time.monotonic() - started < FAST.failure_bound_s + SLACK_S
        finally:
            restartable_redis.thaw()
        assert client.get("k") == b"v"
    finally:
        client.close()


def test_ping_says_whether_redis_answers_within_the_probe_bound(
        restartable_redis: RedisServer) -> None:
    url = restartable_redis.url
    assert ping(url) is True
    restartable_redis.freeze()
    try:
        started = time.monotonic()
        assert ping(url) is False
        assert time.monotonic() - started < PROBE_POLICY.failure_bound_s + SLACK_S
    finally:
        restartable_redis.thaw()
    restartable_redis.stop()
    assert ping(url) is False  # refused
    restartable_redis.start()
    assert ping(url) is True


def test_the_probe_is_one_attempt_reading_no_longer_than_connecting() -> None:
    assert PROBE_POLICY.retries == 0
    assert PROBE_POLICY.socket_timeout_s == DEFAULT_POLICY.connect_timeout_s
    assert PROBE_POLICY.failure_bound_s == 2 * DEFAULT_POLICY.connect_timeout_s


def test_the_failure_bound_adds_both_timeouts_and_every_nested_backoff() -> None:
    policy = RedisPolicy(connect_timeout_s=1.0, socket_timeout_s=2.0, retries=2,
                         retry_base_s=0.1, retry_cap_s=0.15)
    assert policy.failure_bound_s == pytest.approx(1.0 + 2.0 + 3 * (0.1 + 0.15))


@pytest.mark.parametrize("field", ["connect_timeout_s", "socket_timeout_s",
                                   "retry_base_s", "retry_cap_s", "reconnect_cap_s"])
def test_a_policy_without_a_positive_time_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        replace(DEFAULT_POLICY, **{field: 0})


def test_reconnect_delays_double_up_to_the_cap_and_restart_after_success() -> None:
    reconnect = Reconnect(replace(DEFAULT_POLICY, retry_base_s=0.05, reconnect_cap_s=0.3))
    assert [reconnect.next_delay() for _ in range(5)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.3, 0.3])
    reconnect.succeeded()
    assert reconnect.next_delay() == pytest.approx(0.05)


def test_reconnect_delays_stay_at_the_cap_however_long_the_outage() -> None:
    reconnect = Reconnect(DEFAULT_POLICY)
    delays = [reconnect.next_delay() for _ in range(5000)]  # 2**5000 overflows a float
    assert delays[-1] == DEFAULT_POLICY.reconnect_cap_s
