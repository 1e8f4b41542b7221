"""New media of one broadcast, on ``media:{broadcast_id}``: what origins wait on to
answer LL-HLS blocking playlist reloads (``origin.notify``).

The transcoder's sink publishes a :class:`MediaUpdate` after each new window of a
rendition (its bytes and playlist already written). The broadcast's end comes here too
(:func:`castway.events.announce.announce`), so a reload blocked on a part that will
never exist is answered at once, with EXT-X-ENDLIST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from castway.events.broadcasts import BroadcastEnded, BroadcastFailed
from castway.events.topic import Messages, Topic


@dataclass(frozen=True, slots=True)
class MediaUpdate:
    """Rendition ``rendition``'s window changed: segment ``msn`` (``part`` None) or part
    ``part`` of it is in the live state."""

    TYPE: ClassVar[None] = None  # no "type": the form every version reads (rolling deploys)
    rendition: str
    msn: int
    part: int | None = None


MediaEvent: TypeAlias = MediaUpdate | BroadcastEnded | BroadcastFailed

_MEDIA = Messages[MediaEvent](MediaUpdate, BroadcastEnded, BroadcastFailed)


def media_topic(broadcast_id: str) -> Topic[MediaEvent]:
    return Topic(f"media:{broadcast_id}", _MEDIA)
