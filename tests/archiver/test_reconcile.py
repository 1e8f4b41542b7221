"""Reconciliation: a VOD is made from the durable record whatever message was lost, and a
broadcast left live by a node that died is failed and archived."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from archiver.context import ArchiveContext
from archiver.instant_vod import make_vod
from archiver.reconcile import find_orphans
from archiver.service import ArchiverService
from archiver.verify import verify_vod
from castway.catalog.base import SegmentRecord
from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEnded
from castway.layout import master_key
from castway.model import Broadcast, BroadcastState, Node, NodeState, VodState
from tests.archiver.helpers import HlsRun, count_frames, publish, record_durably

pytestmark = pytest.mark.peer

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def live_on(node_id: str, broadcast_id: str = "b1") -> Broadcast:
    return Broadcast(id=broadcast_id, channel="ch1", node_id=node_id,
                     started_at=NOW - timedelta(minutes=5))


def heartbeat(node_id: str, seconds_ago: float, *, now: datetime = NOW) -> Node:
    return Node(id=node_id, image_version="v1", address="127.0.0.1:1935",
                state=NodeState.ACTIVE, heartbeat_at=now - timedelta(seconds=seconds_ago))


# -- the pure decision --------------------------------------------------------------------

def test_a_broadcast_on_a_heartbeating_node_is_never_an_orphan() -> None:
    verdict = find_orphans([live_on("n1")], [heartbeat("n1", 3)], now=NOW,
                           heartbeat_ttl_s=30, grace_s=0, silent_since={})
    assert verdict.orphans == () and verdict.silent_since == {}


def test_a_silent_node_must_stay_silent_for_the_grace_before_its_broadcasts_fail() -> None:
    """A live state restarted empty loses every heartbeat for a few seconds: the first
    sweep that finds a node silent only remembers it."""
    first = find_orphans([live_on("n1")], [], now=NOW, heartbeat_ttl_s=30, grace_s=30,
                         silent_since={})
    assert first.orphans == () and first.silent_since == {"n1": NOW}
    later = find_orphans([live_on("n1")], [], now=NOW + timedelta(seconds=29),
                         heartbeat_ttl_s=30, grace_s=30, silent_since=first.silent_since)
    assert later.orphans == ()
    gone = find_orphans([live_on("n1")], [], now=NOW + timedelta(seconds=30),
                        heartbeat_ttl_s=30, grace_s=30, silent_since=later.silent_since)
    assert [b.id for b in gone.orphans] == ["b1"]


def test_a_node_that_heartbeats_again_is_forgiven() -> None:
    first = find_orphans([live_on("n1")], [], now=NOW, heartbeat_ttl_s=30, grace_s=30,
                         silent_since={})
    later = NOW + timedelta(seconds=40)
    back = find_orphans([live_on("n1")], [heartbeat("n1", 1, now=later)], now=later,
                        heartbeat_ttl_s=30, grace_s=30, silent_since=first.silent_since)
    assert back.orphans == () and back.silent_since == {}


def test_a_stale_heartbeat_counts_as_silence_and_ended_broadcasts_are_ignored() -> None:
    ended = replace(live_on("n1", "b2"), state=BroadcastState.ENDED)
    verdict = find_orphans([live_on("n1"), ended], [heartbeat("n1", 31)], now=NOW,
                           heartbeat_ttl_s=30, grace_s=0, silent_since={})
    assert [b.id for b in verdict.orphans] == ["b1"]


# -- the archiver's sweeps, on real back ends and real media --------------------------------

async def archive_after_a_start(ctx: ArchiveContext, broadcast_id: str) -> None:
    """An archiver starts (no end event will reach it) and makes the broadcast's VOD."""
    service = ArchiverService(ctx.settings, ctx.catalog, ctx.live, ctx.storage)
    await service.start()
    try:
        assert await service.wait_vod(broadcast_id, 10.0)
        assert await service.idle(30)
    finally:
        await service.stop()


