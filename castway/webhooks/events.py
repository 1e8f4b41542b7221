"""Webhook event types and their payloads: the typed topic messages (``broadcasts``,
``vods``) mapped to what a receiver gets, ``{"type", "timestamp", "data"}`` (Standard
Webhooks, "Payload structure"), with the idempotency key of each event.

Thin payloads: ids and the channel; a receiver asks the API for the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from castway.events.broadcasts import (
    BroadcastEnded,
    BroadcastEvent,
    BroadcastFailed,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.events.restreams import RestreamEvent, RestreamFailed
from castway.events.vods import VodDeleted, VodEvent, VodReady


class EventType(StrEnum):
    """What an endpoint subscribes to; the body's ``type``."""

    BROADCAST_STARTED = "broadcast.started"
    BROADCAST_RESUMED = "broadcast.resumed"
    BROADCAST_ENDED = "broadcast.ended"
    BROADCAST_FAILED = "broadcast.failed"
    VOD_READY = "vod.ready"
    VOD_DELETED = "vod.deleted"
    EXPORT_READY = "export.ready"  # sent by the MP4 export API once it exists
    RESTREAM_FAILED = "restream.failed"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One occurrence, ready to be delivered to every endpoint subscribed to ``type``.

    ``msg_id`` is the ``webhook-id`` of every delivery of it, retries and redeliveries
    included: derived from what identifies the occurrence, so two dispatchers that both
    read the event (two workers) record one delivery per endpoint, not two.
    """

    type: EventType
    msg_id: str
    body: str  # the exact bytes sent and signed (UTF-8)


def _msg_id(key: str) -> str:
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _event(type_: EventType, key: str, occurred_at: datetime,
           data: dict[str, Any]) -> WebhookEvent:
    body = json.dumps({"type": type_.value, "timestamp": occurred_at.isoformat(),
                       "data": data}, separators=(",", ":"), sort_keys=True)
    return WebhookEvent(type_, _msg_id(key), body)


def webhook_event(message: BroadcastEvent | VodEvent | RestreamEvent,
                  occurred_at: datetime) -> WebhookEvent:
    """The webhook of a topic message received at ``occurred_at``."""
    match message:
        case BroadcastStarted(broadcast_id=b, channel=c):
            return _event(EventType.BROADCAST_STARTED, f"started:{b}", occurred_at,
                          {"broadcast_id": b, "channel": c})
        case BroadcastResumed(broadcast_id=b, channel=c, node_id=n):
            # A broadcast may resume many times and the message says nothing that tells
            # two resumes apart but when it was read: two dispatchers reading one resume
            # send it twice, under two ids.
            return _event(EventType.BROADCAST_RESUMED,
                          f"resumed:{b}:{n}:{occurred_at.isoformat()}", occurred_at,
                          {"broadcast_id": b, "channel": c, "node_id": n})
        case BroadcastEnded(broadcast_id=b, channel=c):
            return _event(EventType.BROADCAST_ENDED, f"ended:{b}", occurred_at,
                          {"broadcast_id": b, "channel": c})
        case BroadcastFailed(broadcast_id=b, channel=c, reason=r):
            return _event(EventType.BROADCAST_FAILED, f"failed:{b}", occurred_at,
                          {"broadcast_id": b, "channel": c, "reason": r})
        case VodReady(vod_id=v, broadcast_id=b, channel=c, duration_s=d):
            return _event(EventType.VOD_READY, f"vod-ready:{v}", occurred_at,
                          {"vod_id": v, "broadcast_id": b, "channel": c,
                           "duration_s": round(d, 3)})
        case VodDeleted(vod_id=v, broadcast_id=b, channel=c, reason=r):
            return _event(EventType.VOD_DELETED, f"vod-deleted:{v}", occurred_at,
                          {"vod_id": v, "broadcast_id": b, "channel": c, "reason": r})
        case RestreamFailed(broadcast_id=b, channel=c, target_id=t, target_url=u, reason=r,
                            failures=n, gave_up=g):
            # One event per (target, broadcast, failure count): two dispatchers agree.
            return _event(EventType.RESTREAM_FAILED, f"restream-failed:{b}:{t}:{n}:{g}",
                          occurred_at, {"broadcast_id": b, "channel": c, "target_id": t,
                                        "target_url": u, "reason": r, "failures": n,
                                        "gave_up": g})
    raise TypeError(f"no webhook for {type(message).__name__}")
