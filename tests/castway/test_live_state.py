"""The LiveState contract (castway/live/base.py), run against every backend.

Each test reads as one clause of the contract. ``live`` is a fresh backend, once per
backend; tests about TTLs take the :class:`Harness` around it instead: memory runs on a
manual clock (TTLs expire when the test moves time), Redis on a real redis-server with
short real TTLs that the test waits out by polling with a deadline. Redis-only clauses
(one pub/sub connection, restarts, outages) come last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from castway.events.broadcasts import (
    BROADCASTS_TOPIC,
    BroadcastEnded,
    BroadcastFailed,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.events.handover import HandoverReply, HandoverRequest, Verdict
from castway.events.handover import reply_topic as handover_replies
from castway.events.handover import request_topic as handover_requests
from castway.events.media import MediaUpdate, media_topic
from castway.events.nodes import StopBroadcast, node_commands_topic
from castway.events.topic import Topic
from castway.live import open_live_state
from castway.live.base import (
    LiveState,
    LiveStateError,
    RenditionWindow,
    Subscription,
    SubscriptionClosed,
)
from castway.live.memory import MemoryLiveState
from castway.live.redis import RedisLiveState
from castway.model import (
    Broadcast,
    BroadcastState,
    Node,
    NodeState,
    Part,
    Rendition,
    Segment,
    SourceInfo,
)
from castway.settings import Settings
from tests.fixtures.redis_server import RedisServer

T = TypeVar("T")

BACKENDS = ["memory", "redis"]
LONG_TTL_S = 60.0
SUBSCRIPTION_MAXSIZE = 8
DEADLINE_S = 10.0


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    live: LiveState
    backend: str
    short_ttl_s: float
    clock: ManualClock | None = None
    redis_url: str | None = None

    def elapse(self, seconds: float) -> None:
        """Let ``seconds`` pass: moves the manual clock; real time passes by itself
        (follow with ``eventually``)."""
        if self.clock is not None:
            self.clock.now += seconds

    async def outlive(self, seconds: float) -> None:
        """Make sure ``seconds`` have passed, to show that something did NOT expire."""
        if self.clock is not None:
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)


def make_backend(backend: str, request: pytest.FixtureRequest,
                 *, subscription_maxsize: int = SUBSCRIPTION_MAXSIZE) -> Harness:
    if backend == "memory":
        clock = ManualClock()
        live = MemoryLiveState(clock=clock, subscription_maxsize=subscription_maxsize)
        return Harness(live, backend, short_ttl_s=1.0, clock=clock)
    if backend == "redis":
        url: str = request.getfixturevalue("redis_url")
        live_redis = RedisLiveState(url, subscription_maxsize=subscription_maxsize)
        return Harness(live_redis, backend, short_ttl_s=0.2, redis_url=url)
    raise AssertionError(f"unknown backend {backend}")


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = make_backend(request.param, request)
    try:
        yield harness
    finally:
        await harness.live.close()


@pytest.fixture
def live(harness: Harness) -> LiveState:
    """The backend under test (memory or redis)."""
    return harness.live


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool],
                     deadline_s: float = DEADLINE_S) -> T:
    """Poll ``probe`` until ``check`` holds (TTL expiry in real time), or fail."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {deadline_s}s; last value {value!r}")
        await asyncio.sleep(0.02)


T0 = datetime(2026, 11, 24, 19, 0, 0, 123456, tzinfo=UTC)


def broadcast(bid: str = "b1", channel: str = "alice", **kw: Any) -> Broadcast:
    kw.setdefault("started_at", T0)
    return Broadcast(id=bid, channel=channel, node_id="n1", **kw)


def node(nid: str = "n1", **kw: Any) -> Node:
    kw.setdefault("heartbeat_at", T0)
    return Node(id=nid, image_version="v1", address="10.0.0.1:1935", **kw)


def segment(msn: int, bid: str = "b1", rendition: str = "720p", **kw: Any) -> Segment:
    return Segment(msn=msn, duration_s=2.002, key=f"broadcasts/{bid}/{rendition}/{msn}.m4s",
                   start_pts_s=msn * 2.002, program_date_time=T0 + timedelta(seconds=2 * msn),
                   **kw)


# --- channel ownership ---------------------------------------------------------------

async def test_claim_is_exclusive_and_reports_the_current_owner(live: LiveState) -> None:
    assert await live.claim_channel("alice", "conn-1", LONG_TTL_S) is None
    assert await live.claim_channel("alice", "conn-2", LONG_TTL_S) == "conn-1"
    assert await live.claim_channel("bob", "conn-2", LONG_TTL_S) is None


