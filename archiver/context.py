"""What every archive task works with: its context (settings, catalog, live state,
storage), the archiver's errors, and the broadcast lookup they share."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from castway.catalog.base import Catalog
from castway.live.base import LiveState
from castway.model import Broadcast
from castway.settings import Settings
from castway.storage.base import Storage


class ArchiverError(Exception):
    """Base of the archiver's errors."""


class NotReady(ArchiverError):
    """Not possible yet (the broadcast is unknown, segments are still on their way):
    retry later."""


class VodIncomplete(NotReady):
    def __init__(self, vod_id: str, missing: Sequence[str]) -> None:
        super().__init__(f"VOD {vod_id}: {len(missing)} object(s) not in storage yet, "
                         f"e.g. {', '.join(missing[:3])}")
        self.vod_id = vod_id
        self.missing = tuple(missing)


class VodNotFound(ArchiverError):
    """No such VOD (or it was deleted): nothing to do, retrying will not help."""


@dataclass(frozen=True, slots=True)
class ArchiveContext:
    """What the tasks work with, passed in (embedded) or opened per worker (Celery)."""

    settings: Settings
    catalog: Catalog
    live: LiveState
    storage: Storage


async def find_broadcast(ctx: ArchiveContext, broadcast_id: str) -> Broadcast | None:
    """The broadcast's catalog record (else its live one), with the live ladder where the
    catalog has none yet."""
    found = await asyncio.to_thread(ctx.catalog.get_broadcast, broadcast_id)
    live = await ctx.live.get_broadcast(broadcast_id)
    if found is None:
        return live
    if not found.renditions and live is not None and live.renditions:
        return replace(found, renditions=live.renditions)  # catalog row not updated yet
    return found


async def forget_live(ctx: ArchiveContext, broadcast_id: str) -> None:
    """An ended broadcast whose archive is settled leaves the live state: its segment
    log, record, stats, windows and media. Nothing else forgets them, so without this
    every broadcast a process ever ran stays in its memory (embedded) or in Redis, and
    every listing of the live state walks them all."""
    await ctx.live.drop_segment_log(broadcast_id)
    await ctx.live.remove_broadcast(broadcast_id)
