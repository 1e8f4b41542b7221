"""The webhook dispatcher in the distributed mode, on a worker's Celery app.

:func:`register` adds to the app:

- ``castway.webhooks.deliver(endpoint_id, msg_id)``: one attempt of a delivery (claimed
  in the catalog first, so two workers never send it at once); a failed attempt is
  retried with Celery's countdown at the time the retry schedule set.
- ``castway.webhooks.sweep`` and its beat entry, every ``webhook_sweep_s``: a delivery
  pending and overdue by more than that has lost its task (the worker holding it died,
  the broker lost it, the event was recorded while the broker was down, the API asked
  for a redelivery): it is enqueued again.
- the listener: in every worker, once it is ready, a :class:`WebhookService` on the
  broadcasts and VODs topics records each event's deliveries in the catalog and
  enqueues them (like the archiver's listener, ``archiver/celery_app.py``).

At least once: a delivery is in the catalog before any task for it exists, and stays
pending until a 2xx answer; a task lost anywhere is replaced by the sweep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from castway.catalog.base import Catalog
from castway.live.base import LiveState
from castway.model import utcnow
from castway.settings import Settings
from castway.webhooks.records import DeliveryState
from castway.worker_listener import ListenerThread, listen_in_worker
from webhooks.sender import new_client
from webhooks.service import TASK_DELIVER, TASK_SWEEP, WebhookService, attempt_delivery

logger = logging.getLogger(__name__)

BEAT_ENTRY = "castway-webhooks-sweep"
SWEEP_BATCH = 1000


class _CatalogOf:
    """The catalog of the process a task runs in, opened on first use: a prefork child
    opens its own instead of sharing the parent's connections across fork()."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._opened: tuple[int, Catalog] | None = None

    def __call__(self) -> Catalog:
        with self._lock:
            if self._opened is None or self._opened[0] != os.getpid():
                from castway.catalog import open_catalog

                self._opened = (os.getpid(), open_catalog(self.settings))
            return self._opened[1]


async def deliver_once(settings: Settings, catalog: Catalog, endpoint_id: str,
                       msg_id: str) -> float | None:
    """One attempt; returns the seconds until the next one is due (None: no retry,
    it was delivered, given up, or is not this task's to send)."""
    async with new_client(settings.webhook_timeout_s) as client:
        done = await attempt_delivery(catalog, client, settings, endpoint_id, msg_id)
    if done is None or done.state is not DeliveryState.PENDING or done.next_attempt_at is None:
        return None
    return max(0.0, (done.next_attempt_at - utcnow()).total_seconds())


def sweep(app: Any, settings: Settings, catalog: Catalog) -> int:
    """Enqueue every pending delivery overdue by more than one sweep interval; returns
    how many. The tasks expire after one interval: a backlog of sweeps does not pile up
    copies of one delivery (and a copy that runs finds it claimed or done)."""
    overdue = catalog.due_deliveries(utcnow() - timedelta(seconds=settings.webhook_sweep_s),
                                     limit=SWEEP_BATCH)
    for delivery in overdue:
        app.send_task(TASK_DELIVER, args=[delivery.endpoint_id, delivery.msg_id],
                      expires=settings.webhook_sweep_s)
    if overdue:
        logger.info("overdue webhook deliveries enqueued", extra={"count": len(overdue)})
    return len(overdue)


def register(app: Any, settings: Settings, *, listen: bool = True) -> None:
    """Add the deliver and sweep tasks and the sweep's beat entry to the Celery ``app``;
    ``listen``: a worker running it also records events (the listener)."""
    catalog = _CatalogOf(settings)

    # shared=False: as the archiver's tasks (a second app keeps its own callables).
    @app.task(name=TASK_DELIVER, bind=True, shared=False, ignore_result=True,
              max_retries=None)  # type: ignore[untyped-decorator]
    def deliver(self: Any, endpoint_id: str, msg_id: str) -> None:
        countdown = asyncio.run(deliver_once(settings, catalog(), endpoint_id, msg_id))
        if countdown is not None:
            raise self.retry(countdown=countdown)

    @app.task(name=TASK_SWEEP, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def sweep_task() -> int:
        return sweep(app, settings, catalog())

    schedule = dict(app.conf.beat_schedule or {})
    schedule[BEAT_ENTRY] = {"task": TASK_SWEEP, "schedule": settings.webhook_sweep_s,
                            "options": {"expires": settings.webhook_sweep_s}}
    app.conf.beat_schedule = schedule
    if listen:
        _attach_listener(app, settings, catalog)


def enqueuer(app: Any) -> Callable[[str, str], Any]:
    """The listener's ``enqueue``: a broker that does not answer loses the task, not the
    delivery (recorded already: the sweep sends it)."""

    async def enqueue(endpoint_id: str, msg_id: str) -> None:
        try:
            await asyncio.to_thread(app.send_task, TASK_DELIVER, args=[endpoint_id, msg_id])
        except Exception as e:  # kombu's and redis-py's errors alike; the sweep covers it
            logger.warning("webhook delivery not enqueued; the sweep will send it", extra={
                "webhook": endpoint_id, "msg_id": msg_id, "error": repr(e)})

    return enqueue


def _attach_listener(app: Any, settings: Settings, catalog: Callable[[], Catalog]) -> None:
    """:class:`WebhookService` (recording only) in every worker of ``app``."""

    def service(live: LiveState) -> WebhookService:
        return WebhookService(settings, catalog(), live, enqueue=enqueuer(app))

    listener = ListenerThread(settings, service, name="webhooks-listener")
    listen_in_worker(app, listener, listening_to="broadcast and VOD events")
