"""A fleet whose processes castway does not manage (:class:`StaticBackend`): docker compose
services, or the one node of the embedded ``castway serve``.

Design: docs/scheduler.md, "Backends".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from castway.live.base import NodeRegistry
from castway.model import Node, NodeTier
from scheduler.agent import STOP
from scheduler.backends.base import BackendError, Instance

logger = logging.getLogger(__name__)


class StaticBackend:
    register_delay_s = 0.0  # no load balancer: every node at its own address

    def __init__(self, live: NodeRegistry, *, loop: asyncio.AbstractEventLoop | None = None,
                 on_wanted: Callable[[int], None] | None = None,
                 command_timeout_s: float = 10.0) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError as exc:
                raise BackendError("the static backend needs the event loop that owns the "
                                   "live state: build it inside that loop or pass loop=")\
                    from exc
        self.live = live
        self.loop = loop
        self.on_wanted = on_wanted
        self.command_timeout_s = command_timeout_s
        self._last_wanted: dict[NodeTier, int] = {}  # the shortfall last warned about

    def list_instances(self) -> list[Instance]:
        return []  # heartbeats only

    def start(self, count: int, version: str,
              tier: NodeTier = NodeTier.TRANSCODE) -> list[Instance]:
        if count <= 0:
            self._last_wanted.pop(tier, None)
            return []
        # Once per shortfall, not every tick: the scheduler asks again each minute while
        # the fleet stays as it is, and nothing here can change that.
        log = logger.warning if count != self._last_wanted.get(tier) else logger.debug
        self._last_wanted[tier] = count
        kind = "edge nodes" if tier == NodeTier.EDGE else "nodes"
        log("%d more %s wanted: the static backend cannot start nodes "
            "(scale the compose service or the fleet by hand)", count, kind,
            extra={"wanted": count, "version": version, "tier": tier.value})
        if self.on_wanted is not None:
            self.on_wanted(count)
        return []

    def stop(self, node_id: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise BackendError("StaticBackend.stop blocks: call it from a worker thread "
                               "(asyncio.to_thread), as the tick does")
        future = asyncio.run_coroutine_threadsafe(
            self.live.set_node_command(node_id, STOP), self.loop)
        try:
            future.result(self.command_timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise BackendError(f"could not order node {node_id} to stop within "
                               f"{self.command_timeout_s:g} s") from exc
        except Exception as exc:
            raise BackendError(f"could not order node {node_id} to stop: {exc}") from exc
        logger.info("node ordered to stop (it exits; its supervisor restarts a fresh one)",
                    extra={"node": node_id})

    def set_routable(self, node: Node, routable: bool) -> None:
        return None  # no load balancer: every node is reachable at its own address

    def close(self) -> None:
        return None
