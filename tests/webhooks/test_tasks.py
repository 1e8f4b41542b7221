"""Webhooks in the distributed mode: ``castway worker`` (a real Celery worker, solo pool,
with beat) on a real redis-server (broker and live state) and PostgreSQL (the catalog)
hears an event on the topic and delivers it, signed, to a real HTTP receiver; a receiver
that is down gets it once it is up, under the same webhook-id; a delivery whose sender
died while holding it is sent by the sweep."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from castway.catalog import SqlCatalog
from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEnded, BroadcastStarted
from castway.events.vods import VODS_TOPIC
from castway.live.redis import RedisLiveState
from castway.model import utcnow
from castway.settings import Settings
from castway.webhooks.records import DeliveryState, WebhookDelivery, WebhookEndpoint
from castway.webhooks.signing import generate_secret
from tests.fixtures.webhook_receiver import Receiver, valid_signature
from tests.support import free_port, poll
from webhooks.service import TASK_DELIVER, TASK_SWEEP
from webhooks.tasks import BEAT_ENTRY, register, sweep

SWEEP_S = 1.0


# --- the app and the sweep, without a worker ---------------------------------------------

def test_the_worker_app_gets_the_deliver_and_sweep_tasks_and_the_sweep_on_beat(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0",
                        webhook_sweep_s=7)
    app = Celery("test", broker=settings.redis_url, set_as_current=False)
    app.conf.beat_schedule = {"other": {"task": "x", "schedule": 60}}

    register(app, settings, listen=False)

    assert {TASK_DELIVER, TASK_SWEEP} <= set(app.tasks)
    assert app.tasks[TASK_DELIVER].max_retries is None  # the retry schedule ends it
    assert app.conf.beat_schedule[BEAT_ENTRY] == {
        "task": TASK_SWEEP, "schedule": 7, "options": {"expires": 7}}
    assert "other" in app.conf.beat_schedule


@dataclass
class SentTasks:
    """What a Celery app's ``send_task`` was asked to send."""

    sent: list[tuple[str, list[str], dict[str, Any]]] = field(default_factory=list)

    def send_task(self, name: str, args: list[str], **options: Any) -> None:
        self.sent.append((name, args, options))


def test_the_sweep_enqueues_pending_deliveries_overdue_by_more_than_its_interval(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_sweep_s=30)
    now = utcnow()
    with SqlCatalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        catalog.migrate()
        catalog.create_webhook(WebhookEndpoint("w1", "https://example.com/",
                                               ("broadcast.started",), generate_secret()))

        def pending(msg_id: str, overdue_s: float) -> WebhookDelivery:
            return WebhookDelivery("w1", msg_id, "broadcast.started", "{}",
                                   next_attempt_at=now - timedelta(seconds=overdue_s))

        catalog.add_deliveries([pending("msg_lost", 45), pending("msg_queued", 5),
                                pending("msg_done", 600)])
        catalog.save_delivery(replace(pending("msg_done", 600),
                                      state=DeliveryState.DELIVERED, next_attempt_at=None))
        app = SentTasks()

        assert sweep(app, settings, catalog) == 1

    assert app.sent == [(TASK_DELIVER, ["w1", "msg_lost"], {"expires": 30})]


# --- a real worker ---------------------------------------------------------------------------