async def test_owner_may_claim_again_and_refresh(live: LiveState) -> None:
    assert await live.claim_channel("alice", "conn-1", LONG_TTL_S) is None
    assert await live.claim_channel("alice", "conn-1", LONG_TTL_S) is None
    assert await live.refresh_claim("alice", "conn-1", LONG_TTL_S) is True
    assert await live.refresh_claim("alice", "conn-2", LONG_TTL_S) is False
    assert await live.refresh_claim("nobody-claimed-this", "conn-1", LONG_TTL_S) is False


async def test_release_by_a_non_owner_is_ignored(live: LiveState) -> None:
    await live.claim_channel("alice", "conn-1", LONG_TTL_S)
    await live.release_claim("alice", "conn-2")
    assert await live.claim_channel("alice", "conn-2", LONG_TTL_S) == "conn-1"
    await live.release_claim("alice", "conn-1")
    assert await live.claim_channel("alice", "conn-2", LONG_TTL_S) is None


async def test_a_claim_is_transferred_only_by_its_owner(live: LiveState) -> None:
    await live.claim_channel("alice", "conn-1", LONG_TTL_S)
    assert await live.transfer_claim("alice", "conn-2", "conn-3", LONG_TTL_S) is False
    assert await live.claim_channel("alice", "conn-3", LONG_TTL_S) == "conn-1"
    assert await live.transfer_claim("alice", "conn-1", "conn-2", LONG_TTL_S) is True
    assert await live.claim_channel("alice", "conn-1", LONG_TTL_S) == "conn-2"
    assert await live.refresh_claim("alice", "conn-2", LONG_TTL_S) is True
    assert await live.transfer_claim("nobody-claimed-this", "conn-1", "conn-2",
                                     LONG_TTL_S) is False
    assert await live.claim_channel("nobody-claimed-this", "conn-9", LONG_TTL_S) is None


async def test_a_transferred_claim_lives_the_new_ttl(harness: Harness) -> None:
    await harness.live.claim_channel("alice", "conn-1", LONG_TTL_S)
    assert await harness.live.transfer_claim("alice", "conn-1", "conn-2", harness.short_ttl_s)
    harness.elapse(harness.short_ttl_s)
    await eventually(lambda: harness.live.claim_channel("alice", "conn-3", LONG_TTL_S),
                     lambda owner: owner is None)


async def test_an_unrefreshed_claim_expires(harness: Harness) -> None:
    await harness.live.claim_channel("alice", "dead-node", harness.short_ttl_s)
    harness.elapse(harness.short_ttl_s)
    await eventually(lambda: harness.live.claim_channel("alice", "conn-2", LONG_TTL_S),
                     lambda owner: owner is None)
    assert await harness.live.refresh_claim("alice", "dead-node", LONG_TTL_S) is False


async def test_refresh_extends_a_claim(harness: Harness) -> None:
    await harness.live.claim_channel("alice", "conn-1", harness.short_ttl_s)
    assert await harness.live.refresh_claim("alice", "conn-1", LONG_TTL_S)
    await harness.outlive(harness.short_ttl_s * 2)
    assert await harness.live.claim_channel("alice", "conn-2", LONG_TTL_S) == "conn-1"


# --- live broadcasts -----------------------------------------------------------------

async def test_broadcast_round_trips_exactly(live: LiveState) -> None:
    b = broadcast(source=SourceInfo(video_codec="h264", audio_codec="aac", width=1920,
                                    height=1080, fps=29.97, audio_sample_rate=48000),
                  renditions=(Rendition("source", 1920, 1080, 29.97, None,
                                        codecs="avc1.640028,mp4a.40.2", bandwidth_bps=6_000_000),
                              Rendition("360p", 640, 360, 30.0, 800.0)))
    await live.put_broadcast(b)
    assert await live.get_broadcast("b1") == b
    assert await live.get_broadcast("missing") is None


async def test_update_broadcast_replaces_only_the_given_fields(live: LiveState) -> None:
    assert await live.update_broadcast("missing", state=BroadcastState.ENDED) is None
    assert await live.get_broadcast("missing") is None
    await live.put_broadcast(broadcast("b1", source=SourceInfo(video_codec="h264")))
    ended = await live.update_broadcast("b1", state=BroadcastState.ENDED, ended_at=T0)
    assert ended == broadcast("b1", source=SourceInfo(video_codec="h264"),
                              state=BroadcastState.ENDED, ended_at=T0)
    assert await live.get_broadcast("b1") == ended
    for bad in ({"nonsense": 1}, {"id": "b2"}, {"channel": "bob"}):
        with pytest.raises(TypeError):
            await live.update_broadcast("b1", **bad)
    assert await live.get_broadcast("b1") == ended


