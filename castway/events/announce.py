"""Sending a broadcast's lifecycle event everywhere it is read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from castway.events.broadcasts import BROADCASTS_TOPIC, BroadcastEnd, BroadcastEvent
from castway.events.media import media_topic

if TYPE_CHECKING:
    from castway.live.base import EventBus


async def announce(live: EventBus, event: BroadcastEvent) -> None:
    """Publish ``event`` on ``broadcasts``; a broadcast's end also on its media topic,
    where origins hold blocked playlist reloads that no new part will ever answer."""
    if isinstance(event, BroadcastEnd):
        await live.publish(media_topic(event.broadcast_id), event)
    await live.publish(BROADCASTS_TOPIC, event)
