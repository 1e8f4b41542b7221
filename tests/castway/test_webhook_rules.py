"""The sans-IO rules of webhooks: the allow-list decision, the retry schedule and what an
attempt does to a delivery, and the payload of each event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from castway.events.broadcasts import (
    BroadcastEnded,
    BroadcastFailed,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.events.vods import VodDeleted, VodReady
from castway.webhooks.allow import RefusedReceiver, parse_url, refusal
from castway.webhooks.events import EventType, webhook_event
from castway.webhooks.records import DeliveryState, WebhookDelivery
from castway.webhooks.retry import Attempt, RetrySchedule, after_attempt, redeliver

NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("addresses", "refused"), [
    (["93.184.216.34"], False),
    (["2606:2800:220:1:248:1893:25c8:1946"], False),
    (["127.0.0.1"], True),
    (["::1"], True),
    (["10.1.2.3"], True),
    (["172.16.0.1"], True),
    (["192.168.1.1"], True),
    (["169.254.169.254"], True),  # the cloud metadata endpoint
    (["100.64.0.1"], True),  # shared CGNAT space
    (["fe80::1"], True),
    (["fd00::1"], True),
    (["::ffff:127.0.0.1"], True),  # IPv4-mapped loopback
    (["0.0.0.0"], True),
    (["224.0.0.1"], True),
    (["93.184.216.34", "10.0.0.1"], True),  # one internal address is enough
    ([], True),  # does not resolve
])
def test_receivers_on_internal_addresses_are_refused(addresses: list[str],
                                                     refused: bool) -> None:
    assert (refusal(addresses, allow_private=False) is not None) is refused


def test_allow_private_lets_internal_addresses_receive() -> None:
    assert refusal(["127.0.0.1", "10.0.0.1"], allow_private=True) is None


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd",
                                 "http://user:pw@example.com/", "http:///nohost",
                                 "http://example.com:99999/"])
def test_only_plain_http_urls_may_receive(url: str) -> None:
    with pytest.raises(RefusedReceiver):
        parse_url(url)


def test_urls_name_their_host_and_port() -> None:
    assert parse_url("https://hooks.example.com/x") == ("hooks.example.com", 443)
    assert parse_url("http://[::1]:8080/x") == ("::1", 8080)


SCHEDULE = RetrySchedule(base_s=5.0, max_s=60.0, max_attempts=6)


def test_the_schedule_doubles_up_to_its_cap_then_gives_up() -> None:
    assert [SCHEDULE.delay_after(n, 0.0) for n in range(1, 7)] == \
        [5.0, 10.0, 20.0, 40.0, 60.0, None]


def test_jitter_shortens_a_delay_by_at_most_a_fifth() -> None:
    assert SCHEDULE.delay_after(1, 0.999) == pytest.approx(4.001, abs=0.01)


def _delivery(attempts: int = 0) -> WebhookDelivery:
    return WebhookDelivery(endpoint_id="e", msg_id="msg_1", event_type="broadcast.started",
                           body="{}", attempts=attempts, next_attempt_at=NOW, created_at=NOW)


def test_a_2xx_delivers() -> None:
    done = after_attempt(_delivery(), Attempt(204), NOW, SCHEDULE, 0.0)
    assert (done.state, done.attempts, done.next_attempt_at) == \
        (DeliveryState.DELIVERED, 1, None)


@pytest.mark.parametrize("attempt", [Attempt(500), Attempt(302), Attempt(None, "refused")])
def test_a_failure_is_due_again_after_the_backoff(attempt: Attempt) -> None:
    done = after_attempt(_delivery(attempts=1), attempt, NOW, SCHEDULE, 0.0)
    assert done.state is DeliveryState.PENDING
    assert done.next_attempt_at == NOW + timedelta(seconds=10)
    assert done.last_error


def test_410_gone_and_the_last_attempt_give_up() -> None:
    assert after_attempt(_delivery(), Attempt(410), NOW, SCHEDULE, 0.0).state is \
        DeliveryState.FAILED
    assert after_attempt(_delivery(attempts=5), Attempt(500), NOW, SCHEDULE, 0.0).state is \
        DeliveryState.FAILED


def test_a_redelivery_keeps_the_id_and_starts_a_fresh_schedule() -> None:
    failed = after_attempt(_delivery(attempts=5), Attempt(500), NOW, SCHEDULE, 0.0)
    again = redeliver(failed, NOW)
    assert (again.msg_id, again.state, again.attempts, again.next_attempt_at) == \
        ("msg_1", DeliveryState.PENDING, 0, NOW)


@pytest.mark.parametrize(("message", "type_", "data"), [
    (BroadcastStarted("b1", "ch"), EventType.BROADCAST_STARTED,
     {"broadcast_id": "b1", "channel": "ch"}),
    (BroadcastResumed("b1", "ch", "n2"), EventType.BROADCAST_RESUMED,
     {"broadcast_id": "b1", "channel": "ch", "node_id": "n2"}),
    (BroadcastEnded("b1", "ch"), EventType.BROADCAST_ENDED,
     {"broadcast_id": "b1", "channel": "ch"}),
    (BroadcastFailed("b1", "ch", "node lost"), EventType.BROADCAST_FAILED,
     {"broadcast_id": "b1", "channel": "ch", "reason": "node lost"}),
    (VodReady("v1", "b1", "ch", 12.3456), EventType.VOD_READY,
     {"vod_id": "v1", "broadcast_id": "b1", "channel": "ch", "duration_s": 12.346}),
    (VodDeleted("v1", "b1", "ch", "api"), EventType.VOD_DELETED,
     {"vod_id": "v1", "broadcast_id": "b1", "channel": "ch", "reason": "api"}),
])
def test_each_event_has_its_type_and_thin_data(message: object, type_: EventType,
                                               data: dict[str, object]) -> None:
    event = webhook_event(message, NOW)  # type: ignore[arg-type]
    body = json.loads(event.body)
    assert event.type is type_
    assert body == {"type": type_.value, "timestamp": NOW.isoformat(), "data": data}
    assert event.msg_id.startswith("msg_") and "." not in event.msg_id


def test_one_occurrence_has_one_id_wherever_it_is_read() -> None:
    first = webhook_event(BroadcastEnded("b1", "ch"), NOW)
    later = webhook_event(BroadcastEnded("b1", "ch"), NOW + timedelta(seconds=1))
    assert first.msg_id == later.msg_id
    assert webhook_event(BroadcastStarted("b1", "ch"), NOW).msg_id != first.msg_id