async def test_concurrent_updates_of_different_fields_all_land(live: LiveState) -> None:
    # The transcoder records renditions while ingest records the source and the end:
    # with get + put one of them would overwrite the other.
    renditions = (Rendition("source", 1280, 720, 30.0, None), Rendition("360p", 640, 360,
                                                                        30.0, 800.0))
    source = SourceInfo(video_codec="h264", audio_codec="aac", width=1280, height=720)
    for round_ in range(20):
        bid = f"b{round_}"
        await live.put_broadcast(broadcast(bid))
        await asyncio.gather(
            live.update_broadcast(bid, source=source),
            live.update_broadcast(bid, state=BroadcastState.ENDED, ended_at=T0),
            live.update_broadcast(bid, renditions=renditions),
            live.put_broadcast(broadcast(f"other{round_}", "bob")))
        assert await live.get_broadcast(bid) == broadcast(
            bid, renditions=renditions, source=source, state=BroadcastState.ENDED,
            ended_at=T0)


async def test_live_broadcast_is_the_channels_current_live_one(live: LiveState) -> None:
    assert await live.live_broadcast("alice") is None
    first = broadcast("b1", "alice")
    await live.put_broadcast(first)
    await live.put_broadcast(broadcast("b2", "bob"))
    assert await live.live_broadcast("alice") == first
    ended = replace(first, state=BroadcastState.ENDED, ended_at=T0 + timedelta(hours=1))
    await live.put_broadcast(ended)
    assert await live.live_broadcast("alice") is None
    assert await live.get_broadcast("b1") == ended
    second = broadcast("b3", "alice", started_at=T0 + timedelta(hours=2))
    await live.put_broadcast(second)
    assert await live.live_broadcast("alice") == second
    assert [b.id for b in await live.list_broadcasts()] == ["b1", "b2", "b3"]


async def test_remove_broadcast_forgets_window_media_and_stats_but_not_the_log(
        live: LiveState) -> None:
    await live.put_broadcast(broadcast("b1"))
    await live.put_broadcast(broadcast("b2", "bob"))
    for bid in ("b1", "b2"):
        await live.put_window(bid, "720p", RenditionWindow(segments=(), next_msn=0))
        await live.put_media(f"broadcasts/{bid}/720p/0.m4s", b"seg", LONG_TTL_S)
        await live.put_stats(bid, {"viewers": 3.0})
        await live.append_segment_log(bid, "720p", segment(0, bid))
    await live.remove_broadcast("b1")
    assert await live.get_broadcast("b1") is None
    assert await live.get_window("b1", "720p") is None
    assert await live.get_media("broadcasts/b1/720p/0.m4s") is None
    assert await live.get_stats("b1") == {}
    assert await live.segment_log("b1", "720p") == [segment(0, "b1")]
    assert [b.id for b in await live.list_broadcasts()] == ["b2"]
    assert await live.get_window("b2", "720p") is not None
    assert await live.get_media("broadcasts/b2/720p/0.m4s") == b"seg"
    assert await live.get_stats("b2") == {"viewers": 3.0}
    await live.remove_broadcast("never-existed")


async def test_publishes_are_counted_once_each_from_their_start_even_once_removed(
        live: LiveState) -> None:
    t0 = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
    for i, minutes in enumerate((0, 5, 9)):
        await live.put_broadcast(replace(broadcast(f"b{i}", f"c{i}"),
                                         started_at=t0 + timedelta(minutes=minutes)))
    # written again (a stats update, a move to another node, its end): still one publish
    moved = replace(broadcast("b1", "c1"), started_at=t0 + timedelta(minutes=5),
                    node_id="n2", state=BroadcastState.ENDED)
    await live.put_broadcast(moved)
    await live.remove_broadcast("b0")  # archived: gone from the list, not from the count
    assert await live.publishes_since(t0) == 3
    assert await live.publishes_since(t0 + timedelta(minutes=5)) == 2
    assert await live.publishes_since(t0 + timedelta(minutes=10)) == 0
    # a publish an hour later forgets what is older than the log keeps
    await live.put_broadcast(replace(broadcast("b3", "c3"),
                                     started_at=t0 + timedelta(minutes=65)))
    assert await live.publishes_since(t0 - timedelta(hours=1)) == 3


async def test_stats_are_replaced_whole(live: LiveState) -> None:
    assert await live.get_stats("b1") == {}
    await live.put_stats("b1", {"viewers": 12.0, "bitrate_kbps": 4500.5, "state": "live"})
    assert await live.get_stats("b1") == {"viewers": 12.0, "bitrate_kbps": 4500.5,
                                            "state": "live"}
    await live.put_stats("b1", {"viewers": 13.0})
    assert await live.get_stats("b1") == {"viewers": 13.0}


# --- nodes ---------------------------------------------------------------------------

