"""What every route needs, held by the app (never a module global), and its Depends alias."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from castway.catalog.base import Catalog
from castway.live.base import LiveState, RenditionWindow
from castway.settings import Settings
from castway.storage.base import Storage
from origin.access import VodAccess
from origin.metrics import OriginMetrics
from origin.notify import MediaNotifier

# Rendered playlists kept per process: thousands of woken reloads share one rendering.
RENDER_CACHE_SIZE = 256


@dataclass(eq=False)
class RenderCache:
    """The last renderings of playlists, keyed by (what, window identity, options).

    A window is immutable and replaced whole on every change, so the identity of the
    window object is a sound cache key as long as the entry keeps the window alive.
    """

    size: int = RENDER_CACHE_SIZE
    _entries: OrderedDict[tuple[object, ...], tuple[RenditionWindow, str]] = field(
        default_factory=OrderedDict)

    def get(self, key: tuple[object, ...], window: RenditionWindow) -> str | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] is not window:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[object, ...], window: RenditionWindow, text: str) -> None:
        self._entries[key] = (window, text)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


@dataclass(eq=False)
class OriginContext:
    settings: Settings
    catalog: Catalog
    live: LiveState
    storage: Storage
    metrics: OriginMetrics
    notifier: MediaNotifier
    access: VodAccess
    renders: RenderCache = field(default_factory=RenderCache)


async def get_context(request: Request) -> OriginContext:
    """Async on purpose: FastAPI runs sync dependencies in a worker thread."""
    ctx: OriginContext = request.app.state.origin
    return ctx


Ctx = Annotated[OriginContext, Depends(get_context)]
