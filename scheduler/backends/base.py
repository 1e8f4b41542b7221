"""The one interface every backend honours (synchronous: the tick runs it in a thread)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from castway.model import Node, NodeTier


class BackendError(Exception):
    """A backend could not do what the scheduler asked (the tick logs it and goes on)."""


@dataclass(frozen=True, slots=True)
class Instance:
    """A node the backend launched, whether or not it has heartbeated yet."""

    node_id: str
    version: str
    launched_at: datetime
    address: str = ""  # host:port of its RTMP listener, when known
    tier: NodeTier = NodeTier.TRANSCODE  # an edge node (castway edge) or a transcoding one


class Backend(Protocol):
    #: Seconds from putting a node into the load balancer to its first new publish
    #: (registration and health checks); 0 where publishers reach nodes directly.
    register_delay_s: float

    def list_instances(self) -> list[Instance]:
        """Nodes launched and not yet gone (exited processes / stopped tasks left out)."""

    def start(self, count: int, version: str,
              tier: NodeTier = NodeTier.TRANSCODE) -> list[Instance]:
        """Launch ``count`` nodes of ``tier`` running ``version``."""

    def stop(self, node_id: str) -> None:
        """Stop a node; idempotent (an unknown or gone node is not an error)."""

    def set_routable(self, node: Node, routable: bool) -> None:
        """Put the node in (active) or out of (draining, stopped, lost) the load balancer
        and DNS; idempotent."""

    def close(self) -> None: ...
