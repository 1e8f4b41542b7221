"""Requests to the archiver, on ``archive-requests``, and its answers about clips, on
``clips:{clip_id}``.

The control API publishes; every archiver listening hears each request (the embedded
process's one, or each Celery worker's listener), so carrying one out must be
idempotent: an export is claimed by VOD id (one export of a VOD at a time, fleet-wide),
and a clip is the same playlists and catalog record whoever makes it. A request nobody
hears (``publish`` returns 0) is refused by the API with 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from castway.events.topic import Messages, Topic

#: The longest clip, seconds: a clip is a moment, the VOD is the whole (the API and the
#: archiver both refuse longer).
MAX_CLIP_S = 3600.0


@dataclass(frozen=True, slots=True)
class ExportRequested:
    """Remux a VOD's source rendition into one MP4 (``POST /api/v1/vods/{id}/export``);
    progress and the result show on the VOD's catalog record."""

    TYPE: ClassVar[str] = "export-requested"
    vod_id: str


@dataclass(frozen=True, slots=True)
class ClipRequested:
    """Make VOD ``clip_id`` over a range of ``broadcast_id``'s segments
    (``POST /api/v1/broadcasts/{id}/clips``): the last ``last_s`` seconds, or from
    ``start_s`` to ``end_s`` (seconds from the start of the broadcast). Answered on
    :func:`clip_topic`."""

    TYPE: ClassVar[str] = "clip-requested"
    clip_id: str
    broadcast_id: str
    last_s: float | None = None
    start_s: float | None = None
    end_s: float | None = None


ArchiveRequest: TypeAlias = ExportRequested | ClipRequested

ARCHIVE_REQUESTS_TOPIC: Topic[ArchiveRequest] = Topic(
    "archive-requests", Messages[ArchiveRequest](ExportRequested, ClipRequested))


@dataclass(frozen=True, slots=True)
class ClipReady:
    """The clip's playlists are written and its catalog record saved: it plays."""

    TYPE: ClassVar[str] = "clip-ready"
    clip_id: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class ClipRefused:
    """No clip: ``reason`` says why (no such broadcast, nothing in the range, ...)."""

    TYPE: ClassVar[str] = "clip-refused"
    clip_id: str
    reason: str
    not_found: bool = False  # the broadcast is unknown (the API answers 404, else 409)


ClipAnswer: TypeAlias = ClipReady | ClipRefused

_CLIP_ANSWERS = Messages[ClipAnswer](ClipReady, ClipRefused)


def clip_topic(clip_id: str) -> Topic[ClipAnswer]:
    """Where the archiver answers one clip request (the API subscribes before asking)."""
    return Topic(f"clips:{clip_id}", _CLIP_ANSWERS)