def worker_env(tmp_path: Path, redis_url: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env.update({
        "CASTWAY_DATA_DIR": str(tmp_path / "worker"),
        "CASTWAY_DATABASE_URL": database_url,
        "CASTWAY_REDIS_URL": redis_url,
        "CASTWAY_HTTP_PORT": str(free_port()),
        "CASTWAY_LOG_LEVEL": "INFO",
        "CASTWAY_WEBHOOK_ALLOW_PRIVATE": "1",
        "CASTWAY_WEBHOOK_TIMEOUT_S": "2",
        "CASTWAY_WEBHOOK_BACKOFF_BASE_S": "0.5",
        "CASTWAY_WEBHOOK_BACKOFF_MAX_S": "2",
        "CASTWAY_WEBHOOK_MAX_ATTEMPTS": "100",
        "CASTWAY_WEBHOOK_SWEEP_S": str(SWEEP_S),
    })
    return env


@contextmanager
def castway_worker(env: dict[str, str], cwd: Path, redis_url: str) -> Iterator[None]:
    """``castway worker --pool solo --beat`` as a subprocess; ready when its webhook
    listener is subscribed to the VODs topic (it subscribes to broadcasts first)."""
    log = cwd / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "worker", "--beat", "--pool", "solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    r = redis.Redis.from_url(redis_url)

    def subscribed() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
        counts: list[tuple[Any, int]] = r.pubsub_numsub(f"castway:{VODS_TOPIC.name}")
        return any(int(n) > 0 for _, n in counts)

    try:
        poll("the worker's webhook listener subscribed", subscribed, 60)
        yield
    except BaseException:
        print(f"--- worker log ---\n{log.read_text(errors='replace')[-8000:]}")
        raise
    finally:
        r.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.peer
@pytest.mark.slow
async def test_a_real_worker_delivers_topic_events_signed_retries_a_down_receiver_and_sweeps(
        tmp_path: Path, redis_url: str, postgres_schema_url: str) -> None:
    receiver = Receiver(free_port())  # down: nothing listens on its port yet
    secret = generate_secret()
    with SqlCatalog(postgres_schema_url) as catalog:
        catalog.migrate()
        catalog.create_webhook(WebhookEndpoint(
            "w1", receiver.url, ("broadcast.started", "broadcast.ended"), secret))
        live = RedisLiveState(redis_url)
        try:
            with castway_worker(worker_env(tmp_path, redis_url, postgres_schema_url),
                                tmp_path, redis_url):
                await live.publish(BROADCASTS_TOPIC, BroadcastStarted("b1", "alice"))

                # Recorded before any attempt, then retried while nothing answers.
                def retried() -> WebhookDelivery | None:
                    log = catalog.list_deliveries("w1")
                    return log[0] if log and log[0].attempts >= 3 else None

                failing = await asyncio.to_thread(poll, "three failed attempts", retried, 30)
                assert failing.state is DeliveryState.PENDING
                assert "ConnectError" in failing.last_error and failing.last_status is None
                assert receiver.received == []

                receiver.start()
                try:
                    await asyncio.to_thread(poll, "the delivery once the receiver is up",
                                            lambda: receiver.received, 15)
                    got = receiver.received[0]
                    assert valid_signature(secret, got)
                    assert got.headers["webhook-id"] == failing.msg_id
                    assert got.json["type"] == "broadcast.started"
                    assert got.json["data"] == {"broadcast_id": "b1", "channel": "alice"}
                    done = await asyncio.to_thread(poll, "the delivery recorded", lambda: (
                        d if (d := catalog.get_delivery("w1", failing.msg_id)) is not None
                        and d.state is DeliveryState.DELIVERED else None), 10)
                    assert done.attempts > failing.attempts and done.last_status == 204

                    # A sender that claimed a delivery and died: no task exists for it,
                    # the sweep sends it once its lease is over.
                    orphan = WebhookDelivery("w1", "msg_orphan", "broadcast.ended",
                                             '{"type":"broadcast.ended","data":{}}')
                    assert catalog.add_deliveries([orphan]) == [orphan]
                    now = utcnow()
                    assert catalog.claim_delivery("w1", "msg_orphan", now,
                                                  now + timedelta(seconds=1)) is not None
                    await asyncio.to_thread(poll, "the orphan sent by the sweep", lambda: [
                        r for r in receiver.received
                        if r.headers["webhook-id"] == "msg_orphan"], 15)

                    await live.publish(BROADCASTS_TOPIC, BroadcastEnded("b1", "alice"))
                    await asyncio.to_thread(poll, "broadcast.ended", lambda: [
                        r for r in receiver.received[2:] if r.json["type"] ==
                        "broadcast.ended" and r.headers["webhook-id"] != "msg_orphan"], 15)
                finally:
                    receiver.stop()
        finally:
            await live.close()
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 3  # each once: the receiver always answered 204
    assert all(valid_signature(secret, r) for r in receiver.received)
