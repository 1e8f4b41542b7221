"""Build a :class:`scheduler.tick.Scheduler` from settings (CLI, Lambda, Celery, serve)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from castway.live.base import LiveState
from castway.settings import Settings
from scheduler.backends.base import Backend, BackendError
from scheduler.coordination import Coordinator, LocalCoordinator, RedisCoordinator
from scheduler.metrics import SchedulerMetrics
from scheduler.policy import Policy
from scheduler.tick import Scheduler


def make_backend(settings: Settings, ecs: dict[str, Any] | None = None, *,
                 live: LiveState | None = None,
                 metrics: SchedulerMetrics | None = None) -> Backend:
    if settings.scheduler_backend == "static":
        from scheduler.backends.static import StaticBackend

        if live is None:
            raise BackendError("the static backend stops nodes through the live state: "
                               "pass live=")
        return StaticBackend(live, on_wanted=metrics.nodes_wanted.inc if metrics else None)
    if settings.scheduler_backend == "local":
        from scheduler.backends.local import LocalBackend

        return LocalBackend(settings)
    if settings.scheduler_backend == "ecs":
        from scheduler.backends.ecs import EcsBackend, EcsConfig

        if ecs is None:
            raise BackendError("the ECS backend needs its configuration (cluster, "
                               "task_definition, ...): --ecs-config FILE or the event's "
                               "'ecs' object")
        return EcsBackend(EcsConfig.from_mapping(ecs))
    raise BackendError(f"unknown scheduler backend {settings.scheduler_backend!r} "
                       "(want 'local', 'ecs' or 'static')")


def load_ecs_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read ECS configuration {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise BackendError(f"{path}: want a JSON object")
    return raw


def make_coordinator(settings: Settings) -> Coordinator:
    return RedisCoordinator(settings.redis_url) if settings.redis_url else LocalCoordinator()


def make_scheduler(settings: Settings, live: LiveState, *, ecs: dict[str, Any] | None = None,
                   cloudwatch_namespace: str | None = None) -> Scheduler:
    region = str((ecs or {}).get("region", settings.s3_region))
    metrics = SchedulerMetrics(cloudwatch_namespace=cloudwatch_namespace, region=region)
    backend = make_backend(settings, ecs, live=live, metrics=metrics)
    policy = None
    if settings.scheduler_backend == "static":
        # nodes it stops come back (compose restarts them): never stop one for scale-in
        policy = Policy.from_settings(settings, scale_in=False,
                                      open_lead_s=backend.register_delay_s)
    return Scheduler(settings, live, backend, policy=policy,
                     coordinator=make_coordinator(settings), metrics=metrics)
