"""Every Redis client castway makes (:func:`async_client`, :func:`sync_client`,
:func:`ping`), with one set of timeouts and one reconnect policy (:class:`RedisPolicy`,
:class:`Reconnect`). Nothing here connects: clients connect on first use.

Design: docs/architecture.md, "When Redis or S3 fail" (one client policy).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, overload

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.retry import Retry

__all__ = ["DEFAULT_POLICY", "PROBE_POLICY", "Reconnect", "RedisPolicy", "async_client", "ping",
           "sync_client"]

#: What a retry is for: the connection broke (reset, refused, closed by a restarting
#: server), which a fresh connection may fix. Not TimeoutError: a server that accepts
#: and does not answer (frozen, overloaded) is not helped by being asked again, the
#: command may already have run (a chat INCR, a lock SET), and redis-py nests the
#: connect's retries inside the command's, so retried timeouts multiply: measured 3.9 s
#: instead of 1.2 s for 3 attempts of 0.3 s timeouts, (retries + 1) ** 2 attempts.
#: Any other error is the server's answer (a script error, a wrong type).
RETRIED_ERRORS: tuple[type[RedisError], ...] = (ConnectionError,)


@dataclass(frozen=True, slots=True)
class RedisPolicy:
    """Timeouts and retry/backoff of a Redis client. :data:`DEFAULT_POLICY` is the one
    castway uses; tests and probes derive theirs from it with ``replace``."""

    connect_timeout_s: float = 2.0
    socket_timeout_s: float = 5.0
    # redis-py takes whole seconds here; also the pub/sub keepalive of the live state.
    health_check_interval_s: int = 15
    retries: int = 3
    retry_base_s: float = 0.05
    retry_cap_s: float = 0.5
    reconnect_cap_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "socket_timeout_s", "retry_base_s",
                     "retry_cap_s", "reconnect_cap_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RedisPolicy.{name} must be > 0")
        if self.retries < 0 or self.health_check_interval_s < 0:
            raise ValueError("RedisPolicy retries and health_check_interval_s must be >= 0")

    def backoff(self) -> ExponentialBackoff:
        return ExponentialBackoff(cap=self.retry_cap_s, base=self.retry_base_s)

    @property
    def failure_bound_s(self) -> float:
        """Longest one command takes to fail against a server that stopped answering
        (frozen: it accepts connections and never replies): one connect and one read
        time out, after at most every backoff of the connection-error retries, which
        redis-py nests (the connect's inside the command's). Tested in
        ``tests/castway/test_redis_client.py``."""
        backoff = self.backoff()
        waits = sum(backoff.compute(n) for n in range(self.retries))
        return self.connect_timeout_s + self.socket_timeout_s + (self.retries + 1) * waits

    def probe(self) -> RedisPolicy:
        """For a readiness check: one attempt, reading no longer than connecting. The
        check's caller (a load balancer, an orchestrator) is what retries."""
        return replace(self, retries=0,
                       socket_timeout_s=min(self.socket_timeout_s, self.connect_timeout_s))


DEFAULT_POLICY = RedisPolicy()
PROBE_POLICY = DEFAULT_POLICY.probe()


@overload
def async_client(url: str, policy: RedisPolicy = ..., *,
                 decode_responses: Literal[False] = False) -> aioredis.Redis[bytes]: ...


@overload
def async_client(url: str, policy: RedisPolicy = ..., *,
                 decode_responses: Literal[True]) -> aioredis.Redis[str]: ...


def async_client(url: str, policy: RedisPolicy = DEFAULT_POLICY, *,
                 decode_responses: bool = False
                 ) -> aioredis.Redis[bytes] | aioredis.Redis[str]:
    """A ``redis.asyncio`` client (with its own pool) for ``url`` under ``policy``."""
    retry = AsyncRetry(policy.backoff(), policy.retries, RETRIED_ERRORS)
    if decode_responses:
        return aioredis.Redis.from_url(
            url, socket_connect_timeout=policy.connect_timeout_s,
            socket_timeout=policy.socket_timeout_s,
            health_check_interval=policy.health_check_interval_s, retry=retry,
            decode_responses=True)
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=policy.connect_timeout_s,
        socket_timeout=policy.socket_timeout_s,
        health_check_interval=policy.health_check_interval_s, retry=retry)


def sync_client(url: str, policy: RedisPolicy = DEFAULT_POLICY) -> redis.Redis[bytes]:
    """A blocking client for ``url`` under ``policy`` (for code outside an event loop)."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=policy.connect_timeout_s,
        socket_timeout=policy.socket_timeout_s,
        health_check_interval=policy.health_check_interval_s,
        retry=Retry(policy.backoff(), policy.retries, RETRIED_ERRORS))


def ping(url: str, policy: RedisPolicy = PROBE_POLICY) -> bool:
    """Whether Redis at ``url`` answers PING, within ``policy.failure_bound_s``; never
    raises (a readiness check). Blocking: call it from a thread, not an event loop."""
    client = sync_client(url, policy)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


class Reconnect:
    """Waits between attempts to re-establish a long-lived connection (a pub/sub reader):
    ``min(reconnect_cap_s, retry_base_s * 2**n)`` after the n-th failure in a row, from
    the first wait again once an attempt succeeds."""

    def __init__(self, policy: RedisPolicy = DEFAULT_POLICY) -> None:
        self._backoff = ExponentialBackoff(cap=policy.reconnect_cap_s,
                                           base=policy.retry_base_s)
        self._cap = policy.reconnect_cap_s
        self._failures = 0

    def next_delay(self) -> float:
        """Record a failed attempt; how long to wait before the next one."""
        delay = self._backoff.compute(self._failures)
        if delay < self._cap:  # past the cap the count only grows (older redis-py
            self._failures += 1  # overflows a float at 2**1024)
        return delay

    def succeeded(self) -> None:
        self._failures = 0