async def test_heartbeat_lists_the_latest_node_state(live: LiveState) -> None:
    assert await live.list_nodes() == []
    await live.heartbeat(node("n1"), LONG_TTL_S)
    await live.heartbeat(node("n2", state=NodeState.ACTIVE), LONG_TTL_S)
    n1_later = node("n1", state=NodeState.DRAINING, active_broadcasts=3, cpu=0.5,
                    heartbeat_at=T0 + timedelta(seconds=10))
    await live.heartbeat(n1_later, LONG_TTL_S)
    assert sorted(await live.list_nodes(), key=lambda n: n.id) == [
        n1_later, node("n2", state=NodeState.ACTIVE)]


async def test_a_silent_node_vanishes_after_its_ttl(harness: Harness) -> None:
    await harness.live.heartbeat(node("alive"), LONG_TTL_S)
    await harness.live.heartbeat(node("silent"), harness.short_ttl_s)
    harness.elapse(harness.short_ttl_s)
    nodes = await eventually(harness.live.list_nodes, lambda ns: len(ns) == 1)
    assert [n.id for n in nodes] == ["alive"]


async def test_node_commands(live: LiveState) -> None:
    assert await live.get_node_command("n1") is None
    await live.set_node_command("n1", "drain")
    assert await live.get_node_command("n1") == "drain"
    await live.set_node_command("n1", "stop")
    assert await live.get_node_command("n1") == "stop"
    assert await live.get_node_command("n2") is None
    await live.set_node_command("n1", None)
    assert await live.get_node_command("n1") is None


# --- the live segment window ---------------------------------------------------------

async def test_media_bytes_round_trip_and_expire(harness: Harness) -> None:
    payload = bytes(range(256)) * 1000
    await harness.live.put_media("broadcasts/b1/720p/init.mp4", payload, LONG_TTL_S)
    await harness.live.put_media("broadcasts/b1/720p/7.2.m4s", b"\x00part", harness.short_ttl_s)
    assert await harness.live.get_media("broadcasts/b1/720p/init.mp4") == payload
    assert await harness.live.get_media("broadcasts/b1/720p/missing.m4s") is None
    harness.elapse(harness.short_ttl_s)
    await eventually(lambda: harness.live.get_media("broadcasts/b1/720p/7.2.m4s"),
                     lambda data: data is None)
    assert await harness.live.get_media("broadcasts/b1/720p/init.mp4") == payload


async def test_media_put_again_replaces_bytes_and_ttl(harness: Harness) -> None:
    await harness.live.put_media("k", b"old", harness.short_ttl_s)
    await harness.live.put_media("k", b"new", LONG_TTL_S)
    await harness.outlive(harness.short_ttl_s * 2)
    assert await harness.live.get_media("k") == b"new"


async def test_window_round_trips_exactly(live: LiveState) -> None:
    parts = tuple(Part(msn=11, index=i, duration_s=0.5005, independent=i == 0,
                       key=f"broadcasts/b1/720p/11.{i}.m4s") for i in range(3))
    window = RenditionWindow(
        segments=(segment(9, init_key="broadcasts/b1/720p/init.mp4", size=123_456),
                  segment(10, discontinuity=True, discontinuity_seq=1, parts=parts)),
        next_msn=11, parts=parts, preload_hint="broadcasts/b1/720p/11.3.m4s",
        target_duration_s=2.0, part_target_s=0.5, init_key="broadcasts/b1/720p/init.mp4",
        discontinuity_seq=0)
    assert await live.get_window("b1", "720p") is None
    await live.put_window("b1", "720p", window)
    assert await live.get_window("b1", "720p") == window
    assert await live.get_window("b1", "360p") is None
    final = replace(window, parts=(), preload_hint=None, ended=True)
    await live.put_window("b1", "720p", final)
    assert await live.get_window("b1", "720p") == final


async def test_segment_log_is_append_only_and_read_from_an_offset(live: LiveState) -> None:
    assert await live.segment_log("b1", "720p") == []
    for msn in range(5):
        await live.append_segment_log("b1", "720p", segment(msn))
    await live.append_segment_log("b1", "360p", segment(0, rendition="360p"))
    await live.append_segment_log("b2", "720p", segment(0, bid="b2"))
    assert await live.segment_log("b1", "720p") == [segment(m) for m in range(5)]
    assert await live.segment_log("b1", "720p", start=3) == [segment(3), segment(4)]
    assert await live.segment_log("b1", "720p", start=5) == []
    assert await live.segment_log("b1", "720p", start=50) == []
    assert await live.segment_log("b1", "360p") == [segment(0, rendition="360p")]
    await live.drop_segment_log("b1")
    assert await live.segment_log("b1", "720p") == []
    assert await live.segment_log("b1", "360p") == []
    assert await live.segment_log("b2", "720p") == [segment(0, bid="b2")]


