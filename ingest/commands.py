"""The ingest node's end of ``node-commands:{node_id}`` (:mod:`castway.events.nodes`):
commands that must reach the node running a broadcast now, such as an operator's stop
(``POST /api/v1/broadcasts/{id}/stop`` publishes it to the node named on the broadcast).

Each command runs in a task of its own: a stop waits for its broadcast's media to be
finished, and the next command need not wait for that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from castway.events.nodes import NodeCommand, StopBroadcast, node_commands_topic
from castway.live.base import EventBus, LiveStateError, Subscription

logger = logging.getLogger(__name__)

#: Retry of the subscription while the live state is down.
RESUBSCRIBE_S = 1.0


class NodeCommands:
    """Listens for this node's commands and carries them out."""

    def __init__(self, live: EventBus, node_id: str, *,
                 stop_broadcast: Callable[[str], Awaitable[bool]]) -> None:
        self.live = live
        self.node_id = node_id
        self.stop_broadcast = stop_broadcast
        self._subscription: Subscription[NodeCommand] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; subscribed when this returns unless the live state is down (then it
        keeps trying in the background)."""
        try:
            self._subscription = await self.live.subscribe(node_commands_topic(self.node_id))
        except LiveStateError:
            logger.exception("cannot listen for node commands yet; retrying",
                             extra={"node": self.node_id})
        self._task = asyncio.create_task(self._listen(), name="node-commands")

    async def stop(self) -> None:
        """Stop listening; commands already started finish (a stop ends its broadcast)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._subscription is not None:
            await self._subscription.close()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _listen(self) -> None:
        while True:
            if self._subscription is None:
                try:
                    self._subscription = await self.live.subscribe(
                        node_commands_topic(self.node_id))
                except LiveStateError:
                    await asyncio.sleep(RESUBSCRIBE_S)
                    continue
            try:
                command = await self._subscription.get()
            except LiveStateError:  # closed: the live state is closing
                return
            task = asyncio.create_task(self._carry_out(command),
                                       name=f"node-command-{type(command).__name__}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _carry_out(self, command: NodeCommand) -> None:
        if isinstance(command, StopBroadcast):
            fields = {"broadcast_id": command.broadcast_id, "node": self.node_id}
            try:
                stopped = await self.stop_broadcast(command.broadcast_id)
            except Exception:
                logger.exception("stopping a broadcast failed", extra=fields)
                return
            if stopped:
                logger.info("broadcast stopped by request", extra=fields)
            else:
                logger.info("stop request for a broadcast not live here", extra=fields)
