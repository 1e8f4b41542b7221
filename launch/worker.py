"""``castway worker``: a Celery worker running the archiver's tasks and the webhook
deliveries, with its health listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from celery.signals import task_failure, task_retry, task_success
from prometheus_client import CollectorRegistry, Counter, ProcessCollector

from archiver.celery_app import broker_url, make_celery
from castway.health.wsgi import Check, HealthApp, HealthServer
from castway.redis_client import ping as redis_ping
from castway.settings import Settings
from launch.process import start_process
from launch.services import Services
from scheduler.beat import register as register_scheduler_tick
from webhooks.tasks import register as register_webhooks

logger = logging.getLogger(__name__)


def run_worker(settings: Settings, celery_args: list[str], *, beat: bool = False,
               scheduler: bool = False) -> int:
    """``castway worker``: a Celery worker running the archiver's tasks and delivering
    webhooks (both listen to the events topics); with ``beat`` it also runs the periodic
    schedule (retention, posters, the webhook sweep): exactly one worker of a
    deployment should. ``scheduler`` adds the fleet scheduler's tick to that schedule
    (distributed mode without the Lambda or ``castway scheduler run``). /healthz, /readyz
    (broker, catalog, storage) and /metrics (task outcomes) listen on the HTTP port."""
    start_process(settings)
    app = make_celery(settings)
    register_webhooks(app, settings)
    if scheduler:
        register_scheduler_tick(app, settings)
    services = Services.open(settings)
    health = HealthServer(HealthApp(worker_checks(services, broker_url(settings)),
                                    worker_metrics(services.registry)),
                          settings.host, settings.http_port).start()
    logger.info("worker health listening", extra={"http_port": health.port})
    try:
        app.worker_main(["worker", "--loglevel", settings.log_level,
                         *(["--beat"] if beat else []), *celery_args])
    finally:
        health.close()
        asyncio.run(services.close())
    return 0


def worker_checks(services: Services, broker: str) -> dict[str, Check]:
    """Readiness of a worker: its broker, the catalog and storage answer."""
    return {"broker": lambda: redis_ping(broker), "catalog": services.catalog.ping,
            "storage": services.storage.ping}


def worker_metrics(registry: CollectorRegistry) -> CollectorRegistry:
    """``castway_worker_tasks_total{task,outcome}`` from Celery's task signals."""
    ProcessCollector(registry=registry)  # descriptors and memory, as the other processes

    tasks = Counter("castway_worker_tasks", "Tasks run by this worker",
                    ["task", "outcome"], registry=registry)

    def counter(outcome: str) -> Callable[..., None]:
        def count(sender: Any = None, request: Any = None, **_: Any) -> None:
            name = getattr(sender, "name", None) or getattr(request, "task", None)
            tasks.labels(task=str(name), outcome=outcome).inc()
        return count

    for signal_, outcome in ((task_success, "success"), (task_failure, "failure"),
                             (task_retry, "retry")):
        signal_.connect(counter(outcome), weak=False)
    return registry