# --- events --------------------------------------------------------------------------
# Typed topics (castway.events); both backends carry the same JSON (see the wire test).

async def next_event(sub: Subscription[T], timeout_s: float = DEADLINE_S) -> T:
    return await asyncio.wait_for(sub.get(), timeout_s)


def update(msn: int, part: int | None = None, rendition: str = "720p") -> MediaUpdate:
    return MediaUpdate(rendition, msn, part)


async def test_events_arrive_in_publish_order(live: LiveState) -> None:
    async with await live.subscribe(media_topic("b1")) as sub:
        for msn in range(SUBSCRIPTION_MAXSIZE):
            await live.publish(media_topic("b1"), update(msn))
        got = [await next_event(sub) for _ in range(SUBSCRIPTION_MAXSIZE)]
    assert got == [update(msn) for msn in range(SUBSCRIPTION_MAXSIZE)]


async def test_every_message_arrives_exactly_as_published(live: LiveState) -> None:
    sent: list[tuple[Topic[Any], Any]] = [
        (BROADCASTS_TOPIC, BroadcastStarted("b1", "alice")),
        (BROADCASTS_TOPIC, BroadcastResumed("b1", "alice", "node-b")),
        (BROADCASTS_TOPIC, BroadcastEnded("b1", "alice")),
        (BROADCASTS_TOPIC, BroadcastFailed("b1", "alice", "ingest node n1 lost")),
        (media_topic("b1"), MediaUpdate("720p", 3, 1)),
        (media_topic("b1"), MediaUpdate("720p", 4)),
        (media_topic("b1"), BroadcastEnded("b1", "alice")),
        (node_commands_topic("n1"), StopBroadcast("b1")),
        (handover_requests("n1"), HandoverRequest("r1", "alice", "b1", "conn-7", "n2")),
        (handover_replies("r1"), HandoverReply("r1", Verdict.REFUSED, "busy")),
    ]
    for topic, message in sent:
        async with await live.subscribe(topic) as sub:
            await live.publish(topic, message)
            assert await next_event(sub) == message


async def test_publish_says_whether_anyone_heard_it(live: LiveState) -> None:
    topic = node_commands_topic("n1")
    assert await live.publish(topic, StopBroadcast("b1")) == 0  # nobody listens: fine
    async with await live.subscribe(topic), await live.subscribe(topic):
        # Memory counts subscriptions, Redis subscribed processes (this one).
        assert await live.publish(topic, StopBroadcast("b1")) >= 1
        assert await live.publish(node_commands_topic("n2"), StopBroadcast("b1")) == 0


async def test_subscribe_then_publish_has_no_race(live: LiveState) -> None:
    # The origin's blocking playlist reload: subscribe, check the window, then wait.
    for attempt in range(20):
        topic = media_topic(f"b{attempt}")
        sub = await live.subscribe(topic)
        await live.publish(topic, update(attempt, 0))
        assert await next_event(sub) == update(attempt, 0)
        await sub.close()


async def test_topics_are_separate(live: LiveState) -> None:
    async with await live.subscribe(BROADCASTS_TOPIC) as broadcasts, \
            await live.subscribe(media_topic("b1")) as media:
        await live.publish(media_topic("b1"), update(1, 2))
        await live.publish(BROADCASTS_TOPIC, BroadcastStarted("b1", "alice"))
        assert await next_event(broadcasts) == BroadcastStarted("b1", "alice")
        assert await next_event(media) == update(1, 2)
        await live.publish(media_topic("b2"), update(9, 0))
        await live.publish(media_topic("b1"), update(2, 0))
        assert await next_event(media) == update(2, 0)


async def test_a_full_subscription_drops_the_oldest_and_counts(live: LiveState) -> None:
    topic = node_commands_topic("n1")
    async with await live.subscribe(topic) as slow, await live.subscribe(topic) as fast:
        total = SUBSCRIPTION_MAXSIZE + 5
        for i in range(total):
            await live.publish(topic, StopBroadcast(f"b{i}"))
            assert await next_event(fast) == StopBroadcast(f"b{i}")
        await eventually(lambda: _value(slow.dropped), lambda d: d == 5)
        got = [(await next_event(slow)).broadcast_id for _ in range(SUBSCRIPTION_MAXSIZE)]
        assert got == [f"b{i}" for i in range(5, total)]
        assert fast.dropped == 0


async def _value(value: T) -> T:
    return value


async def test_resubscribing_right_after_the_last_unsubscribe_still_gets_events(
        live: LiveState) -> None:
    topic = node_commands_topic("n1")
    for i in range(10):
        first = await live.subscribe(topic)
        await first.close()
        second = await live.subscribe(topic)
        await live.publish(topic, StopBroadcast(f"b{i}"))
        assert await next_event(second) == StopBroadcast(f"b{i}")
        await second.close()


