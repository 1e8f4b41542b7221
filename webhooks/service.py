"""The webhook dispatcher (:class:`WebhookService`): broadcast and VOD events in,
one delivery per subscribed endpoint recorded in the catalog, then sent here (embedded)
or by a Celery task (distributed, :mod:`webhooks.tasks`).

Every attempt first claims its delivery in the catalog
(:meth:`castway.catalog.base.Catalog.claim_delivery`): two senders (two workers, a
worker and a retried task) never send one delivery at the same time.

The delivery log is what makes delivery at-least-once: a delivery is recorded before its
first attempt and stays pending until a 2xx answer, so a crash, a restart or a receiver
that is down only delays it. Retries follow :class:`castway.webhooks.retry.RetrySchedule`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from castway.catalog.base import Catalog, CatalogError
from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEvent
from castway.events.restreams import RESTREAMS_TOPIC, RestreamEvent
from castway.events.topic import Topic
from castway.events.vods import VODS_TOPIC, VodEvent
from castway.live.base import EventBus, LiveStateError, Subscription, SubscriptionClosed
from castway.model import utcnow
from castway.settings import Settings
from castway.webhooks.events import WebhookEvent, webhook_event
from castway.webhooks.records import DeliveryState, WebhookDelivery
from castway.webhooks.retry import Attempt, RetrySchedule, after_attempt
from webhooks.sender import new_client, send

logger = logging.getLogger(__name__)

TASK_DELIVER = "castway.webhooks.deliver"
TASK_SWEEP = "castway.webhooks.sweep"
#: The in-process sender looks for due deliveries at least this often (redeliveries the
#: API asked for, deliveries another process recorded).
POLL_S = 2.0
#: A claim outlives the attempt's deadline by this (catalog writes, clock skew).
LEASE_MARGIN_S = 30.0
MAX_IN_FLIGHT = 32  # attempts at once (a slow receiver holds one for up to its timeout)
BATCH = 100
RESUBSCRIBE_S = 1.0

Message = BroadcastEvent | VodEvent | RestreamEvent


def schedule_of(settings: Settings) -> RetrySchedule:
    return RetrySchedule(settings.webhook_backoff_base_s, settings.webhook_backoff_max_s,
                         settings.webhook_max_attempts)


def deliveries_for(event: WebhookEvent, endpoint_ids: list[str],
                   now: datetime) -> list[WebhookDelivery]:
    return [WebhookDelivery(endpoint_id=e, msg_id=event.msg_id, event_type=event.type.value,
                            body=event.body, next_attempt_at=now, created_at=now)
            for e in endpoint_ids]


def lease_s(settings: Settings) -> float:
    """How long a claim holds a delivery: the attempt's deadline, plus room for the
    catalog writes and for clocks of two workers that disagree a little."""
    return settings.webhook_timeout_s + LEASE_MARGIN_S


async def attempt_delivery(catalog: Catalog, client: httpx.AsyncClient, settings: Settings,
                           endpoint_id: str, msg_id: str) -> WebhookDelivery | None:
    """Claim a due pending delivery, make one attempt and record its outcome; returns
    the delivery as recorded (None: gone, not pending, not due, held by another sender,
    or its claim lost before the outcome was recorded)."""
    endpoint = await asyncio.to_thread(catalog.get_webhook, endpoint_id)
    if endpoint is None:
        return None
    now = utcnow()
    claimed = await asyncio.to_thread(catalog.claim_delivery, endpoint_id, msg_id, now,
                                      now + timedelta(seconds=lease_s(settings)))
    if claimed is None:
        return None
    try:
        # One deadline for the whole attempt (httpx's timeout is per read or write): it
        # ends well before the lease, so no second sender starts while this one waits.
        async with asyncio.timeout(settings.webhook_timeout_s):
            attempt = await send(client, endpoint, claimed, timestamp=int(time.time()),
                                 allow_private=settings.webhook_allow_private)
    except TimeoutError:
        attempt = Attempt(None, f"no answer within {settings.webhook_timeout_s:g} s")
    done = after_attempt(claimed, attempt, utcnow(), schedule_of(settings), random.random())
    if not await asyncio.to_thread(catalog.settle_delivery, claimed, done):
        logger.info("webhook attempt outcome dropped: the delivery changed meanwhile",
                    extra={"webhook": endpoint_id, "msg_id": msg_id})
        return None
    if done.state is DeliveryState.FAILED:
        logger.warning("webhook delivery given up", extra={
            "webhook": endpoint_id, "msg_id": msg_id, "attempts": done.attempts,
            "error": done.last_error})
    return done


class WebhookService:
    """Owned by the process that starts it: ``await start()``, ``await stop()``.

    ``enqueue``: None sends here (embedded); else a callable handing a delivery to the
    Celery worker, ``enqueue(endpoint_id, msg_id)`` (distributed: this service then only
    records deliveries, in the worker's event listener)."""

    def __init__(self, settings: Settings, catalog: Catalog, live: EventBus, *,
                 enqueue: Callable[[str, str], Awaitable[None]] | None = None,
                 poll_s: float = POLL_S) -> None:
        self.settings = settings
        self.catalog = catalog
        self.live = live
        self.enqueue = enqueue
        self.poll_s = poll_s
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Subscription[Any]] = []
        self._in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    async def start(self) -> None:
        # Subscribed before start() returns: no event published afterwards is missed.
        for topic in (BROADCASTS_TOPIC, VODS_TOPIC, RESTREAMS_TOPIC):
            subscription: Subscription[Any] = await self.live.subscribe(topic)
            self._subscriptions.append(subscription)
            self._tasks.append(asyncio.create_task(
                self._events(topic, subscription), name=f"webhooks-{topic.name}"))
        if self.enqueue is None:
            self._client = new_client(self.settings.webhook_timeout_s)
            self._tasks.append(asyncio.create_task(self._send_loop(), name="webhooks-send"))
        logger.info("webhook dispatcher started",
                    extra={"mode": "embedded" if self.enqueue is None else "distributed"})

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.close()
        pending = [*self._tasks, *self._in_flight.values()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._subscriptions, self._in_flight = [], [], {}
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- events -> deliveries ---------------------------------------------------------

    async def _events(self, topic: Topic[Any], subscription: Subscription[Any]) -> None:
        while True:
            try:
                message = await subscription.get()
            except SubscriptionClosed:
                return
            except LiveStateError as e:
                logger.warning("webhook events unavailable; resubscribing",
                               extra={"topic": topic.name, "error": str(e)})
                await asyncio.sleep(RESUBSCRIBE_S)
                with contextlib.suppress(LiveStateError):
                    subscription = await self.live.subscribe(topic)
                    self._subscriptions.append(subscription)
                continue
            try:
                await self.record(message)
            except CatalogError as e:  # the event is lost for webhooks: say so
                logger.error("webhook event not recorded", extra={
                    "topic": topic.name, "event": type(message).__name__, "error": str(e)})

    async def record(self, message: Message) -> list[WebhookDelivery]:
        """Record one delivery of ``message`` per endpoint subscribed to its type and
        start sending them; returns the deliveries recorded now (not those another
        dispatcher recorded first)."""
        now = utcnow()
        event = webhook_event(message, now)
        endpoints = await asyncio.to_thread(self.catalog.list_webhooks)
        wanted = [e.id for e in endpoints if e.wants(event.type.value)]
        if not wanted:
            return []
        added = await asyncio.to_thread(self.catalog.add_deliveries,
                                        deliveries_for(event, wanted, now))
        logger.info("webhook event recorded", extra={
            "event": event.type.value, "msg_id": event.msg_id, "endpoints": len(added)})
        if self.enqueue is not None:
            for delivery in added:
                await self.enqueue(delivery.endpoint_id, delivery.msg_id)
        else:
            self._wake.set()
        return added

    # -- embedded: sending ------------------------------------------------------------

    def wake(self) -> None:
        """Look for due deliveries now (a redelivery was asked for)."""
        self._wake.set()

    async def _send_loop(self) -> None:
        while True:
            self._wake.clear()
            wait_s = self.poll_s
            try:
                wait_s = await self._send_due()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the catalog is down: the next round retries
                logger.warning("webhook sending paused", extra={"error": str(e)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait_s)):
                    await self._wake.wait()

    async def _send_due(self) -> float:
        """Start an attempt of every due delivery not already in flight; returns how
        long to wait before looking again."""
        now = utcnow()
        due = await asyncio.to_thread(self.catalog.due_deliveries, now, limit=BATCH)
        for delivery in due:
            key = (delivery.endpoint_id, delivery.msg_id)
            if key in self._in_flight or len(self._in_flight) >= MAX_IN_FLIGHT:
                continue
            task = asyncio.create_task(self._attempt(*key), name=f"webhook-{key[1]}")
            self._in_flight[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        next_due = await asyncio.to_thread(self.catalog.next_delivery_due)
        wait_s = self.poll_s if next_due is None else (next_due - utcnow()).total_seconds()
        # Due already: started above, or in flight, or over the in-flight limit; an
        # attempt that ends wakes the loop.
        return self.poll_s if wait_s <= 0 else min(self.poll_s, wait_s)

    def _done(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(key, None)
        self._wake.set()  # its next attempt may be due before the next poll

    async def _attempt(self, endpoint_id: str, msg_id: str) -> None:
        assert self._client is not None, "start() opens the client in the embedded mode"
        try:
            await attempt_delivery(self.catalog, self._client, self.settings,
                                   endpoint_id, msg_id)
        except CatalogError as e:  # still pending: tried again once the catalog answers
            logger.warning("webhook attempt not recorded", extra={
                "webhook": endpoint_id, "msg_id": msg_id, "error": str(e)})
