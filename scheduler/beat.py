"""The scheduler as a Celery beat entry (distributed mode without Lambda).

``register(app, settings)`` adds the task ``castway.scheduler.tick`` and a beat entry
running it every ``SCHEDULER_INTERVAL_S``. Beat may fire twice (two beat processes, a
catch-up after downtime): the tick's Redis lock makes the extra run a no-op.
"""

from __future__ import annotations

import asyncio
from typing import Any

from castway.settings import Settings

TASK_NAME = "castway.scheduler.tick"
BEAT_ENTRY = "castway-scheduler-tick"


async def _tick(settings: Settings, ecs: dict[str, Any] | None) -> dict[str, object]:
    from castway.live import open_live_state
    from scheduler.factory import make_scheduler

    live = open_live_state(settings)
    scheduler = make_scheduler(settings, live, ecs=ecs)
    try:
        return (await scheduler.tick()).summary()
    finally:
        scheduler.backend.close()
        await scheduler.coordinator.close()
        await live.close()


def register(app: Any, settings: Settings, *, ecs: dict[str, Any] | None = None) -> Any:
    """Register the tick task and its beat schedule on the Celery ``app``; returns the
    task."""

    @app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
    def tick() -> dict[str, object]:
        return asyncio.run(_tick(settings, ecs))

    schedule = dict(app.conf.beat_schedule or {})
    schedule[BEAT_ENTRY] = {"task": TASK_NAME, "schedule": settings.scheduler_interval_s,
                            "options": {"expires": settings.scheduler_interval_s}}
    app.conf.beat_schedule = schedule
    return tick