async def test_concurrent_subscribe_and_close_churn_leaves_working_subscriptions(
        harness: Harness) -> None:
    live = harness.live
    topics = [node_commands_topic(f"churn{i}") for i in range(5)]

    async def churn(worker: int) -> None:
        for step in range(20):
            sub = await live.subscribe(topics[(worker + step) % len(topics)])
            if step % 3:
                await asyncio.sleep(0)
            await sub.close()

    await asyncio.gather(*(churn(w) for w in range(50)))
    subs = [await live.subscribe(t) for t in topics]
    for i, topic in enumerate(topics):
        await live.publish(topic, StopBroadcast(f"b{i}"))
    assert [(await next_event(sub)).broadcast_id for sub in subs] == [
        f"b{i}" for i in range(len(topics))]
    for sub in subs:
        await sub.close()
    if harness.redis_url is not None:  # Redis ends up subscribed to nothing
        await eventually(lambda: redis_channels(str(harness.redis_url)), lambda c: c == [])


async def test_one_publish_wakes_every_subscriber(live: LiveState) -> None:
    topic = media_topic("popular")
    subs = [await live.subscribe(topic) for _ in range(2000)]
    waiters = [asyncio.ensure_future(s.get()) for s in subs]
    await asyncio.sleep(0)
    await live.publish(topic, update(42, 1))
    events = await asyncio.wait_for(asyncio.gather(*waiters), DEADLINE_S)
    assert all(e == update(42, 1) for e in events)
    for s in subs:
        await s.close()


async def test_a_closed_subscription_ends_and_receives_nothing(live: LiveState) -> None:
    sub = await live.subscribe(BROADCASTS_TOPIC)
    other = await live.subscribe(BROADCASTS_TOPIC)
    waiter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    await sub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, DEADLINE_S)
    await live.publish(BROADCASTS_TOPIC, BroadcastStarted("b1", "alice"))
    assert await next_event(other) == BroadcastStarted("b1", "alice")
    with pytest.raises(SubscriptionClosed):
        await sub.get()
    assert [e async for e in sub] == []
    await sub.close()  # idempotent
    await other.close()


async def test_async_iteration_yields_events_until_closed(live: LiveState) -> None:
    topic = node_commands_topic("n1")
    sub = await live.subscribe(topic)
    for i in range(3):
        await live.publish(topic, StopBroadcast(f"b{i}"))
    seen: list[str] = []
    async for event in sub:
        seen.append(event.broadcast_id)
        if len(seen) == 3:
            await sub.close()
    assert seen == ["b0", "b1", "b2"]


async def test_closing_the_live_state_ends_waiting_subscribers(live: LiveState) -> None:
    sub = await live.subscribe(BROADCASTS_TOPIC)
    waiter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    await live.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, DEADLINE_S)
    with pytest.raises(LiveStateError):
        await live.subscribe(BROADCASTS_TOPIC)
    assert await live.ping() is False
    await live.close()  # idempotent


async def test_ping_answers_while_open(live: LiveState) -> None:
    assert await live.ping() is True


# --- memory-only: the media byte budget ----------------------------------------------

async def test_memory_media_budget_evicts_expired_first_then_oldest() -> None:
    clock = ManualClock()
    live = MemoryLiveState(clock=clock, media_budget_bytes=100)
    await live.put_media("a", b"a" * 30, ttl_s=LONG_TTL_S)
    await live.put_media("short", b"s" * 30, ttl_s=1.0)
    await live.put_media("b", b"b" * 30, ttl_s=LONG_TTL_S)
    clock.now += 0.5  # no sweep yet: "short" has not expired
    assert live.media_bytes == 90
    clock.now += 0.6  # "short" expired
    await live.put_media("c", b"c" * 30, ttl_s=LONG_TTL_S)
    assert live.media_evictions == 0  # the expired one made room
    assert await live.get_media("a") == b"a" * 30
    await live.put_media("d", b"d" * 30, ttl_s=LONG_TTL_S)  # over: the oldest goes
    assert live.media_evictions == 1
    assert await live.get_media("a") is None
    assert [await live.get_media(k) for k in "bcd"] == [b"b" * 30, b"c" * 30, b"d" * 30]
    assert live.media_bytes == 90
    await live.put_media("huge", b"h" * 101, ttl_s=LONG_TTL_S)
    assert live.media_rejected == 1
    assert await live.get_media("huge") is None
    assert live.media_bytes == 90
    await live.close()


class _LeakyCodec:
    """A codec that puts a datetime on the wire, as a careless custom one might."""

    def encode(self, message: datetime) -> dict[str, Any]:
        return {"when": message}

    def decode(self, event: Mapping[str, Any]) -> datetime | None:
        return None


