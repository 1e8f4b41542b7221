"""Clips: a VOD of its own (its id, its catalog record, its playlists under
``broadcasts/{clip_id}/``) over a sub-range of a broadcast's segments, which stay where
they are: nothing is read, copied or re-encoded, so a clip plays as soon as its few
playlists are written.

The range is chosen on one rendition's timeline (the first of the ladder that has
segments) and taken by media sequence number from every rendition: the transcoder cuts
every rendition at the same IDRs, so one number is one stretch of time in each. The
clip's media playlists name the segments relative to the *source's* directory
(``12.m4s``, ``init.mp4``): the origin serves ``/vod/{clip_id}/{rendition}/12.m4s`` from
the source's objects (origin/hls.py, ``vod_media``).

Design: docs/origin.md, "Clips".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from archiver.context import ArchiveContext, find_broadcast
from archiver.instant_vod import put_playlist
from archiver.segment_logs import durable_logs
from archiver.stored_vod import master_rendition_names, stored_segments
from archiver.vod import (
    VodPlan,
    normalize_log,
    render_vod_master_playlist,
    render_vod_media_playlist,
)
from castway import layout
from castway.events.archive import (
    MAX_CLIP_S,
    ClipAnswer,
    ClipReady,
    ClipRefused,
    ClipRequested,
)
from castway.model import BroadcastState, Rendition, Segment, Visibility, Vod, VodState

logger = logging.getLogger(__name__)

class ClipError(Exception):
    """The clip cannot be made from what was asked."""


@dataclass(frozen=True, slots=True)
class ClipRange:
    """What was asked: the last ``last_s`` seconds, or ``start_s`` to ``end_s`` from the
    start of the broadcast."""

    last_s: float | None = None
    start_s: float | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        if (self.last_s is None) == (self.start_s is None and self.end_s is None):
            raise ClipError("ask for last_s, or for start_s and end_s")
        if self.last_s is not None and not 0 < self.last_s <= MAX_CLIP_S:
            raise ClipError(f"last_s must be in (0, {MAX_CLIP_S:g}]")
        if self.last_s is None:
            start, end = self.start_s or 0.0, self.end_s
            if end is None or start < 0 or end <= start or end - start > MAX_CLIP_S:
                raise ClipError(f"need 0 <= start_s < end_s, at most {MAX_CLIP_S:g} s apart")


def choose_segments(log: Sequence[Segment], wanted: ClipRange) -> tuple[int, int] | None:
    """The first and last media sequence numbers of the whole segments nearest the
    range (segment boundaries are where a clip can cut without re-encoding), or None
    when the range holds no segment. ``last_s``: as many of the last segments as bring
    the duration nearest to it (at least one). ``start_s``/``end_s``: the segments whose
    middle falls in the range."""
    segments = normalize_log(log)
    if not segments:
        return None
    if wanted.last_s is not None:
        total = 0.0
        first = len(segments)
        while first > 0:
            d = segments[first - 1].duration_s
            if total > 0 and abs(total + d - wanted.last_s) >= abs(total - wanted.last_s):
                break
            total += d
            first -= 1
        return segments[first].msn, segments[-1].msn
    start = wanted.start_s or 0.0
    end = wanted.end_s if wanted.end_s is not None else float("inf")
    at = 0.0
    chosen: list[int] = []
    for segment in segments:
        middle = at + segment.duration_s / 2
        if start <= middle <= end:
            chosen.append(segment.msn)
        at += segment.duration_s
    return (chosen[0], chosen[-1]) if chosen else None


def plan_clip(clip_id: str, broadcast_id: str, renditions: Sequence[Rendition],
              logs: Mapping[str, Sequence[Segment]], wanted: ClipRange, *,
              target_duration_s: float) -> VodPlan:
    """The clip's playlists (master last), over ``broadcast_id``'s segments. Raises
    :class:`ClipError` when the range holds no segment."""
    reference = next((r for r in renditions if logs.get(r.name)), None)
    chosen = choose_segments(logs[reference.name], wanted) if reference else None
    if chosen is None:
        raise ClipError("no segment of the broadcast falls in the range")
    first, last = chosen
    playlists: list[tuple[str, str]] = []
    listed: list[Rendition] = []
    duration = 0.0
    count = 0
    for rendition in renditions:
        part = [s for s in normalize_log(logs.get(rendition.name, ()))
                if first <= s.msn <= last]
        if not part:
            continue
        listed.append(rendition)
        # Rendered as if it were the source's playlist: its URIs name the source's objects
        # relative to the rendition's directory, which /vod/{clip_id}/ mirrors.
        text = render_vod_media_playlist(broadcast_id, rendition.name, part,
                                         target_duration_s=target_duration_s)
        playlists.append((layout.media_playlist_key(clip_id, rendition.name), text))
        duration = max(duration, sum(s.duration_s for s in part))
        count += len(part)
    playlists.append((layout.master_key(clip_id), render_vod_master_playlist(clip_id, listed)))
    return VodPlan(broadcast_id=clip_id, playlists=tuple(playlists),
                   renditions=tuple(r.name for r in listed), duration_s=duration,
                   segments=count)


async def _source_logs(ctx: ArchiveContext, broadcast_id: str, live: bool,
                       renditions: Sequence[Rendition]) -> dict[str, list[Segment]]:
    """Live: the segment logs (live state and catalog). Ended: the stored VOD's
    playlists (its segment logs are dropped once the VOD is complete)."""
    if live:
        return await durable_logs(ctx, broadcast_id, renditions)
    master = await asyncio.to_thread(ctx.storage.get, layout.master_key(broadcast_id))
    if master is None:
        raise ClipError(f"broadcast {broadcast_id} has ended and its VOD is not made yet")
    names = master_rendition_names(broadcast_id, master.decode())
    texts = await asyncio.gather(*(
        asyncio.to_thread(ctx.storage.get, layout.media_playlist_key(broadcast_id, name))
        for name in names))
    return {name: stored_segments(layout.media_playlist_key(broadcast_id, name), t.decode())
            for name, t in zip(names, texts, strict=True) if t is not None}


async def make_clip(ctx: ArchiveContext, request: ClipRequested) -> ClipAnswer:
    """Write the clip's playlists and save its catalog record (the same whoever makes it:
    several archivers may hear one request). The clip takes the source's access rule:
    private when the source's VOD is (else, while there is none, when its channel makes
    private VODs)."""
    started = time.monotonic()
    clip_id, broadcast_id = request.clip_id, request.broadcast_id
    try:
        wanted = ClipRange(request.last_s, request.start_s, request.end_s)
    except ClipError as exc:
        return ClipRefused(clip_id, str(exc))
    broadcast = await find_broadcast(ctx, broadcast_id)
    source_vod = await asyncio.to_thread(ctx.catalog.get_vod, broadcast_id)
    if broadcast is None or (source_vod is not None
                             and source_vod.state is VodState.DELETED):
        return ClipRefused(clip_id, f"no broadcast {broadcast_id}", not_found=True)
    current = await ctx.live.get_broadcast(broadcast_id)
    live = current is not None and current.state is BroadcastState.LIVE
    renditions: Sequence[Rendition] = (
        current.renditions if current is not None and live and current.renditions
        else broadcast.renditions)
    try:
        logs = await _source_logs(ctx, broadcast_id, live, renditions)
        if not live:  # the stored VOD lists what it has; the ladder gives the order
            renditions = ([r for r in renditions if r.name in logs]
                          or [Rendition(n, None, None, None, None) for n in logs])
        plan = plan_clip(clip_id, broadcast_id, renditions, logs, wanted,
                         target_duration_s=ctx.settings.target_segment_s)
    except ClipError as exc:
        return ClipRefused(clip_id, str(exc))
    media, master = plan.playlists[:-1], plan.playlists[-1]
    await asyncio.gather(*(put_playlist(ctx, key, text) for key, text in media))
    await put_playlist(ctx, *master)
    if source_vod is not None:
        visibility = source_vod.visibility
    else:
        channel = await asyncio.to_thread(ctx.catalog.get_channel, broadcast.channel)
        visibility = (Visibility.PRIVATE if channel is not None and channel.private_vods
                      else Visibility.PUBLIC)
    # Complete at once: its segments are the source's, whose own VOD verifies them.
    clip = Vod(id=clip_id, broadcast_id=broadcast_id, channel=broadcast.channel,
               visibility=visibility, state=VodState.COMPLETE, duration_s=plan.duration_s)
    await asyncio.to_thread(ctx.catalog.save_vod, clip)
    logger.info("clip made", extra={"clip_id": clip_id, "broadcast_id": broadcast_id,
                                    "live": live, "segments": plan.segments,
                                    "duration_s": round(plan.duration_s, 3),
                                    "seconds": round(time.monotonic() - started, 4)})
    return ClipReady(clip_id, plan.duration_s)
