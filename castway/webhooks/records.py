"""Webhook endpoints and deliveries as the catalog keeps them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from castway.model import utcnow


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A receiver and the event types it wants. ``secret`` (``whsec_...``) is kept as
    given: signing needs it back; the API shows it only when the endpoint is created."""

    id: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: datetime = field(default_factory=utcnow)

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


class DeliveryState(StrEnum):
    PENDING = "pending"  # an attempt is due at ``next_attempt_at``
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # given up (attempts exhausted, 410 Gone, endpoint deleted)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event to one endpoint: the delivery log's row, keyed by both."""

    endpoint_id: str
    msg_id: str
    event_type: str
    body: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = field(default_factory=utcnow)
    created_at: datetime = field(default_factory=utcnow)
    last_attempt_at: datetime | None = None
    last_status: int | None = None  # the receiver's HTTP status; None: no answer
    last_error: str = ""
