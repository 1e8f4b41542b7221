"""A VOD's life after its broadcast, on ``vods``: ``ready`` from the archiver once every
object of the VOD is verified in storage, ``deleted`` from whoever deleted it (the
control API, retention). Read by the webhook dispatcher (``vod.ready``, ``vod.deleted``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from castway.events.topic import Messages, Topic


@dataclass(frozen=True, slots=True)
class VodReady:
    TYPE: ClassVar[str] = "ready"
    vod_id: str
    broadcast_id: str
    channel: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class VodDeleted:
    TYPE: ClassVar[str] = "deleted"
    vod_id: str
    broadcast_id: str
    channel: str
    reason: str = ""  # "api", "retention"


VodEvent: TypeAlias = VodReady | VodDeleted

VODS_TOPIC: Topic[VodEvent] = Topic("vods", Messages[VodEvent](VodReady, VodDeleted))
