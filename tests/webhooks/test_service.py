"""One attempt of a delivery (:func:`webhooks.service.attempt_delivery`) against a real HTTP
receiver and a real catalog: senders racing for one delivery send it once, an attempt
past its deadline is a failure, and nothing is sent before it is due."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from castway.catalog import SqlCatalog
from castway.model import utcnow
from castway.settings import Settings
from castway.webhooks.records import DeliveryState, WebhookDelivery, WebhookEndpoint
from castway.webhooks.signing import generate_secret
from tests.fixtures.webhook_receiver import Receiver, valid_signature
from webhooks.sender import new_client
from webhooks.service import attempt_delivery


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqlCatalog]:
    with SqlCatalog(f"sqlite:///{tmp_path / 'c.db'}") as opened:
        opened.migrate()
        yield opened


def settings(tmp_path: Path, timeout_s: float = 5.0) -> Settings:
    return Settings(data_dir=tmp_path, webhook_allow_private=True,
                    webhook_timeout_s=timeout_s, webhook_backoff_base_s=10)


def record(catalog: SqlCatalog, url: str, secret: str, *, due_in_s: float = 0.0) -> None:
    catalog.create_webhook(WebhookEndpoint("w1", url, ("broadcast.started",), secret))
    catalog.add_deliveries([WebhookDelivery(
        "w1", "msg_1", "broadcast.started", '{"type":"broadcast.started","data":{}}',
        next_attempt_at=utcnow() + timedelta(seconds=due_in_s))])


async def test_senders_racing_for_one_delivery_send_it_once(
        tmp_path: Path, catalog: SqlCatalog, receiver: Receiver) -> None:
    secret = generate_secret()
    record(catalog, receiver.url, secret)
    # as many senders as workers would be, each with its own catalog connection pool
    others = [SqlCatalog(f"sqlite:///{tmp_path / 'c.db'}") for _ in range(3)]
    try:
        async with new_client(5.0) as client:
            outcomes = await asyncio.gather(*(
                attempt_delivery(c, client, settings(tmp_path), "w1", "msg_1")
                for c in [catalog, *others]))
    finally:
        for c in others:
            c.close()

    assert len(receiver.received) == 1
    assert valid_signature(secret, receiver.received[0])
    assert [o.state for o in outcomes if o is not None] == [DeliveryState.DELIVERED]
    delivered = catalog.get_delivery("w1", "msg_1")
    assert delivered is not None and delivered.attempts == 1


async def test_nothing_is_sent_before_the_delivery_is_due(
        tmp_path: Path, catalog: SqlCatalog, receiver: Receiver) -> None:
    record(catalog, receiver.url, generate_secret(), due_in_s=60)
    async with new_client(5.0) as client:
        assert await attempt_delivery(catalog, client, settings(tmp_path), "w1",
                                      "msg_1") is None
    assert receiver.received == []


@pytest.fixture
def silent_receiver() -> Iterator[str]:
    """A receiver that reads the request and answers one byte a second (never done
    within the deadline, though each read is quick: httpx's per-read timeout passes)."""
    stop = threading.Event()

    class Dripping(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            self.wfile.flush()
            while not stop.is_set():
                self.wfile.write(b"x")
                self.wfile.flush()
                stop.wait(0.2)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Dripping)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


async def test_an_attempt_has_one_deadline_in_all_and_past_it_is_retried(
        tmp_path: Path, catalog: SqlCatalog, silent_receiver: str) -> None:
    record(catalog, silent_receiver, generate_secret())
    started = time.monotonic()
    async with new_client(1.0) as client:
        outcome = await attempt_delivery(catalog, client, settings(tmp_path, 1.0), "w1",
                                         "msg_1")
    assert time.monotonic() - started < 3.0
    assert outcome is not None and outcome.state is DeliveryState.PENDING
    assert outcome.last_error == "no answer within 1 s" and outcome.attempts == 1
    assert outcome.next_attempt_at is not None and outcome.next_attempt_at > utcnow()
