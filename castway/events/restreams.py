"""Restream targets in trouble, on ``restreams``: from the ingest node sending a live
broadcast to a target. Read by the webhook dispatcher (``restream.failed``).

``gave_up``: the target cannot work for this broadcast (it refused the codec or the key)
and is not tried again; else it failed ``failures`` times in a row and is still retried.
The broadcast itself is never affected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from castway.events.topic import Messages, Topic


@dataclass(frozen=True, slots=True)
class RestreamFailed:
    TYPE: ClassVar[str] = "failed"
    broadcast_id: str
    channel: str
    target_id: str
    target_url: str  # without the key
    reason: str
    failures: int  # consecutive failed attempts so far
    gave_up: bool = False


RestreamEvent: TypeAlias = RestreamFailed

RESTREAMS_TOPIC: Topic[RestreamEvent] = Topic("restreams", Messages[RestreamEvent](
    RestreamFailed))
