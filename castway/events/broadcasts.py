"""A broadcast's lifecycle, on ``broadcasts``: every process that acts on broadcasts
starting and ending reads it (the archiver makes a VOD on ``ended``/``failed``).

``started`` and ``resumed`` come from the ingest node running the broadcast (``resumed``:
its publisher came back within the grace window, to this node or, a handover, to
another node, which names itself in ``node_id``); ``ended`` from that node once the
broadcast's media is complete; ``failed`` from whoever finds its node gone (the
archiver's sweep, the scheduler). A handed-over broadcast gets no ``ended`` in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from castway.events.topic import Messages, Topic


@dataclass(frozen=True, slots=True)
class BroadcastStarted:
    TYPE: ClassVar[str] = "started"
    broadcast_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class BroadcastResumed:
    TYPE: ClassVar[str] = "resumed"
    broadcast_id: str
    channel: str
    node_id: str  # the node that runs it now (another one after a handover)


@dataclass(frozen=True, slots=True)
class BroadcastEnded:
    TYPE: ClassVar[str] = "ended"
    broadcast_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class BroadcastFailed:
    TYPE: ClassVar[str] = "failed"
    broadcast_id: str
    channel: str
    reason: str = ""


BroadcastEvent: TypeAlias = BroadcastStarted | BroadcastResumed | BroadcastEnded | BroadcastFailed
#: A broadcast is over: nothing more of it comes, from any node.
BroadcastEnd: TypeAlias = BroadcastEnded | BroadcastFailed

BROADCASTS_TOPIC: Topic[BroadcastEvent] = Topic("broadcasts", Messages[BroadcastEvent](
    BroadcastStarted, BroadcastResumed, BroadcastEnded, BroadcastFailed))
