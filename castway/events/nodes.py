"""Commands to one ingest node, on ``node-commands:{node_id}``: what must reach the
node running a broadcast now (an operator's stop), not at its next heartbeat like the
scheduler's drain/stop orders (``LiveState.set_node_command``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from castway.events.topic import Messages, Topic


@dataclass(frozen=True, slots=True)
class StopBroadcast:
    """End the broadcast now: disconnect its publisher, no reconnect grace window, make
    its VOD (``POST /api/v1/broadcasts/{id}/stop``)."""

    TYPE: ClassVar[str] = "stop-broadcast"
    broadcast_id: str


NodeCommand: TypeAlias = StopBroadcast

_COMMANDS = Messages[NodeCommand](StopBroadcast)


def node_commands_topic(node_id: str) -> Topic[NodeCommand]:
    return Topic(f"node-commands:{node_id}", _COMMANDS)