async def test_a_vod_whose_end_event_was_missed_is_made_at_the_next_start(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    """The archiver was down when the broadcast ended, and the live state lost its
    segment log meanwhile (Redis restarted empty): the durable record is enough."""
    published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    record_durably(ctx.catalog, published)
    await ctx.live.drop_segment_log("b1")
    await ctx.live.remove_broadcast("b1")

    await archive_after_a_start(ctx, "b1")
    vod = ctx.catalog.get_vod("b1")
    assert vod is not None and vod.state is VodState.COMPLETE
    media = ctx.storage.get("broadcasts/b1/source/vod.m3u8")
    assert media is not None
    lines = media.decode().splitlines()
    segments = sum(len(r.segments) for r in two_runs)
    assert [ln for ln in lines if ln.endswith(".m4s")] == [f"{i}.m4s" for i in range(segments)]
    assert lines.count("#EXT-X-DISCONTINUITY") == 1  # the reconnect, from the records
    assert ctx.catalog.segment_records("b1") == {}  # the VOD is the record now
    assert ctx.catalog.broadcasts_to_archive() == []


async def test_a_broadcast_left_live_by_a_dead_node_is_failed_and_archived(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    """A node SIGKILLed mid-broadcast: the catalog still says live, nothing heartbeats."""
    published = await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    ctx.catalog.save_broadcast(replace(published.broadcast, state=BroadcastState.LIVE,
                                       ended_at=None, node_id="killed-node"))
    record_durably(ctx.catalog, published)
    await ctx.live.drop_segment_log("b1")
    await ctx.live.remove_broadcast("b1")

    await archive_after_a_start(ctx, "b1")
    broadcast = ctx.catalog.get_broadcast("b1")
    assert broadcast is not None and broadcast.state is BroadcastState.FAILED
    assert broadcast.ended_at is not None
    vod = ctx.catalog.get_vod("b1")
    assert vod is not None and vod.state is VodState.COMPLETE
    assert count_frames(str(ctx.settings.data_dir / "storage" / master_key("b1"))) == \
        two_runs[0].frames


async def test_a_live_broadcast_of_a_heartbeating_node_is_left_alone(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    published = await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    ctx.catalog.save_broadcast(replace(published.broadcast, state=BroadcastState.LIVE,
                                       ended_at=None, node_id="n1"))
    record_durably(ctx.catalog, published)
    await ctx.live.heartbeat(Node(id="n1", image_version="v1", address="127.0.0.1:1935",
                                  state=NodeState.ACTIVE), ttl_s=30)
    service = ArchiverService(ctx.settings, ctx.catalog, ctx.live, ctx.storage)
    await service.start()
    try:
        assert await service.reconcile_now(grace_s=0) == 0
    finally:
        await service.stop()
    broadcast = ctx.catalog.get_broadcast("b1")
    assert broadcast is not None and broadcast.state is BroadcastState.LIVE
    assert ctx.catalog.get_vod("b1") is None


async def test_a_stopping_archiver_finishes_the_vod_of_a_broadcast_that_just_ended(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun]) -> None:
    """``castway serve`` stopped during a broadcast: ingest ends it on the way down, then
    the archiver stops -- with the VOD made, not cancelled."""
    service = ArchiverService(ctx.settings, ctx.catalog, ctx.live, ctx.storage)
    await service.start()
    published = await publish("b1", two_runs[:1], live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    record_durably(ctx.catalog, published)
    await ctx.live.publish(BROADCASTS_TOPIC, BroadcastEnded("b1", "ch1"))
    await service.stop()
    vod = ctx.catalog.get_vod("b1")
    assert vod is not None and vod.state is VodState.COMPLETE


async def test_a_complete_vod_is_final(ctx: ArchiveContext,
                                       two_runs: tuple[HlsRun, HlsRun]) -> None:
    """A record written after the verification (a late spool drain) must not make a
    second run render the VOD from that one segment."""
    published = await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog,
                              storage=ctx.storage)
    vod = await make_vod(ctx, "b1")
    assert vod is not None
    await verify_vod(ctx, vod.id)
    late = published.segments["source"][-1]
    ctx.catalog.record_segments([SegmentRecord("b1", "source", late)])
    again = await make_vod(ctx, "b1")
    assert again is not None and again.state is VodState.COMPLETE
    media = ctx.storage.get("broadcasts/b1/source/vod.m3u8")
    assert media is not None and media.decode().count(".m4s") == 7
    assert ctx.catalog.segment_records("b1") == {}
