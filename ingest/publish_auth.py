"""The publish authorization callback (``CASTWAY_PUBLISH_AUTH_URL``): before a publish is
accepted castway POSTs ``{"channel", "key_id", "client_addr"}`` as JSON to the
platform, which allows it with a 2xx answer within ``publish_auth_timeout_s``; any other
answer, or none, refuses it (fail closed: the platform asked to decide). The answer for
one channel, key and client address may be reused for ``publish_auth_cache_s``.

The nginx-rtmp ``on_publish`` and SRS ``on_publish`` hooks work the same way; the key
itself is never sent, only :func:`castway.keys.key_id`, which the API showed when the key was made.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import httpx

from castway.settings import Settings
from ingest.protocol.commands import StatusCode
from ingest.publish import Rejection

logger = logging.getLogger(__name__)

MAX_CACHED = 4096
USER_AGENT = "castway-publish-auth/1"


def client_host(peer: str) -> str:
    """The address of ``host:port`` (``[v6]:port`` too)."""
    host, sep, _port = peer.rpartition(":")
    return (host if sep else peer).strip("[]")


@dataclass(frozen=True, slots=True)
class AuthQuery:
    channel: str
    key_id: str
    client_addr: str

    def body(self) -> dict[str, str]:
        return {"channel": self.channel, "key_id": self.key_id,
                "client_addr": self.client_addr}


def refusal(status: int | None, detail: str) -> Rejection | None:
    """The decision on the callback's answer: None (accept) on 2xx, else the rejection
    the publisher sees."""
    if status is not None and 200 <= status < 300:
        return None
    why = f"HTTP {status}" if status is not None else detail
    return Rejection(StatusCode.PUBLISH_DENIED.value,
                     f"Publish not authorized by the platform ({why}).")


class AuthCache:
    """Recent decisions, for ``ttl_s`` each (0: none kept); bounded, oldest out first."""

    def __init__(self, ttl_s: float, size: int = MAX_CACHED) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._entries: OrderedDict[AuthQuery, tuple[float, Rejection | None]] = OrderedDict()

    def get(self, query: AuthQuery, now: float) -> tuple[bool, Rejection | None]:
        entry = self._entries.get(query)
        if entry is None or now >= entry[0]:
            self._entries.pop(query, None)
            return False, None
        return True, entry[1]

    def put(self, query: AuthQuery, decision: Rejection | None, now: float) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[query] = (now + self.ttl_s, decision)
        self._entries.move_to_end(query)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class PublishAuthorizer:
    """Asks ``settings.publish_auth_url``; owned by the ingest node (``aclose()``)."""

    def __init__(self, url: str, *, timeout_s: float, cache_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.cache = AuthCache(cache_s)
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                         trust_env=False, headers={"user-agent": USER_AGENT})

    @classmethod
    def from_settings(cls, settings: Settings) -> PublishAuthorizer | None:
        if not settings.publish_auth_url:
            return None
        return cls(settings.publish_auth_url, timeout_s=settings.publish_auth_timeout_s,
                   cache_s=settings.publish_auth_cache_s)

    async def check(self, query: AuthQuery) -> Rejection | None:
        """None to accept the publish, else why it is refused."""
        hit, cached = self.cache.get(query, time.monotonic())
        if hit:
            return cached
        status: int | None = None
        detail = ""
        try:
            response = await self._client.post(self.url, json=query.body())
            status = response.status_code
        except httpx.TimeoutException:
            detail = f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as e:
            detail = f"callback unreachable: {type(e).__name__}"
        decision = refusal(status, detail)
        logger.info("publish authorization", extra={
            "channel": query.channel, "key_id": query.key_id, "client": query.client_addr,
            "status": status, "allowed": decision is None, "error": detail})
        self.cache.put(query, decision, time.monotonic())
        return decision

    async def aclose(self) -> None:
        await self._client.aclose()