async def test_messages_must_encode_to_json(live: LiveState) -> None:
    topic: Topic[datetime] = Topic("stamps", _LeakyCodec())
    async with await live.subscribe(topic):
        with pytest.raises(TypeError):
            await live.publish(topic, T0)


def test_open_live_state_defaults_to_memory() -> None:
    assert isinstance(open_live_state(Settings(redis_url=None)), MemoryLiveState)


def test_open_live_state_uses_redis_when_configured(redis_url: str) -> None:
    assert isinstance(open_live_state(Settings(redis_url=redis_url)), RedisLiveState)


# --- redis-only: one pub/sub connection, outages, reconnects -------------------------

async def pubsub_clients(url: str) -> list[dict[str, str]]:
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(url)
    try:
        return list(await client.client_list(_type="pubsub"))
    finally:
        await client.aclose()  # type: ignore[attr-defined]


async def redis_channels(url: str) -> list[Any]:
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(url)
    try:
        channels: list[Any] = await client.pubsub_channels()
        return channels
    finally:
        await client.aclose()  # type: ignore[attr-defined]


async def test_redis_uses_one_pubsub_connection_for_all_subscribers(redis_url: str) -> None:
    live = RedisLiveState(redis_url)
    try:
        subs = [await live.subscribe(media_topic(f"b{i % 50}")) for i in range(2000)]
        clients = await pubsub_clients(redis_url)
        assert len(clients) == 1
        assert clients[0]["sub"] == "50"
        await live.publish(media_topic("b7"), update(1, 0))
        woken = [await next_event(s) for s in subs[7::50]]
        assert len(woken) == 40
        for s in subs:
            await s.close()
        # The last local subscriber of a topic leaving unsubscribes it in Redis.
        await eventually(lambda: redis_channels(redis_url), lambda chans: chans == [])
        assert live.subscriber_count(media_topic("b7")) == 0
    finally:
        await live.close()


async def test_redis_subscriptions_survive_a_server_restart(
        restartable_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="castway.live.redis")
    live = RedisLiveState(restartable_redis.url, subscribe_timeout_s=DEADLINE_S)
    try:
        sub = await live.subscribe(BROADCASTS_TOPIC)
        waiting = asyncio.ensure_future(sub.get())
        await asyncio.to_thread(restartable_redis.restart)
        # Pub/sub keeps no history: events published before the reader re-subscribed
        # are lost, so keep publishing until one gets through.
        deadline = time.monotonic() + DEADLINE_S
        n = 0
        while not waiting.done():
            n += 1
            with contextlib.suppress(LiveStateError):
                await live.publish(BROADCASTS_TOPIC, BroadcastResumed("b1", "alice", f"n{n}"))
            await asyncio.wait({waiting}, timeout=0.05)
            assert time.monotonic() < deadline, "no event after the restart"
        assert isinstance(waiting.result(), BroadcastResumed)
        assert live.reconnects == 1
        assert "reconnected" in caplog.text
        assert await live.ping()
        fresh = await live.subscribe(node_commands_topic("n1"))
        await live.publish(node_commands_topic("n1"), StopBroadcast("b1"))
        assert await next_event(fresh) == StopBroadcast("b1")
        assert len(await pubsub_clients(restartable_redis.url)) == 1
        await live.put_broadcast(broadcast("b1"))
        assert await live.get_broadcast("b1") == broadcast("b1")
    finally:
        await live.close()


async def test_redis_idle_pubsub_connection_is_kept_alive_by_ping(redis_url: str) -> None:
    live = RedisLiveState(redis_url, health_interval_s=0.2)
    try:
        sub = await live.subscribe(node_commands_topic("n1"))
        await eventually(lambda: _value(live.pubsub_pings), lambda pings: pings >= 3)
        await live.publish(node_commands_topic("n1"), StopBroadcast("b1"))
        assert await next_event(sub) == StopBroadcast("b1")
        assert live.reconnects == 0
    finally:
        await live.close()


async def test_redis_outage_is_a_live_state_error_not_a_hang(
        restartable_redis: RedisServer) -> None:
    live = RedisLiveState(restartable_redis.url, subscribe_timeout_s=0.5)
    try:
        await live.put_broadcast(broadcast("b1"))
        await asyncio.to_thread(restartable_redis.stop)
        assert await live.ping() is False
        with pytest.raises(LiveStateError):
            await live.get_broadcast("b1")
        commands = node_commands_topic("n1")
        with pytest.raises(LiveStateError):
            await live.subscribe(commands)
        assert live.subscriber_count(commands) == 0
        pending = asyncio.ensure_future(live.subscribe(BROADCASTS_TOPIC))
        await asyncio.sleep(0)
        assert live.subscriber_count(BROADCASTS_TOPIC) == 1
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert live.subscriber_count(BROADCASTS_TOPIC) == 0
        await asyncio.to_thread(restartable_redis.start)
        assert await live.ping() is True
        assert await live.get_broadcast("b1") is None  # no persistence: a fresh server
        sub = await live.subscribe(commands)
        await live.publish(commands, StopBroadcast("b1"))
        assert await next_event(sub) == StopBroadcast("b1")
    finally:
        await live.close()


