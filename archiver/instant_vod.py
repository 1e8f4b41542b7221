"""The instant VOD task: write the playlists :mod:`archiver.vod` plans over the stored
segments (no media read or copied) and record the VOD, pending its verification."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from archiver.context import ArchiveContext, NotReady, find_broadcast, forget_live
from archiver.segment_logs import FollowedLogs, durable_logs
from archiver.vod import plan_vod
from castway.model import BroadcastState, Visibility, Vod, VodState
from castway.storage.base import VOD_PLAYLIST

logger = logging.getLogger(__name__)

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"


async def put_playlist(ctx: ArchiveContext, key: str, text: str) -> None:
    await asyncio.to_thread(ctx.storage.put, key, text.encode(),
                            content_type=PLAYLIST_CONTENT_TYPE, cache_control=VOD_PLAYLIST)


async def make_vod(ctx: ArchiveContext, broadcast_id: str, *,
                   known: FollowedLogs | None = None) -> Vod | None:
    """Write the VOD playlists of a broadcast over its stored segments and record the VOD
    (state pending until :func:`archiver.verify.verify_vod`). None when the broadcast has
    nothing to archive. Cost grows with the number of segments only through rendering
    text: no media is read, copied or listed. ``known``: segment logs followed while live
    (:func:`archiver.segment_logs.follow_logs`); only their tails are read."""
    started = time.monotonic()
    broadcast = await find_broadcast(ctx, broadcast_id)
    if broadcast is None:
        raise NotReady(f"broadcast {broadcast_id} is not known (yet)")
    if not broadcast.renditions and known is not None and known.renditions:
        broadcast = replace(broadcast, renditions=known.renditions)  # as seen while live
    existing = await asyncio.to_thread(ctx.catalog.get_vod, broadcast_id)
    if existing is not None and existing.state is VodState.DELETED:
        return existing
    if existing is not None and existing.state is VodState.COMPLETE:
        # Final: its logs may be gone already, and rendering what is left of them (a
        # record written after the verification, say) would shrink it.
        await asyncio.to_thread(ctx.catalog.drop_segment_records, broadcast_id)
        return existing
    logs = await durable_logs(ctx, broadcast_id, broadcast.renditions, known)
    plan = plan_vod(broadcast_id, broadcast.renditions, logs,
                    target_duration_s=ctx.settings.target_segment_s)
    if plan.empty:
        if existing is None:
            logger.info("broadcast produced no segments: no VOD",
                        extra={"broadcast_id": broadcast_id})
            stored = await asyncio.to_thread(ctx.catalog.get_broadcast, broadcast_id)
            if stored is not None and stored.state is not BroadcastState.LIVE:
                await forget_live(ctx, broadcast_id)  # nothing will ever be archived
        return existing  # made earlier, its segment log dropped once it was complete
    # Media playlists first, the master last: once the master exists the VOD plays.
    media, master = plan.playlists[:-1], plan.playlists[-1]
    await asyncio.gather(*(put_playlist(ctx, key, text) for key, text in media))
    await put_playlist(ctx, *master)

    if existing is not None:
        vod = replace(existing, duration_s=plan.duration_s,
                      state=VodState.COMPLETE if existing.state is VodState.COMPLETE
                      else VodState.PENDING)
    else:
        channel = await asyncio.to_thread(ctx.catalog.get_channel, broadcast.channel)
        # A private live channel's VODs are private too, whatever vod_visibility says.
        private = channel is not None and channel.private_vods
        vod = Vod(id=broadcast_id, broadcast_id=broadcast_id, channel=broadcast.channel,
                  visibility=Visibility.PRIVATE if private else Visibility.PUBLIC,
                  state=VodState.PENDING,
                  duration_s=plan.duration_s)
    await asyncio.to_thread(ctx.catalog.save_vod, vod)
    logger.info("VOD playlists written",
                extra={"broadcast_id": broadcast_id, "segments": plan.segments,
                       "renditions": list(plan.renditions),
                       "duration_s": round(plan.duration_s, 3),
                       "seconds": round(time.monotonic() - started, 4)})
    return vod
