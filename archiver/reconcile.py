"""Reconciliation (:class:`Reconciler`): VODs from the durable record, not from one message;
orphaned live broadcasts failed, unarchived ended ones archived.

Design: docs/archiver.md, "Reconciliation"; docs/reliability.md, "VODs by reconciliation".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from castway.catalog.base import Catalog
from castway.events.announce import announce
from castway.events.broadcasts import BroadcastFailed
from castway.live.base import LiveState
from castway.model import Broadcast, BroadcastState, Node

logger = logging.getLogger(__name__)

MAX_SWEEP = 100  # broadcasts archived per sweep; the next sweep takes the rest
# Live broadcasts read per sweep to look for orphans: all of a large fleet's (the newest
# come first, so a smaller bound would never look at the long-running ones).
MAX_LIVE_SCAN = 100_000


@dataclass(frozen=True, slots=True)
class OrphanVerdict:
    orphans: tuple[Broadcast, ...]
    silent_since: dict[str, datetime]  # node id -> first sweep that found it silent


def find_orphans(live_in_catalog: Sequence[Broadcast], nodes: Sequence[Node], *,
                 now: datetime, heartbeat_ttl_s: float, grace_s: float,
                 silent_since: Mapping[str, datetime]) -> OrphanVerdict:
    """Broadcasts whose node has been silent for ``grace_s`` as seen by these sweeps.

    A node is alive while its heartbeat is younger than ``heartbeat_ttl_s``. A node found
    silent is remembered; its broadcasts are orphans only once it has stayed silent for
    ``grace_s`` -- so a live state that restarted empty (heartbeats come back within
    seconds) never fails a running broadcast. Pure."""
    alive = {n.id for n in nodes
             if (now - n.heartbeat_at).total_seconds() <= heartbeat_ttl_s}
    silent: dict[str, datetime] = {}
    orphans: list[Broadcast] = []
    for broadcast in live_in_catalog:
        if broadcast.state is not BroadcastState.LIVE or broadcast.node_id in alive:
            continue
        since = silent.setdefault(broadcast.node_id,
                                  silent_since.get(broadcast.node_id, now))
        if (now - since).total_seconds() >= grace_s:
            orphans.append(broadcast)
    return OrphanVerdict(tuple(orphans), silent)


async def fail_orphan(catalog: Catalog, live: LiveState, broadcast: Broadcast,
                      now: datetime) -> Broadcast:
    """Mark a broadcast whose node is gone as failed, everywhere a reader looks."""
    reason = f"ingest node {broadcast.node_id} stopped without ending it"
    failed = replace(broadcast, state=BroadcastState.FAILED, ended_at=now)
    await asyncio.to_thread(catalog.save_broadcast, failed)
    try:
        await live.update_broadcast(broadcast.id, state=BroadcastState.FAILED, ended_at=now)
        await announce(live, BroadcastFailed(broadcast.id, broadcast.channel, reason))
    except Exception as e:  # the catalog is the record; the live state catches up
        logger.warning("orphaned broadcast failed in the catalog only",
                       extra={"broadcast_id": broadcast.id, "error": str(e)})
    logger.warning("broadcast failed: its node is gone", extra={
        "broadcast_id": broadcast.id, "channel": broadcast.channel,
        "node": broadcast.node_id, "reason": reason})
    return failed


@dataclass(frozen=True, slots=True)
class SweepResult:
    failed: tuple[str, ...]  # orphans marked failed by this sweep
    to_archive: tuple[str, ...]  # ended/failed broadcasts whose VOD is not complete


class Reconciler:
    """Sweeps of one archiver; remembers which nodes it found silent, and since when."""

    def __init__(self, catalog: Catalog, live: LiveState, *, heartbeat_ttl_s: float,
                 grace_s: float) -> None:
        self.catalog = catalog
        self.live = live
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.grace_s = grace_s
        self._silent_since: dict[str, datetime] = {}

    async def sweep(self, now: datetime, *, grace_s: float | None = None) -> SweepResult:
        """One sweep (``grace_s``: this sweep's patience with silent nodes, e.g. 0 when
        the live state is this process's own and was empty at its start)."""
        live_rows = await asyncio.to_thread(self.catalog.list_broadcasts,
                                            state=BroadcastState.LIVE, limit=MAX_LIVE_SCAN)
        failed: list[str] = []
        if live_rows:
            verdict = find_orphans(live_rows, await self.live.list_nodes(), now=now,
                                   heartbeat_ttl_s=self.heartbeat_ttl_s,
                                   grace_s=self.grace_s if grace_s is None else grace_s,
                                   silent_since=self._silent_since)
            self._silent_since = verdict.silent_since
            for orphan in verdict.orphans:
                await fail_orphan(self.catalog, self.live, orphan, now)
                failed.append(orphan.id)
        else:
            self._silent_since = {}
        pending = await asyncio.to_thread(self.catalog.broadcasts_to_archive, MAX_SWEEP)
        return SweepResult(tuple(failed), tuple(b.id for b in pending))


def pending_too_long(created_at: datetime, now: datetime, recheck_after_s: float) -> bool:
    return now - created_at >= timedelta(seconds=recheck_after_s)
