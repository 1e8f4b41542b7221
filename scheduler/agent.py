"""The scheduler's side inside every ingest node (:class:`NodeAgent`): heartbeats out,
commands in; ``admission()`` tells the publish handler whether to accept a publish.

Design: docs/scheduler.md, "Node lifecycle" and "Draining an ingest node".
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace

from castway.cost import CostLedger
from castway.live.base import NodeRegistry
from castway.model import Node, NodeState, NodeTier, utcnow
from castway.settings import Settings
from scheduler.policy import heartbeat_interval_s

logger = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None] | None]

DRAIN = "drain"
RESUME = "resume"
STOP = "stop"
#: Out of rotation and back (a closed node keeps its broadcasts): heartbeated as
#: ``Node.routable`` for the edges, which have no load balancer to be told.
CLOSE = "close"
OPEN = "open"


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class NodeAgent:
    """Heartbeats this node every ``interval_s`` and follows the scheduler's commands."""

    def __init__(self, settings: Settings, live: NodeRegistry,
                 active_broadcasts: Callable[[], int],
                 cpu: Callable[[], float] | None = None, *,
                 reconnectable: Callable[[], int] | None = None,
                 address: str | None = None, interval_s: float | None = None,
                 ledger: CostLedger | None = None, tier: NodeTier = NodeTier.TRANSCODE,
                 capacity: int | None = None) -> None:
        self.settings = settings
        self.live = live
        self.node_id = settings.node_id or default_node_id()
        self.address = address or f"{settings.host}:{settings.rtmp_port}"
        self.tier = tier
        self.capacity = settings.node_capacity if capacity is None else capacity
        self.interval_s = interval_s or heartbeat_interval_s(settings.heartbeat_ttl_s)
        # The record outlives the TTL so the scheduler sees the silence and marks it lost.
        self.record_ttl_s = 3 * settings.heartbeat_ttl_s
        self._active_broadcasts = active_broadcasts
        self._cpu = cpu
        self._reconnectable = reconnectable
        # The transcoders' cost ledger (None: no transcoding here, slots only).
        self.ledger = ledger
        self._state = NodeState.STARTING
        self.routable = True
        self._on_drain: list[Callback] = []
        self.stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- what the ingest side calls --------------------------------------------------
    @property
    def state(self) -> NodeState:
        return self._state

    def ready(self) -> None:
        """The RTMP listener is up: starting -> active (a drain that came first wins)."""
        if self._state == NodeState.STARTING:
            self._state = NodeState.ACTIVE
            self._wake.set()

    def admission(self) -> str | None:
        """None to accept a new publish, else why it is refused."""
        if self._state == NodeState.STARTING:
            return "ingest node is starting"
        if self._state == NodeState.DRAINING:
            return "ingest node is draining: publish to another node"
        if self._state in (NodeState.STOPPED, NodeState.LOST):
            return "ingest node is stopping"
        active = self._active_broadcasts()
        if self.ledger is not None:
            return self.ledger.admission(active, self.capacity)
        if active >= self.capacity:
            return f"ingest node is full ({active}/{self.capacity} broadcasts)"
        return None

    def on_drain(self, callback: Callback) -> None:
        """Run ``callback`` when this node starts draining (e.g. send reconnect requests)."""
        self._on_drain.append(callback)

    # --- the loop --------------------------------------------------------------------
    async def start(self, *, ready: bool = True) -> None:
        """Heartbeat in the background; ``ready``: the RTMP listener is already up."""
        if ready:
            self.ready()
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"node-agent:{self.node_id}")

    async def stop(self) -> None:
        """Last heartbeat (``stopped``) and end the background loop."""
        await self.close()
        task, self._task = self._task, None
        if task is not None:
            await task

    def snapshot(self) -> Node:
        cpu = 0.0
        if self._cpu is not None:
            cpu = self._cpu()
        reconnectable = self._reconnectable() if self._reconnectable is not None else 0
        ledger = self.ledger
        return Node(id=self.node_id, image_version=self.settings.image_version,
                    address=self.address, state=self._state, capacity=self.capacity,
                    active_broadcasts=self._active_broadcasts(), heartbeat_at=utcnow(),
                    cpu=cpu, reconnectable=reconnectable,
                    cost_capacity=ledger.capacity if ledger is not None else 0.0,
                    cost_used=ledger.used if ledger is not None else 0.0,
                    cost_error=ledger.estimate_error if ledger is not None else None,
                    broadcast_costs=ledger.costs if ledger is not None else (),
                    tier=self.tier, routable=self.routable)

    async def beat(self) -> Node:
        """Read the scheduler's command, act on it, and heartbeat the result."""
        command = await self.live.get_node_command(self.node_id)
        if command is not None:
            await self._apply(command)
        node = self.snapshot()
        await self.live.heartbeat(node, self.record_ttl_s)
        return node

    async def run(self) -> None:
        """Heartbeat until stopped (by command or :meth:`close`)."""
        while not self.stopped.is_set():
            try:
                await self.beat()
            except Exception:  # the live state may blip; the next beat retries
                logger.exception("heartbeat failed", extra={"node": self.node_id})
            self._wake.clear()
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def drain(self) -> None:
        """Go draining now, as if the scheduler had ordered it (SIGTERM on the node), and
        heartbeat it at once so the fleet stops sending publishers here."""
        await self._apply(DRAIN)
        try:
            await self.beat()
        except Exception:  # the live state may blip; the loop beats again
            logger.exception("draining heartbeat failed", extra={"node": self.node_id})

    async def close(self) -> None:
        """Heartbeat a last ``stopped`` so the scheduler does not wait for the TTL."""
        if self._state != NodeState.STOPPED:
            self._state = NodeState.STOPPED
            try:
                await self.live.heartbeat(replace(self.snapshot(), state=NodeState.STOPPED),
                                          self.record_ttl_s)
            except Exception:
                logger.exception("last heartbeat failed", extra={"node": self.node_id})
        self.stopped.set()
        self._wake.set()

    async def _apply(self, command: str) -> None:
        if command == DRAIN and self._state in (NodeState.STARTING, NodeState.ACTIVE):
            self._state = NodeState.DRAINING
            logger.info("draining", extra={"node": self.node_id})
            await self._run_callbacks(self._on_drain)
        elif command == RESUME and self._state == NodeState.DRAINING:
            self._state = NodeState.ACTIVE
            logger.info("resumed", extra={"node": self.node_id})
        elif command == STOP and self._state != NodeState.STOPPED:
            self._state = NodeState.STOPPED
            logger.info("stopping", extra={"node": self.node_id})
            self.stopped.set()
        elif command in (CLOSE, OPEN):
            self.routable = command == OPEN
        elif command not in (DRAIN, RESUME, STOP):
            logger.warning("unknown node command ignored",
                           extra={"node": self.node_id, "command": command})

    async def _run_callbacks(self, callbacks: list[Callback]) -> None:
        for callback in callbacks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("node callback failed", extra={"node": self.node_id})
