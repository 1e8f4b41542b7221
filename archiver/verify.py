"""VOD verification: a VOD is marked complete once every object its playlists reference
is in storage (with the size its segment log recorded)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from archiver.context import (
    ArchiveContext,
    NotReady,
    VodIncomplete,
    VodNotFound,
    find_broadcast,
    forget_live,
)
from archiver.segment_logs import durable_logs
from archiver.stored_vod import media_playlist_keys, referenced_keys
from castway import layout
from castway.events.vods import VODS_TOPIC, VodReady
from castway.live.base import LiveStateError
from castway.model import BroadcastState, VodState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verification:
    vod_id: str
    complete: bool
    checked: int
    missing: tuple[str, ...] = ()


async def _vod_objects(ctx: ArchiveContext, broadcast_id: str) -> dict[str, int] | None:
    """Key -> expected size (0: unknown) of every object the stored VOD playlists
    reference; None if the VOD has no master playlist yet."""
    master_text = await asyncio.to_thread(ctx.storage.get, layout.master_key(broadcast_id))
    if master_text is None:
        return None
    expected: dict[str, int] = {}
    for key in media_playlist_keys(broadcast_id, master_text.decode()):
        data = await asyncio.to_thread(ctx.storage.get, key)
        if data is None:
            expected[key] = 0  # the media playlist itself is missing
            continue
        for ref in referenced_keys(key, data.decode()):
            expected.setdefault(ref, 0)
    broadcast = await find_broadcast(ctx, broadcast_id)
    if broadcast is not None:  # sizes from the segment log, where it still exists
        for log in (await durable_logs(ctx, broadcast_id, broadcast.renditions)).values():
            for segment in log:
                if segment.key in expected and segment.size > 0:
                    expected[segment.key] = segment.size
    return expected


async def _announce(ctx: ArchiveContext, event: VodReady) -> None:
    """Best effort: a VOD is complete whether or not anyone heard of it."""
    try:
        await ctx.live.publish(VODS_TOPIC, event)
    except LiveStateError as e:
        logger.warning("VOD ready not announced", extra={"vod_id": event.vod_id,
                                                         "error": str(e)})


async def verify_vod(ctx: ArchiveContext, vod_id: str, *, raise_incomplete: bool = True
                     ) -> Verification:
    """Check every object the VOD's playlists reference against one storage listing of the
    broadcast's prefix (sizes too, where the segment log recorded them). Complete: the
    VOD is marked so and the broadcast's segment log is dropped from the live state.
    Incomplete: :class:`VodIncomplete` (or a result, with ``raise_incomplete=False``)."""
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        raise VodNotFound(f"no VOD {vod_id}")
    expected = await _vod_objects(ctx, vod.broadcast_id)
    if expected is None:
        raise NotReady(f"VOD {vod_id} has no playlists yet")
    prefix = layout.broadcast_prefix(vod.broadcast_id)
    stored = await asyncio.to_thread(
        lambda: {o.key: o.size for o in ctx.storage.list(prefix)})
    missing = sorted(k for k, size in expected.items()
                     if k not in stored or (size > 0 and stored[k] != size))
    result = Verification(vod_id, not missing, len(expected), tuple(missing))
    if missing:
        logger.info("VOD not complete yet", extra={"vod_id": vod_id, "missing": len(missing),
                                                    "checked": len(expected)})
        if raise_incomplete:
            raise VodIncomplete(vod_id, missing)
        return result
    if vod.state is not VodState.COMPLETE:
        current = await asyncio.to_thread(ctx.catalog.get_vod, vod_id) or vod
        await asyncio.to_thread(ctx.catalog.save_vod,
                                replace(current, state=VodState.COMPLETE))
        logger.info("VOD complete", extra={"vod_id": vod_id, "objects": len(expected)})
        await _announce(ctx, VodReady(vod.id, vod.broadcast_id, vod.channel,
                                      current.duration_s))
    broadcast = await asyncio.to_thread(ctx.catalog.get_broadcast, vod.broadcast_id)
    if broadcast is not None and broadcast.state is not BroadcastState.LIVE:
        # The stored VOD playlists are the record from now on.
        await forget_live(ctx, vod.broadcast_id)
        await asyncio.to_thread(ctx.catalog.drop_segment_records, vod.broadcast_id)
    return result
