"""Signed access to private VODs and private live channels, CloudFront-compatible
(:class:`VodAccess`, over :mod:`castway.signing`), :class:`MediaAccess`, the one rule for
``/hls/b/...``, and :class:`ChannelAccessCache`, whether a channel's live playlists need a
signature.

Design: docs/origin.md, "Private VODs: signed access" and "Private live channels".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from starlette.requests import Request

from castway.catalog.base import Catalog, CatalogError
from castway.live.base import LiveBroadcasts
from castway.model import BroadcastState, Visibility, VodState
from castway.settings import Settings
from castway.signing import (
    KeyRing,
    Policy,
    SigningError,
    SigningKey,
    public_request_url,
    sign_url,
    signed_cookies,
    verify_request,
)
from castway.storage.base import IMMUTABLE

logger = logging.getLogger(__name__)

MIN_GRANT_S = 60
MAX_GRANT_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class VodGrant:
    vod_id: str
    expires: int  # epoch seconds
    watch_url: str  # the watch page, signed: it sets the cookies
    master_url: str  # the master playlist, signed (players also need the cookies)
    cookies: dict[str, str]
    cookie_path: str


@dataclass(frozen=True, slots=True)
class ChannelGrant:
    """Signed access to a private channel's live playlists and media (``/hls/{channel}/*``:
    its live media is served under that path too, so one cookie path covers it all)."""

    channel: str
    expires: int
    watch_url: str  # the watch page, signed: it sets the cookies
    master_url: str  # the live master playlist, signed (players also need the cookies)
    cookies: dict[str, str]
    cookie_path: str


class VodAccess:
    """Issues and checks signatures for private VODs and private live channels; disabled
    without an RSA key."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.effective_public_url
        self.signer: SigningKey | None = None
        if settings.signing_key:
            try:
                self.signer = SigningKey.from_pem(settings.signing_key,
                                                  settings.signing_key_id)
            except SigningError as exc:
                logger.warning("private VOD signing disabled: CASTWAY_SIGNING_KEY is not "
                               "an RSA PEM private key", extra={"error": str(exc)})
        self._keys = KeyRing.of(self.signer) if self.signer is not None else None

    @property
    def enabled(self) -> bool:
        return self.signer is not None

    def resource(self, vod_id: str) -> str:
        return f"{self._base}/vod/{vod_id}/*"

    @staticmethod
    def cookie_path(vod_id: str) -> str:
        return f"/vod/{vod_id}/"

    def grant(self, vod_id: str, ttl_s: int, *, now: float | None = None) -> VodGrant:
        if self.signer is None:
            raise SigningError("no RSA signing key is configured (CASTWAY_SIGNING_KEY)")
        expires = int(now if now is not None else time.time()) + ttl_s
        resource = self.resource(vod_id)
        master = sign_url(f"{self._base}/vod/{vod_id}/master.m3u8", self.signer,
                          expires=expires, resource=resource)
        query = urlsplit(master).query
        cookies = signed_cookies(Policy(resource, expires), self.signer)
        return VodGrant(vod_id=vod_id, expires=expires,
                        watch_url=f"{self._base}/watch/vod/{vod_id}?{query}",
                        master_url=master, cookies=cookies,
                        cookie_path=self.cookie_path(vod_id))

    def channel_resource(self, channel: str) -> str:
        return f"{self._base}/hls/{channel}/*"

    @staticmethod
    def channel_cookie_path(channel: str) -> str:
        return f"/hls/{channel}/"

    def channel_grant(self, channel: str, ttl_s: int, *,
                      now: float | None = None) -> ChannelGrant:
        if self.signer is None:
            raise SigningError("no RSA signing key is configured (CASTWAY_SIGNING_KEY)")
        expires = int(now if now is not None else time.time()) + ttl_s
        resource = self.channel_resource(channel)
        master = sign_url(f"{self._base}/hls/{channel}/master.m3u8", self.signer,
                          expires=expires, resource=resource)
        query = urlsplit(master).query
        cookies = signed_cookies(Policy(resource, expires), self.signer)
        return ChannelGrant(channel=channel, expires=expires,
                            watch_url=f"{self._base}/watch/{channel}?{query}",
                            master_url=master, cookies=cookies,
                            cookie_path=self.channel_cookie_path(channel))

    def allows(self, request: Request, *, as_path: str | None = None,
               now: float | None = None) -> bool:
        """Whether ``request`` carries a valid signature (query first, then cookies) for
        its own URL, or for ``as_path`` with the request's query."""
        if self._keys is None:
            return False
        path = as_path if as_path is not None else request.url.path
        query = request.url.query
        url = public_request_url(self._base, path, query)
        client = request.client.host if request.client else None
        verdict = verify_request(url, request.cookies, self._keys, now=now, client_ip=client)
        if not verdict:
            logger.debug("signature refused", extra={"path": path, "reason": verdict.reason})
        return bool(verdict)


