"""AWS Lambda entry point: ``scheduler.lambda_handler:handler``, invoked by an EventBridge
rule ``rate(1 minute)``; the rule's constant input carries the ECS settings.

Design: docs/scheduler.md, "Running it".
"""

from __future__ import annotations

import asyncio
from typing import Any

from castway.live import open_live_state
from castway.settings import Settings
from scheduler.factory import make_scheduler


async def _tick(settings: Settings, event: dict[str, Any]) -> dict[str, object]:
    live = open_live_state(settings)
    scheduler = make_scheduler(settings, live, ecs=event.get("ecs"),
                               cloudwatch_namespace=event.get("cloudwatch_namespace"))
    try:
        result = await scheduler.tick(event.get("desired_version"))
        return result.summary()
    finally:
        scheduler.backend.close()
        await scheduler.coordinator.close()
        await live.close()


def handler(event: dict[str, Any] | None, context: object = None,
            settings: Settings | None = None) -> dict[str, object]:
    settings = settings or Settings()
    if not settings.redis_url:
        raise RuntimeError("the scheduler Lambda needs CASTWAY_REDIS_URL (lock, memory, "
                           "node heartbeats)")
    return asyncio.run(_tick(settings, dict(event or {})))
