"""The archiver's Celery app (distributed mode), built by :func:`make_celery`: broker and
result backend on Redis, the archive tasks, and the event listener inside workers.

Design: docs/archiver.md, "Modes".
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from celery import Celery

from archiver import instant_vod, mp4_export, retention, thumbnails, verify
from archiver import service as svc
from archiver.context import ArchiveContext, VodNotFound
from castway.catalog.base import Catalog
from castway.live.base import LiveState
from castway.settings import Settings
from castway.storage.base import Storage
from castway.worker_listener import ListenerThread, listen_in_worker

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_BACKOFF_MAX_S = 30
MAKE_VOD_RETRIES = 10
# A VOD waits for its segments while uploaders drain their spools after an outage:
# with backoff capped at 30 s, 240 retries cover about two hours.
VERIFY_RETRIES = 240


class _Resources:
    """The worker process's catalog and storage, opened on first use (after fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._storage: Storage | None = None

    def catalog(self) -> Catalog:
        with self._lock:
            if self._catalog is None:
                from castway.catalog import open_catalog

                self._catalog = open_catalog(self.settings)
            return self._catalog

    def storage(self) -> Storage:
        with self._lock:
            if self._storage is None:
                from castway.storage import open_storage

                self._storage = open_storage(self.settings)
            return self._storage

    def run(self, fn: Callable[[ArchiveContext], Awaitable[T]]) -> T:
        """Run one task function on a fresh event loop with its own live-state client."""
        from castway.live import open_live_state

        async def main() -> T:
            live = open_live_state(self.settings)
            try:
                return await fn(ArchiveContext(self.settings, self.catalog(), live,
                                                     self.storage()))
            finally:
                await live.close()

        return asyncio.run(main())


def broker_url(settings: Settings) -> str:
    url = settings.celery_broker_url or settings.redis_url
    if not url:
        raise ValueError("the Celery archiver needs CASTWAY_CELERY_BROKER_URL or "
                         "CASTWAY_REDIS_URL (without them the archiver runs in-process)")
    return url


def make_celery(settings: Settings, *, listen: bool = True) -> Celery:
    """The archiver's Celery app for ``settings``; ``listen``: a worker running it also
    runs the broadcast event listener."""
    url = broker_url(settings)
    app = Celery("castway-archiver", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        timezone="UTC",
        beat_schedule={
            "castway-archiver-expire": {"task": svc.TASK_EXPIRE_VODS,
                                        "schedule": svc.EXPIRE_INTERVAL_S},
            "castway-archiver-posters": {"task": svc.TASK_REFRESH_POSTERS,
                                         "schedule": svc.POSTER_INTERVAL_S,
                                         "options": {"expires": svc.POSTER_INTERVAL_S}},
        },
    )
    resources = _Resources(settings)
    # shared=False: a shared task (Celery's default) is registered on every app finalized
    # later in the process, so a second app would keep the first app's callables (and its
    # settings and resources) under these names and warn DuplicateTaskNameWarning.
    retry_opts: dict[str, Any] = {"bind": True, "shared": False, "autoretry_for": svc.RETRYABLE,
                                  "retry_backoff": True,
                                  "retry_backoff_max": RETRY_BACKOFF_MAX_S,
                                  "retry_jitter": True}

    @app.task(name=svc.TASK_MAKE_VOD, max_retries=MAKE_VOD_RETRIES,
              **retry_opts)  # type: ignore[untyped-decorator]
    def make_vod(self: Any, broadcast_id: str) -> str | None:
        vod = resources.run(lambda ctx: instant_vod.make_vod(ctx, broadcast_id))
        if vod is None:
            return None
        app.send_task(svc.TASK_VERIFY_VOD, args=[vod.id])
        return vod.id

    @app.task(name=svc.TASK_VERIFY_VOD, max_retries=VERIFY_RETRIES,
              **retry_opts)  # type: ignore[untyped-decorator]
    def verify_vod(self: Any, vod_id: str) -> dict[str, Any]:
        try:
            result = resources.run(lambda ctx: verify.verify_vod(ctx, vod_id))
        except VodNotFound:
            return {"vod_id": vod_id, "complete": False, "deleted": True}
        vod = resources.catalog().get_vod(vod_id)
        if vod is not None:
            app.send_task(svc.TASK_MAKE_THUMBNAILS, args=[vod.broadcast_id])
        return {"vod_id": vod_id, "complete": result.complete, "checked": result.checked}

    @app.task(name=svc.TASK_EXPORT_MP4, max_retries=MAKE_VOD_RETRIES,
              **retry_opts)  # type: ignore[untyped-decorator]
    def export_mp4(self: Any, vod_id: str) -> str | None:
        try:
            vod = resources.run(lambda ctx: mp4_export.export_mp4(ctx, vod_id))
        except VodNotFound:
            return None
        return vod.mp4_key

    @app.task(name=svc.TASK_MAKE_THUMBNAILS, max_retries=MAKE_VOD_RETRIES,
              **retry_opts)  # type: ignore[untyped-decorator]
    def make_thumbnails(self: Any, broadcast_id: str) -> int:
        return resources.run(lambda ctx: thumbnails.make_thumbnails(ctx, broadcast_id))

    @app.task(name=svc.TASK_REFRESH_POSTERS, ignore_result=True,
              shared=False)  # type: ignore[untyped-decorator]
    def refresh_posters() -> int:
        return resources.run(svc.refresh_posters)

    @app.task(name=svc.TASK_EXPIRE_VODS, max_retries=3,
              **retry_opts)  # type: ignore[untyped-decorator]
    def expire_vods(self: Any, now: str | None = None) -> list[str]:
        when = datetime.fromisoformat(now) if now else datetime.now(UTC)
        return resources.run(lambda ctx: retention.expire_vods(ctx, when))

    if listen:
        _attach_listener(app, settings, resources)
    return app


def _attach_listener(app: Celery, settings: Settings, resources: _Resources) -> None:
    """ArchiverService (distributed mode, making VODs here) in every worker of ``app``."""

    def service(live: LiveState) -> svc.ArchiverService:
        return svc.ArchiverService(settings, resources.catalog(), live, resources.storage(),
                                   celery=app, make_vod_here=True)

    listener = ListenerThread(settings, service, name="archiver-listener")
    listen_in_worker(app, listener, listening_to="broadcast events")


def main(argv: list[str] | None = None) -> int:
    """``python -m archiver.celery_app [celery worker args]``: a worker (with beat and the
    event listener) configured from ``CASTWAY_*`` settings."""
    from castway.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    app = make_celery(settings, listen=True)
    app.worker_main(["worker", "--loglevel", settings.log_level, *(argv or [])])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