# Live playlists and media of a private channel: never from a shared cache (a CDN would
# hand one viewer's signed copy to the next).
PRIVATE_LIVE_PLAYLIST = "private, max-age=1"
PRIVATE_MEDIA = "private, max-age=3600"
# Live media of a channel whose VODs are private: public now, refused once the broadcast
# ends, so a CDN may keep it only this long (a year-long copy would outlive the refusal).
LIVE_PRIVATE_VOD_MAX_AGE_S = 10
# Posters and thumbnails of a public broadcast may be replaced (a later poster).
BROADCAST_FILE_MAX_AGE_S = 30
# A broadcast's access is re-read at most this often per process: the end of a broadcast
# is honoured within it, and a burst of segment requests costs one lookup.
MEDIA_ACCESS_TTL_S = 1.0
# Broadcast ids remembered per process (expired ones go first, then the oldest).
MEDIA_ACCESS_CACHE_SIZE = 4096


class MediaAccess(StrEnum):
    """What the unsigned ``/hls/b/{broadcast_id}/...`` route may do with a broadcast."""

    LIVE = "live"  # live; its VOD will be public: immutable media
    LIVE_PRIVATE_VOD = "live-private-vod"  # live; its VOD will be private: short CDN life
    LIVE_PRIVATE = "live-private"  # live on a private channel: signed /hls/{channel}/ only
    PUBLIC = "public"  # ended; its VOD is (or will be) public
    PRIVATE = "private"  # ended; its VOD is private: signed /vod/{id}/ URLs only
    UNKNOWN = "unknown"  # no record of it (or its VOD was deleted): nothing to serve

    @property
    def served(self) -> bool:
        return self in (MediaAccess.LIVE, MediaAccess.LIVE_PRIVATE_VOD, MediaAccess.PUBLIC)

    @property
    def media_cache(self) -> str:
        """Cache-Control of init segments, segments and parts."""
        if self is MediaAccess.LIVE_PRIVATE:
            return PRIVATE_MEDIA
        if self is MediaAccess.LIVE_PRIVATE_VOD:
            return f"public, max-age={LIVE_PRIVATE_VOD_MAX_AGE_S}"
        return IMMUTABLE

    @property
    def file_cache(self) -> str:
        """Cache-Control of the poster and thumbnails."""
        if self is MediaAccess.LIVE_PRIVATE:
            return PRIVATE_MEDIA
        if self is MediaAccess.LIVE_PRIVATE_VOD:
            return f"public, max-age={LIVE_PRIVATE_VOD_MAX_AGE_S}"
        return f"public, max-age={BROADCAST_FILE_MAX_AGE_S}"


