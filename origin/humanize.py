"""Values as a viewer reads them: durations exact to the second, short dates, VOD titles.

Dates are UTC and say so (the pages are cached by the CDN for everyone: no per-viewer
time zone on the server side).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from castway.model import Vod


def duration_text(seconds: float) -> str:
    """95 -> "1 min 35 s", 3725 -> "1 h 2 min 5 s", 40 -> "40 s" (rounded to the second)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes else [])
    if secs or not parts:
        parts.append(f"{secs} s")
    return " ".join(parts)


def date_text(when: datetime, *, now: datetime | None = None) -> str:
    """"4 Dec 13:14 UTC"; the year only when it is not this one."""
    when = when.astimezone(UTC)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    day = f"{when.day} {when:%b}" + ("" if when.year == now.year else f" {when.year}")
    return f"{day} {when:%H:%M} UTC"


def vod_started_at(vod: Vod) -> datetime:
    """When the broadcast began: the VOD is made the moment it ends."""
    return vod.created_at - timedelta(seconds=vod.duration_s)


def vod_title(vod: Vod, *, now: datetime | None = None) -> str:
    """"mychan, 4 Dec 13:14 UTC, 1 min 35 s"."""
    return (f"{vod.channel}, {date_text(vod_started_at(vod), now=now)}, "
            f"{duration_text(vod.duration_s)}")