async def test_a_frozen_redis_fails_each_operation_within_its_timeout(
        restartable_redis: RedisServer) -> None:
    """SIGSTOPped: connections are accepted and never answered. Every operation fails
    within ``operation_timeout_s``, not after the socket timeout times the retries."""
    live = RedisLiveState(restartable_redis.url, operation_timeout_s=1.0)
    try:
        await live.put_broadcast(broadcast("b1"))
        restartable_redis.freeze()
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: live.get_broadcast("b1"), lambda: live.live_broadcast("c"),
                lambda: live.update_broadcast("b1", node_id="n2")]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(LiveStateError, match="no answer within"):
                    await call()
                assert time.monotonic() - started < 3.0
            started = time.monotonic()
            assert await live.ping() is False
            assert time.monotonic() - started < 3.0
        finally:
            restartable_redis.thaw()
        assert await live.get_broadcast("b1") == broadcast("b1")  # and back after it
    finally:
        await live.close()


async def test_redis_keys_live_under_the_prefix(redis_url: str) -> None:
    live = RedisLiveState(redis_url, prefix="tenant-a:")
    other = RedisLiveState(redis_url, prefix="tenant-b:")
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(redis_url)
    try:
        await live.put_broadcast(broadcast("b1"))
        await live.put_media("broadcasts/b1/720p/0.m4s", b"x", LONG_TTL_S)
        await live.heartbeat(node("n1"), LONG_TTL_S)
        assert await other.get_broadcast("b1") is None
        keys = [k.decode() async for k in client.scan_iter()]
        assert keys and all(k.startswith("tenant-a:") for k in keys)
    finally:
        await live.close()
        await other.close()
        await client.aclose()  # type: ignore[attr-defined]


async def test_redis_events_that_are_none_of_the_topics_messages_are_ignored(
        redis_url: str) -> None:
    live = RedisLiveState(redis_url)
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(redis_url)
    try:
        sub = await live.subscribe(BROADCASTS_TOPIC)
        for foreign in (b"\xff not json", b"[1, 2]", b'{"type": "paused"}',
                        b'{"type": "ended", "broadcast_id": 7, "channel": "alice"}',
                        b'{"type": "ended", "broadcast_id": "", "channel": "alice"}',
                        b'{"type": "ended", "channel": "alice"}'):
            await client.publish("castway:broadcasts", foreign)
        await live.publish(BROADCASTS_TOPIC, BroadcastEnded("b1", "alice"))
        assert await next_event(sub) == BroadcastEnded("b1", "alice")
        assert sub.dropped == 0
    finally:
        await live.close()
        await client.aclose()  # type: ignore[attr-defined]


async def test_redis_wire_is_the_json_every_castway_version_reads(redis_url: str) -> None:
    """What goes over Redis (and round-trips in memory): flat JSON objects, as they were
    before the messages had types, so processes of both versions read each other in a
    rolling deploy."""
    live = RedisLiveState(redis_url)
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("castway:broadcasts", "castway:media:b1",
                               "castway:handover-reply:r1")
        sent: list[tuple[Topic[Any], Any]] = [
                (BROADCASTS_TOPIC, BroadcastResumed("b1", "alice", "node-b")),
                (BROADCASTS_TOPIC, BroadcastFailed("b1", "alice", "lost")),
                (media_topic("b1"), MediaUpdate("720p", 3, None)),
                (media_topic("b1"), BroadcastEnded("b1", "alice")),
                (handover_replies("r1"), HandoverReply("r1", Verdict.GRANTED))]
        for topic, message in sent:
            await live.publish(topic, message)
        wire: list[Any] = []
        while len(wire) < len(sent):
            got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=DEADLINE_S)
            if got is not None:
                wire.append(json.loads(got["data"]))
        assert wire == [
            {"type": "resumed", "broadcast_id": "b1", "channel": "alice", "node_id": "node-b"},
            {"type": "failed", "broadcast_id": "b1", "channel": "alice", "reason": "lost"},
            {"rendition": "720p", "msn": 3, "part": None},
            {"type": "ended", "broadcast_id": "b1", "channel": "alice"},
            {"type": "granted", "request_id": "r1", "reason": ""}]
    finally:
        await pubsub.aclose()  # type: ignore[attr-defined]
        await live.close()
        await client.aclose()  # type: ignore[attr-defined]
