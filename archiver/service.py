"""The archiver service (:class:`ArchiverService`): broadcast events in, archive tasks run
here (embedded) or enqueued to Celery (distributed).

Design: docs/archiver.md, "Modes" and "Instant VOD".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from archiver.clips import make_clip
from archiver.context import ArchiveContext, NotReady
from archiver.instant_vod import make_vod
from archiver.mp4_export import export_mp4
from archiver.posters import make_poster
from archiver.reconcile import Reconciler, pending_too_long
from archiver.retention import expire_vods
from archiver.segment_logs import FollowedLogs, follow_logs
from archiver.thumbnails import make_thumbnails
from archiver.verify import verify_vod
from castway.catalog.base import Catalog, CatalogError
from castway.events.archive import (
    ARCHIVE_REQUESTS_TOPIC,
    ArchiveRequest,
    ClipRefused,
    ClipRequested,
    ExportRequested,
    clip_topic,
)
from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEnd, BroadcastEvent
from castway.live.base import LiveState, LiveStateError, Subscription, SubscriptionClosed
from castway.model import BroadcastState, new_id, utcnow
from castway.settings import Settings
from castway.storage.base import Storage, StorageError
from castway.storage.uploader import Uploader

logger = logging.getLogger(__name__)

T = TypeVar("T")

POSTER_INTERVAL_S = 30.0
EXPIRE_INTERVAL_S = 3600.0
MAX_READY_EVENTS = 1024
FOLLOW_INTERVAL_S = 10.0
FLUSH_BEFORE_VERIFY_S = 5.0
MAX_FOLLOWED = 256  # live broadcasts whose segment logs are followed (memory bound)
MAX_JOBS = 64  # broadcasts archived at once; more wait for a slot
# One export of a VOD at a time across every archiver that hears the request: the first
# to claim ``export:{vod_id}`` in the live state runs it; the others let it be. A request
# repeated within this long is a duplicate (an export that failed can be asked again
# after it).
EXPORT_CLAIM_S = 300.0
STOP_WAIT_S = 15.0  # a stopping archiver finishes the VODs it started for this long
PENDING_RECHECK_S = 120.0  # distributed: a VOD pending this long is enqueued again
DRAIN_EVENT_S = 0.05
# What an archive task is retried on, here (retrying) and by Celery (autoretry_for): its
# inputs are not there yet (NotReady), or a backend is unavailable (OSError includes
# ConnectionError and TimeoutError). Anything else is a bug or bad data: retrying would
# only repeat it.
RETRYABLE: tuple[type[BaseException], ...] = (
    NotReady, StorageError, LiveStateError, CatalogError, OSError)

# Celery task names (archiver/celery_app.py registers them).
TASK_MAKE_VOD = "castway.archiver.make_vod"
TASK_VERIFY_VOD = "castway.archiver.verify_vod"
TASK_EXPORT_MP4 = "castway.archiver.export_mp4"
TASK_MAKE_THUMBNAILS = "castway.archiver.make_thumbnails"
TASK_REFRESH_POSTERS = "castway.archiver.refresh_posters"
TASK_EXPIRE_VODS = "castway.archiver.expire_vods"


async def retrying(fn: Callable[[], Awaitable[T]], *, what: str, attempts: int = 8,
                   base_s: float = 0.25, max_s: float = 30.0,
                   retryable: tuple[type[BaseException], ...] = RETRYABLE) -> T:
    """``fn()``, retried on ``retryable`` errors with exponential backoff and equal jitter;
    the last error propagates."""
    for attempt in range(attempts):
        try:
            return await fn()
        except retryable as e:
            if attempt == attempts - 1:
                raise
            delay = min(max_s, base_s * 2.0 ** attempt) * (0.5 + 0.5 * random.random())
            logger.info("archive task will retry", extra={"task": what, "attempt": attempt + 1,
                                                          "delay_s": round(delay, 2),
                                                          "error": str(e)})
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


class ArchiverService:
    """Owned by the process that starts it: ``await start()``, ``await stop()``."""

    def __init__(self, settings: Settings, catalog: Catalog, live: LiveState,
                 storage: Storage, uploader: Uploader | None = None, *,
                 celery: Any = None, registry: CollectorRegistry | None = None,
                 poster_interval_s: float = POSTER_INTERVAL_S,
                 expire_interval_s: float = EXPIRE_INTERVAL_S,
                 verify_attempts: int = 40,
                 follow_interval_s: float = FOLLOW_INTERVAL_S,
                 make_vod_here: bool = False,
                 stop_wait_s: float = STOP_WAIT_S) -> None:
        self.settings = settings
        self.ctx = ArchiveContext(settings, catalog, live, storage)
        self.uploader = uploader
        self.celery = celery
        self.poster_interval_s = poster_interval_s
        self.expire_interval_s = expire_interval_s
        self.verify_attempts = verify_attempts
        registry = registry or CollectorRegistry()
        self._vod_latency = Histogram(
            "castway_archiver_vod_ready_seconds",
            "From the broadcast's end event to its VOD playlists in storage.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=registry)
        self._task_failures = Counter("castway_archiver_task_failures",
                                      "Archive tasks that failed after their retries.",
                                      ["task"], registry=registry)
        self.follow_interval_s = follow_interval_s
        self.make_vod_here = make_vod_here
        self._jobs: dict[str, asyncio.Task[None]] = {}
        # Segment logs of live broadcasts, read as they grow (embedded mode), so the end
        # event only has to read the last few segments.
        self._followed: OrderedDict[str, FollowedLogs] = OrderedDict()
        self._slots = asyncio.Semaphore(MAX_JOBS)
        self._loops: list[asyncio.Task[None]] = []
        self._events_task: asyncio.Task[None] | None = None
        self._subscription: Subscription[BroadcastEvent] | None = None
        self._requests: Subscription[ArchiveRequest] | None = None
        self._owner = f"archiver-{new_id()}"  # this service, in export claims
        # Exports this service claimed, when (a claim is re-entrant for its owner: a
        # repeat request reaching the winner is told apart here).
        self._claimed: OrderedDict[str, float] = OrderedDict()
        self._vod_ready: OrderedDict[str, asyncio.Event] = OrderedDict()
        self.stop_wait_s = stop_wait_s
        self.reconciler = Reconciler(catalog, live, heartbeat_ttl_s=settings.heartbeat_ttl_s,
                                     grace_s=settings.heartbeat_ttl_s)
        # An in-process live state was born empty with this process: a node it has
        # never heard of is not running anywhere, so the first sweep need not wait.
        self._first_sweep_grace_s = 0.0 if not settings.redis_url else None

    @property
    def distributed(self) -> bool:
        return self.celery is not None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Subscribed before start() returns: no end event published afterwards is missed.
        self._subscription = await self.ctx.live.subscribe(BROADCASTS_TOPIC)
        self._events_task = asyncio.create_task(self._events(), name="archiver-events")
        self._loops.append(self._events_task)
        self._requests = await self.ctx.live.subscribe(ARCHIVE_REQUESTS_TOPIC)
        self._loops.append(asyncio.create_task(self._listen_requests(),
                                               name="archiver-requests"))
        self._loops.append(asyncio.create_task(self._reconcile(), name="archiver-reconcile"))
        if not self.distributed or self.make_vod_here:
            self._loops.append(asyncio.create_task(self._follow(), name="archiver-follow"))
        if not self.distributed:
            self._loops.append(asyncio.create_task(self._posters(), name="archiver-posters"))
            self._loops.append(asyncio.create_task(self._expiry(), name="archiver-expiry"))
        logger.info("archiver started", extra={"mode": "distributed" if self.distributed
                                               else "embedded"})

    async def stop(self) -> None:
        """Stop; in the embedded mode first finish (for up to ``stop_wait_s``) the VODs of
        the broadcasts that ended on the way down. What is not finished then is made by
        the next start's sweep: the segment records stay until the VOD is complete."""
        if not self.distributed and self._events_task is not None:
            await self._drain_events()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.stop_wait_s):
                    await self.reconcile_now()
            if not await self.idle(self.stop_wait_s):
                logger.warning("stopping with VODs unfinished; the next start makes them",
                               extra={"broadcasts": sorted(self._jobs)})
        for subscription in (self._subscription, self._requests):
            if subscription is not None:
                with contextlib.suppress(Exception):  # a stop after a failed start
                    await subscription.close()
        self._subscription = self._requests = None
        pending = [*self._loops, *self._jobs.values()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops, self._jobs, self._events_task = [], {}, None

    async def _drain_events(self) -> None:
        """Take the end events already delivered but not read yet (the ingest that stopped
        just before us published them)."""
        task = self._events_task
        if task is not None:
            task.cancel()  # read here instead
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        while self._subscription is not None:
            try:
                async with asyncio.timeout(DRAIN_EVENT_S):
                    event = await self._subscription.get()
            except (TimeoutError, LiveStateError):
                return
            await self._on_event(event)

    async def reconcile_now(self, *, grace_s: float | None = None) -> int:
        """One sweep (:mod:`archiver.reconcile`): fail broadcasts whose node is gone, then
        archive every ended or failed broadcast whose VOD is not complete; returns how
        many were handed to archiving."""
        now = utcnow()
        result = await self.reconciler.sweep(now, grace_s=grace_s)
        started = 0
        for broadcast_id in result.to_archive:
            if broadcast_id in self._jobs:
                continue  # being archived here right now
            if self.distributed:
                vod = await asyncio.to_thread(self.ctx.catalog.get_vod, broadcast_id)
                if vod is not None and not pending_too_long(vod.created_at, now,
                                                            PENDING_RECHECK_S):
                    continue  # its verification is probably still retrying in a worker
            logger.info("archiving a broadcast found without a complete VOD",
                        extra={"broadcast_id": broadcast_id})
            await self.broadcast_ended(broadcast_id)
            started += 1
        return started

    async def _reconcile(self) -> None:
        grace_s = self._first_sweep_grace_s
        while True:
            try:
                await self.reconcile_now(grace_s=grace_s)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # catalog or live state down: the next sweep retries
                logger.warning("archive reconciliation failed", extra={"error": str(e)})
            grace_s = None
            await asyncio.sleep(self.settings.archive_reconcile_interval_s)

    async def wait_vod(self, broadcast_id: str, timeout_s: float) -> bool:
        """Wait until this service (embedded) has written the broadcast's VOD playlists."""
        event = self._ready_event(broadcast_id)
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            return False
        return True

    def _ready_event(self, broadcast_id: str) -> asyncio.Event:
        event = self._vod_ready.get(broadcast_id)
        if event is None:
            event = self._vod_ready[broadcast_id] = asyncio.Event()
            while len(self._vod_ready) > MAX_READY_EVENTS:
                self._vod_ready.popitem(last=False)  # the oldest broadcasts' are stale
        return event

    async def idle(self, timeout_s: float) -> bool:
        """Wait until no archive job (embedded) is running; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._jobs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(list(self._jobs.values()), timeout=remaining)
        return True

    # -- events ---------------------------------------------------------------------------

    async def _events(self) -> None:
        subscription = self._subscription
        assert subscription is not None, "start() subscribes first"
        while True:
            try:
                event = await subscription.get()
            except SubscriptionClosed:
                return
            except LiveStateError as e:
                logger.warning("broadcast events unavailable; resubscribing",
                               extra={"error": str(e)})
                await asyncio.sleep(1.0)
                with contextlib.suppress(LiveStateError):
                    subscription = self._subscription = await self.ctx.live.subscribe(
                        BROADCASTS_TOPIC)
                continue
            await self._on_event(event)

    async def _on_event(self, event: BroadcastEvent) -> None:
        if isinstance(event, BroadcastEnd):
            await self.broadcast_ended(event.broadcast_id)

    async def broadcast_ended(self, broadcast_id: str) -> None:
        """Archive a broadcast (also called directly, e.g. by a sweep for missed events)."""
        received = time.monotonic()
        known = self._followed.pop(broadcast_id, None)
        if self.distributed:
            if self.make_vod_here:
                await self._make_vod_then_enqueue(broadcast_id, received, known)
                return
            await asyncio.to_thread(self.celery.send_task, TASK_MAKE_VOD, args=[broadcast_id])
            logger.info("VOD enqueued", extra={"broadcast_id": broadcast_id})
            return
        if broadcast_id in self._jobs:
            return  # a duplicate event: the job in progress covers it
        job = asyncio.create_task(self._archive(broadcast_id, received, known),
                                  name=f"archive-{broadcast_id}")
        self._jobs[broadcast_id] = job
        job.add_done_callback(lambda _t: self._jobs.pop(broadcast_id, None))

    # -- requests (castway.events.archive) ---------------------------------------------------

    async def _listen_requests(self) -> None:
        while True:
            subscription = self._requests
            try:
                if subscription is None:
                    subscription = self._requests = await self.ctx.live.subscribe(
                        ARCHIVE_REQUESTS_TOPIC)
                request = await subscription.get()
            except SubscriptionClosed:
                return
            except LiveStateError as e:
                logger.warning("archive requests unavailable; resubscribing",
                               extra={"error": str(e)})
                self._requests = None
                await asyncio.sleep(1.0)
                continue
            job = asyncio.create_task(self.on_request(request),
                                      name=f"archive-request-{type(request).__name__}")
            key = f"request:{id(job)}"
            self._jobs[key] = job
            job.add_done_callback(functools.partial(self._forget_job, key))

    def _forget_job(self, key: str, _task: asyncio.Task[None]) -> None:
        self._jobs.pop(key, None)

    async def on_request(self, request: ArchiveRequest) -> None:
        """Carry out one request (the listener calls it; so may tests)."""
        try:
            if isinstance(request, ExportRequested):
                now = time.monotonic()
                while self._claimed and now - next(iter(self._claimed.values())) \
                        > EXPORT_CLAIM_S:
                    self._claimed.popitem(last=False)
                if request.vod_id in self._claimed:
                    logger.info("export already running here",
                                extra={"vod_id": request.vod_id})
                    return
                owner = await self.ctx.live.claim_channel(f"export:{request.vod_id}",
                                                          self._owner, EXPORT_CLAIM_S)
                if owner is not None:
                    logger.info("export already claimed", extra={
                        "vod_id": request.vod_id, "by": owner})
                    return
                self._claimed[request.vod_id] = now
                await self.request_export(request.vod_id)
                logger.info("export started", extra={"vod_id": request.vod_id})
            elif isinstance(request, ClipRequested):
                try:
                    answer = await retrying(lambda: make_clip(self.ctx, request),
                                            what="make_clip", attempts=3, base_s=0.1)
                except Exception as e:
                    logger.error("clip failed", extra={"clip_id": request.clip_id,
                                                       "error": str(e)})
                    answer = ClipRefused(request.clip_id, f"the clip failed: {e}")
                await self.ctx.live.publish(clip_topic(request.clip_id), answer)
        except LiveStateError as e:
            logger.warning("archive request not carried out", extra={
                "request": type(request).__name__, "error": str(e)})

    async def request_export(self, vod_id: str) -> None:
        """Start an MP4 export (progress shows on the VOD in the catalog)."""
        if self.distributed:
            await asyncio.to_thread(self.celery.send_task, TASK_EXPORT_MP4, args=[vod_id])
            return
        key = f"export:{vod_id}"
        if key not in self._jobs:
            job = asyncio.create_task(self._guard(
                "export_mp4", lambda: export_mp4(self.ctx, vod_id)), name=key)
            self._jobs[key] = job
            job.add_done_callback(lambda _t: self._jobs.pop(key, None))

    async def _make_vod_then_enqueue(self, broadcast_id: str, received: float,
                                     known: FollowedLogs | None) -> None:
        """Distributed, in a worker's listener: the playlists at once from the followed
        logs, then verification and thumbnails as Celery tasks; if making the VOD here
        fails, the make_vod task (with its retries) takes over."""
        try:
            vod = await make_vod(self.ctx, broadcast_id, known=known)
        except Exception as e:
            logger.warning("in-process VOD failed; enqueueing make_vod",
                           extra={"broadcast_id": broadcast_id, "error": str(e)})
            await asyncio.to_thread(self.celery.send_task, TASK_MAKE_VOD, args=[broadcast_id])
            return
        self._vod_latency.observe(time.monotonic() - received)
        self._ready_event(broadcast_id).set()
        if vod is not None:
            await asyncio.to_thread(self.celery.send_task, TASK_VERIFY_VOD, args=[vod.id])

    # -- embedded pipeline ----------------------------------------------------------------

    async def _guard(self, what: str, fn: Callable[[], Awaitable[object]]) -> None:
        try:
            await retrying(fn, what=what)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._task_failures.labels(what).inc()
            logger.error("archive task failed", extra={"task": what, "error": str(e)})

    async def _archive(self, broadcast_id: str, received: float,
                       known: FollowedLogs | None) -> None:
        async with self._slots:
            try:
                vod = await retrying(lambda: make_vod(self.ctx, broadcast_id,
                                                            known=known),
                                     what="make_vod", attempts=6)
            except Exception as e:
                self._task_failures.labels("make_vod").inc()
                logger.error("no VOD for broadcast", extra={"broadcast_id": broadcast_id,
                                                            "error": str(e)})
                return
            self._vod_latency.observe(time.monotonic() - received)
            self._ready_event(broadcast_id).set()
            if vod is None:
                return
            if self.uploader is not None:
                # This process's uploader may still hold the last segments: give it a moment
                # before the first check (verification retries anyway).
                await self.uploader.flush(FLUSH_BEFORE_VERIFY_S)
            try:
                await retrying(lambda: verify_vod(self.ctx, vod.id), what="verify_vod",
                               attempts=self.verify_attempts, max_s=30.0)
            except Exception as e:
                self._task_failures.labels("verify_vod").inc()
                logger.error("VOD left pending: segments missing from storage",
                             extra={"vod_id": vod.id, "error": str(e)})
                return
            await self._guard("make_thumbnails",
                              lambda: make_thumbnails(self.ctx, broadcast_id))

    async def follow_now(self) -> int:
        """Read the new tails of every live broadcast's segment logs (done every
        ``follow_interval_s``); returns the segments now known."""
        try:
            live = [b.id for b in await self.ctx.live.list_broadcasts()
                    if b.state is BroadcastState.LIVE]
        except LiveStateError as e:
            logger.warning("cannot list live broadcasts to follow", extra={"error": str(e)})
            return 0
        for gone in [b for b in self._followed if b not in live]:
            del self._followed[gone]  # ended without an event reaching us: read whole later
        for broadcast_id in live:
            if broadcast_id not in self._followed:
                self._followed[broadcast_id] = FollowedLogs()
                while len(self._followed) > MAX_FOLLOWED:
                    self._followed.popitem(last=False)  # read whole at its end instead
        total = 0
        for broadcast_id in [b for b in self._followed if b in live]:
            known = self._followed.get(broadcast_id)
            if known is None:
                continue
            try:
                total += await follow_logs(self.ctx, broadcast_id, known)
            except LiveStateError as e:
                logger.warning("cannot follow a segment log", extra={
                    "broadcast_id": broadcast_id, "error": str(e)})
        return total

    async def _follow(self) -> None:
        while True:
            await self.follow_now()
            await asyncio.sleep(self.follow_interval_s)

    async def _posters(self) -> None:
        while True:
            await asyncio.sleep(self.poster_interval_s)
            await refresh_posters(self.ctx)

    async def _expiry(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await expire_vods(self.ctx, utcnow())
            await asyncio.sleep(self.expire_interval_s)


async def refresh_posters(ctx: ArchiveContext) -> int:
    """Refresh the poster of every live broadcast; returns how many were written."""
    written = 0
    try:
        broadcasts = await ctx.live.list_broadcasts()
    except LiveStateError as e:
        logger.warning("cannot list live broadcasts for posters", extra={"error": str(e)})
        return 0
    for broadcast in broadcasts:
        if broadcast.state is not BroadcastState.LIVE:
            continue
        try:
            if await make_poster(ctx, broadcast.id):
                written += 1
        except Exception as e:  # one broadcast's bad segment must not stop the others
            logger.warning("poster refresh failed", extra={"broadcast_id": broadcast.id,
                                                           "error": str(e)})
    return written
