"""When a webhook delivery is tried again: exponential backoff with jitter (Standard
Webhooks, "Deliverability and reliability"), and what one attempt's outcome does to the
delivery. Pure: the caller passes the clock and the random draw."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from castway.webhooks.records import DeliveryState, WebhookDelivery

#: The share of a delay drawn at random: retries of many deliveries that failed together
#: (a receiver's outage) spread out instead of arriving together when it comes back.
JITTER = 0.2
MAX_ERROR = 500  # characters of an error kept in the delivery log


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    base_s: float
    max_s: float
    max_attempts: int

    def delay_after(self, attempts: int, draw: float) -> float | None:
        """Seconds from the ``attempts``-th failed attempt to the next one (None: give
        up); ``draw`` in [0, 1) picks the jitter."""
        if attempts >= self.max_attempts:
            return None
        nominal = min(self.max_s, self.base_s * 2.0 ** (attempts - 1))
        return nominal * (1.0 - JITTER * draw)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST got: the status, or None with the error when nothing answered."""

    status: int | None
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def after_attempt(delivery: WebhookDelivery, attempt: Attempt, now: datetime,
                  schedule: RetrySchedule, draw: float) -> WebhookDelivery:
    """The delivery once ``attempt`` is made at ``now``: delivered on a 2xx; given up on
    410 Gone (the receiver says it wants no more) or when the schedule ends; else due
    again after the schedule's delay. Redirects are failures (not followed)."""
    attempts = delivery.attempts + 1
    error = attempt.error[:MAX_ERROR] if attempt.status is None else \
        ("" if attempt.delivered else f"HTTP {attempt.status}")
    done = replace(delivery, attempts=attempts, last_attempt_at=now,
                   last_status=attempt.status, last_error=error)
    if attempt.delivered:
        return replace(done, state=DeliveryState.DELIVERED, next_attempt_at=None)
    delay = None if attempt.status == 410 else schedule.delay_after(attempts, draw)
    if delay is None:
        return replace(done, state=DeliveryState.FAILED, next_attempt_at=None)
    return replace(done, state=DeliveryState.PENDING,
                   next_attempt_at=now + timedelta(seconds=delay))


def redeliver(delivery: WebhookDelivery, now: datetime) -> WebhookDelivery:
    """A delivery sent again on request: due now, a fresh schedule, the same id."""
    return replace(delivery, state=DeliveryState.PENDING, attempts=0, next_attempt_at=now)
