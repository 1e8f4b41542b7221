"""Retention: delete the VODs older than ``vod_retention_days``."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from archiver.context import ArchiveContext
from castway import layout
from castway.events.vods import VODS_TOPIC, VodDeleted
from castway.live.base import LiveStateError
from castway.storage.base import StorageError

logger = logging.getLogger(__name__)

EXPIRE_BATCH = 100_000


async def expire_vods(ctx: ArchiveContext, now: datetime) -> list[str]:
    """Delete every VOD older than ``vod_retention_days`` at ``now``: its objects under
    ``broadcasts/{id}/`` first, then its catalog record (a crash in between is finished
    by the next run). Returns the ids deleted."""
    days = ctx.settings.vod_retention_days
    if days is None:
        return []
    cutoff = now - timedelta(days=days)
    vods = await asyncio.to_thread(lambda: ctx.catalog.list_vods(limit=EXPIRE_BATCH))
    expired: list[str] = []
    for vod in vods:
        if vod.created_at >= cutoff:
            continue
        try:
            # A clip's own objects only (its playlists): its media is its source's.
            objects = await asyncio.to_thread(ctx.storage.delete_prefix,
                                              layout.broadcast_prefix(vod.id))
        except StorageError as e:
            logger.warning("could not delete an expired VOD's objects; next run retries",
                           extra={"vod_id": vod.id, "error": str(e)})
            continue
        if not vod.is_clip:
            await ctx.live.drop_segment_log(vod.broadcast_id)
        await asyncio.to_thread(ctx.catalog.delete_vod, vod.id)
        expired.append(vod.id)
        try:
            await ctx.live.publish(VODS_TOPIC, VodDeleted(vod.id, vod.broadcast_id,
                                                          vod.channel, "retention"))
        except LiveStateError as e:
            logger.warning("VOD deletion not announced", extra={"vod_id": vod.id,
                                                                "error": str(e)})
        logger.info("VOD expired", extra={"vod_id": vod.id, "objects": objects,
                                          "created_at": vod.created_at.isoformat()})
    return expired
