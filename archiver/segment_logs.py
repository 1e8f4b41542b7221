"""The segment logs of a broadcast as the archiver reads them: followed while it is live,
and merged with the catalog's durable record when its VOD is made."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from archiver.context import ArchiveContext
from archiver.vod import normalize_log
from castway.model import Rendition, Segment


@dataclass(slots=True)
class FollowedLogs:
    """Segment logs of a live broadcast read as they grew, and its ladder as last seen."""

    logs: dict[str, list[Segment]] = field(default_factory=dict)
    renditions: tuple[Rendition, ...] = ()

    @property
    def segments(self) -> int:
        return sum(len(log) for log in self.logs.values())


async def _read_logs(ctx: ArchiveContext, broadcast_id: str,
                     renditions: Sequence[Rendition],
                     known: FollowedLogs | None = None) -> dict[str, list[Segment]]:
    """The renditions' segment logs; with ``known`` (logs read earlier, while live), only
    their tails are read, and ``known`` is brought up to date."""
    logs = known.logs if known is not None else {}
    tails = await asyncio.gather(*(
        ctx.live.segment_log(broadcast_id, r.name, start=len(logs.get(r.name, ())))
        for r in renditions))
    for r, tail in zip(renditions, tails, strict=True):
        logs.setdefault(r.name, []).extend(tail)
    return {r.name: logs[r.name] for r in renditions}


async def durable_logs(ctx: ArchiveContext, broadcast_id: str,
                       renditions: Sequence[Rendition],
                       known: FollowedLogs | None = None) -> dict[str, list[Segment]]:
    """The renditions' segment logs: the catalog's durable record (which survives the
    process that ran the broadcast, and Redis) merged with the live state's log (which
    may hold the last few segments the catalog writer has not flushed yet)."""
    live = await _read_logs(ctx, broadcast_id, renditions, known)
    recorded = await asyncio.to_thread(ctx.catalog.segment_records, broadcast_id)
    # normalize_log keeps one segment per media sequence number.
    return {name: normalize_log([*recorded.get(name, ()), *log])
            for name, log in live.items()}


async def follow_logs(ctx: ArchiveContext, broadcast_id: str, known: FollowedLogs) -> int:
    """Read the new tail of every rendition's segment log of a live broadcast into
    ``known`` (so that :func:`archiver.instant_vod.make_vod` at the end reads only the
    last few segments, however long the broadcast). Returns how many segments ``known``
    holds."""
    broadcast = await ctx.live.get_broadcast(broadcast_id)
    if broadcast is None:
        return known.segments
    if broadcast.renditions:
        known.renditions = broadcast.renditions
    await _read_logs(ctx, broadcast_id, known.renditions, known)
    return known.segments
