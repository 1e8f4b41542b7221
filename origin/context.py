"""What every route needs, held by the app (never a module global), and its Depends alias."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from castway.catalog.base import Catalog
from castway.live.base import LiveState, RenditionWindow
from castway.settings import Settings
from castway.storage.base import Storage
from castway.storage.pool import StoragePool
from origin.access import ChannelAccessCache, MediaAccessCache, VodAccess
from origin.extensions import OriginExtension
from origin.metrics import OriginMetrics
from origin.notify import MediaNotifier
from origin.responses import etag_for

# Rendered playlists kept per process: thousands of woken reloads share one rendering.
RENDER_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class Rendered:
    """A playlist ready to send: its bytes and their ETag, computed once."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, text: str) -> Rendered:
        body = text.encode("utf-8")
        return cls(body, etag_for(body))


@dataclass(eq=False)
class RenderCache:
    """The last renderings of playlists, keyed by (what, window identity, options).

    A window is immutable and replaced whole on every change, so the identity of the
    window object is a sound cache key as long as the entry keeps the window alive.
    """

    size: int = RENDER_CACHE_SIZE
    _entries: OrderedDict[tuple[object, ...], tuple[RenditionWindow, Rendered]] = field(
        default_factory=OrderedDict)

    def get(self, key: tuple[object, ...], window: RenditionWindow) -> Rendered | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] is not window:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[object, ...], window: RenditionWindow,
            rendered: Rendered) -> None:
        self._entries[key] = (window, rendered)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


# Broadcasts whose ladder is known complete, per process (a few hours of broadcasts).
READY_LADDERS = 4096


@dataclass(eq=False)
class ReadyLadders:
    """Broadcasts whose every rendition has had media: the ladder of a live broadcast
    never changes (transcoder.pipeline), so once complete it stays complete, and the
    hot path asks the live state for every window only until then."""

    size: int = READY_LADDERS
    _ids: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __contains__(self, broadcast_id: str) -> bool:
        return broadcast_id in self._ids

    def add(self, broadcast_id: str) -> None:
        self._ids[broadcast_id] = None
        self._ids.move_to_end(broadcast_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


# Rendition reports may lag the other renditions by this much (they are hints to the
# player, rfc8216bis 4.4.5.4); the playlist's own window is always read fresh.
REPORT_WINDOW_TTL_S = 0.1


@dataclass(eq=False)
class WindowCache:
    """Windows of the *other* renditions, for EXT-X-RENDITION-REPORT: read at most once
    per ``ttl_s`` per rendition, and once for any number of concurrent requests (a burst
    of woken blocking reloads must not mean a burst of live-state reads)."""

    live: LiveState
    ttl_s: float = REPORT_WINDOW_TTL_S
    _entries: dict[tuple[str, str], tuple[float, asyncio.Future[RenditionWindow | None]]] = \
        field(default_factory=dict)

    async def get(self, broadcast_id: str, rendition: str) -> RenditionWindow | None:
        key = (broadcast_id, rendition)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.ttl_s or \
                (entry[1].done() and entry[1].exception() is not None):
            future: asyncio.Future[RenditionWindow | None] = \
                asyncio.get_running_loop().create_future()
            self._entries[key] = (now, future)
            if len(self._entries) > RENDER_CACHE_SIZE:
                self._entries = {k: v for k, v in self._entries.items()
                                 if now - v[0] <= self.ttl_s}
            try:
                future.set_result(await self.live.get_window(broadcast_id, rendition))
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: concurrent waiters re-raise it
                raise
            return future.result()
        return await asyncio.shield(entry[1])


@dataclass(eq=False)
class OriginContext:
    settings: Settings
    catalog: Catalog
    live: LiveState
    storage: Storage
    metrics: OriginMetrics
    notifier: MediaNotifier
    access: VodAccess
    extensions: tuple[OriginExtension, ...] = ()
    renders: RenderCache = field(default_factory=RenderCache)
    ready_ladders: ReadyLadders = field(default_factory=ReadyLadders)
    # Storage reads of the origin (VOD, DVR, posters) on threads of their own: a stalled
    # S3 fills these, not the default executor (catalog queries, and in embedded mode
    # the rest of the process).
    storage_pool: StoragePool = field(default_factory=lambda: StoragePool(name="origin-storage"))
    report_windows: WindowCache = field(init=False)
    media_access: MediaAccessCache = field(init=False)
    channel_access: ChannelAccessCache = field(init=False)

    def __post_init__(self) -> None:
        self.report_windows = WindowCache(self.live)
        self.media_access = MediaAccessCache(self.live, self.catalog)
        self.channel_access = ChannelAccessCache(self.catalog)


async def get_context(request: Request) -> OriginContext:
    """Async on purpose: FastAPI runs sync dependencies in a worker thread."""
    ctx: OriginContext = request.app.state.origin
    return ctx


Ctx = Annotated[OriginContext, Depends(get_context)]