async def resolve_media_access(live: LiveBroadcasts, catalog: Catalog,
                               broadcast_id: str, *,
                               known: MediaAccess | None = None) -> MediaAccess:
    """The rule, from the records. The live state says whether the broadcast is live (a
    catalog record still 'live' after its node died is not: fail closed); the channel's
    ``live_visibility`` whether it is private while live; the VOD record, else the
    channel (what the archiver will give the VOD, public when the channel is gone), says
    what happens after. Backing-service errors propagate (the route answers 503), except
    the channel lookup of a live broadcast: live media stays up without the catalog, as
    ``known`` (the last answer) said if it was live, else with the short CDN lifetime."""
    current = await live.get_broadcast(broadcast_id)
    if current is not None and current.state is BroadcastState.LIVE:
        try:
            channel = await asyncio.to_thread(catalog.get_channel, current.channel)
        except CatalogError as exc:
            logger.warning("catalog unavailable: live media served as last known",
                           extra={"broadcast_id": broadcast_id, "error": repr(exc)})
            if known in (MediaAccess.LIVE, MediaAccess.LIVE_PRIVATE):
                return known
            return MediaAccess.LIVE_PRIVATE_VOD
        if channel is not None and channel.live_visibility is Visibility.PRIVATE:
            return MediaAccess.LIVE_PRIVATE
        if channel is not None and channel.vod_visibility is Visibility.PRIVATE:
            return MediaAccess.LIVE_PRIVATE_VOD
        return MediaAccess.LIVE
    vod = await asyncio.to_thread(catalog.get_vod, broadcast_id)
    if vod is not None:
        if vod.state is VodState.DELETED:
            return MediaAccess.UNKNOWN
        return MediaAccess.PRIVATE if vod.visibility is Visibility.PRIVATE \
            else MediaAccess.PUBLIC
    record = current or await asyncio.to_thread(catalog.get_broadcast, broadcast_id)
    if record is None:
        return MediaAccess.UNKNOWN
    channel = await asyncio.to_thread(catalog.get_channel, record.channel)
    if channel is not None and channel.private_vods:
        return MediaAccess.PRIVATE
    return MediaAccess.PUBLIC


@dataclass(eq=False)
class MediaAccessCache:
    """``resolve_media_access`` per broadcast, at most once per ``ttl_s`` per process and
    once for any number of concurrent requests. The lookup runs as its own task, so a
    request that goes away does not fail the others waiting on it."""

    live: LiveBroadcasts
    catalog: Catalog
    ttl_s: float = MEDIA_ACCESS_TTL_S
    size: int = MEDIA_ACCESS_CACHE_SIZE
    _entries: dict[str, tuple[float, asyncio.Task[MediaAccess]]] = field(
        default_factory=dict)

    async def get(self, broadcast_id: str) -> MediaAccess:
        now = time.monotonic()
        entry = self._entries.get(broadcast_id)
        if entry is None or now - entry[0] > self.ttl_s or _failed(entry[1]):
            known = entry[1].result() if entry is not None and entry[1].done() \
                and not _failed(entry[1]) else None
            task = asyncio.create_task(
                resolve_media_access(self.live, self.catalog, broadcast_id, known=known))
            task.add_done_callback(_retrieve)
            self._entries.pop(broadcast_id, None)  # re-inserted last: oldest stay first
            self._entries[broadcast_id] = (now, task)
            if len(self._entries) > self.size:
                self._prune(now)
            entry = (now, task)
        return await asyncio.shield(entry[1])

    def _prune(self, now: float) -> None:
        self._entries = {k: v for k, v in self._entries.items() if now - v[0] <= self.ttl_s}
        while len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]


@dataclass(eq=False)
class ChannelAccessCache:
    """Whether a channel is private live (its playlists need a signature), re-read from
    the catalog at most once per ``ttl_s`` per process: a blocking playlist reload costs
    no lookup. While the catalog is down the last answer stands (public when there was
    none: live playlists stay up without the catalog, as live media does)."""

    catalog: Catalog
    ttl_s: float = MEDIA_ACCESS_TTL_S
    size: int = MEDIA_ACCESS_CACHE_SIZE
    _entries: dict[str, tuple[float, bool]] = field(default_factory=dict)

    async def private(self, channel: str) -> bool:
        now = time.monotonic()
        entry = self._entries.get(channel)
        if entry is not None and now - entry[0] <= self.ttl_s:
            return entry[1]
        try:
            record = await asyncio.to_thread(self.catalog.get_channel, channel)
        except CatalogError as exc:
            logger.warning("catalog unavailable: channel access as last known",
                           extra={"channel": channel, "error": repr(exc)})
            return entry[1] if entry is not None else False
        private = record is not None and record.live_visibility is Visibility.PRIVATE
        self._entries.pop(channel, None)
        self._entries[channel] = (now, private)
        while len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]
        return private


def _failed(task: asyncio.Task[MediaAccess]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def _retrieve(task: asyncio.Task[MediaAccess]) -> None:
    """Mark the exception retrieved: the waiters re-raise it, and if they all went away
    asyncio would otherwise log it as never retrieved."""
    if not task.cancelled():
        task.exception()
