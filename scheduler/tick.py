"""One scheduler tick (:class:`Scheduler`): read the fleet, decide
(:func:`scheduler.tiers.decide_tiers`: :func:`scheduler.decide.decide` per tier), apply
each action on its own. Idempotent, one at a time.

Design: docs/scheduler.md, "Running it".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from castway.events.announce import announce
from castway.events.broadcasts import BroadcastFailed
from castway.live.base import LiveState
from castway.model import BroadcastState, Node, NodeState, NodeTier, utcnow
from castway.settings import Settings
from scheduler.agent import CLOSE, DRAIN, OPEN, RESUME, STOP
from scheduler.backends.base import Backend, Instance
from scheduler.coordination import Coordinator, LocalCoordinator
from scheduler.decide import (
    Action,
    CloseNode,
    Decision,
    DrainNode,
    MarkLost,
    OpenNode,
    ResumeNode,
    StartNodes,
    StopNode,
)
from scheduler.metrics import SchedulerMetrics
from scheduler.policy import RATE_WINDOW_S, Policy, heartbeat_interval_s
from scheduler.tiers import decide_tiers

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TickResult:
    ran: bool  # False: another tick held the lock
    decision: Decision | None = None
    errors: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        if self.decision is None:
            return {"ran": self.ran}
        f = self.decision.figures
        out: dict[str, object] = {
            "ran": self.ran, "live_broadcasts": f.live_broadcasts,
            "headroom": round(f.headroom, 3), "free": round(f.free, 3),
            "open_headroom": round(f.open_headroom, 3), "open_free": round(f.open_free, 3),
            "publish_rate_per_min": f.publish_rate_per_min,
            "nodes": dict(f.by_state),
            "actions": [describe(a) for a in self.decision.actions],
            "errors": list(self.errors)}
        if f.tiers:  # with an edge tier: each tier's own (the edge's in publishers)
            out["tiers"] = {name: {"live_broadcasts": t.live_broadcasts,
                                   "headroom": round(t.headroom, 3), "free": round(t.free, 3),
                                   "nodes": dict(t.by_state)} for name, t in f.tiers}
        return out


def describe(action: Action) -> str:
    """One action as a log/report line, e.g. ``drain n1 (expired)``."""
    if isinstance(action, StartNodes):
        kind = " edge" if action.tier == NodeTier.EDGE else ""
        return f"start {action.count}{kind} on {action.version}"
    if isinstance(action, DrainNode):
        return f"drain {action.node_id} ({action.reason.value})"
    if isinstance(action, ResumeNode):
        return f"resume {action.node_id}"
    if isinstance(action, StopNode):
        return f"stop {action.node_id} ({action.reason}{', forced' if action.forced else ''})"
    if isinstance(action, CloseNode):
        return f"close {action.node_id}"
    if isinstance(action, OpenNode):
        return f"open {action.node_id}"
    return f"lost {action.node_id}"


def merge_view(heartbeats: list[Node], instances: list[Instance], capacity: int,
               cost_capacity: float = 0.0, edge_capacity: int | None = None) -> list[Node]:
    """Heartbeats, plus a ``starting`` placeholder for each launched-but-silent node
    (``cost_capacity`` 0: counted at its slots, castway.cost's fallback; an edge node's
    at ``edge_capacity`` publishers, no cost)."""
    by_id = {n.id: n for n in heartbeats}
    for instance in instances:
        node = by_id.get(instance.node_id)
        if node is None:
            edge = instance.tier == NodeTier.EDGE
            by_id[instance.node_id] = Node(
                id=instance.node_id, image_version=instance.version,
                address=instance.address, state=NodeState.STARTING,
                capacity=(edge_capacity or capacity) if edge else capacity,
                heartbeat_at=instance.launched_at,
                cost_capacity=0.0 if edge else cost_capacity, tier=instance.tier)
        elif instance.address and instance.address != node.address:
            by_id[node.id] = replace(node, address=instance.address)  # the routable one
    return sorted(by_id.values(), key=lambda n: n.id)


class Scheduler:
    def __init__(self, settings: Settings, live: LiveState, backend: Backend, *,
                 policy: Policy | None = None, coordinator: Coordinator | None = None,
                 metrics: SchedulerMetrics | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 edge_policy: Policy | None = None) -> None:
        self.settings = settings
        self.live = live
        self.backend = backend
        register_delay_s = getattr(backend, "register_delay_s", 0.0)
        # Behind edges no load balancer sits before the transcoding nodes: a reopened
        # one takes relays once it heartbeats `routable` (node agents beat at most every
        # 5 s), not after a load balancer's registration delay.
        transcode_lead_s = (heartbeat_interval_s(settings.heartbeat_ttl_s)
                            if settings.edge_tier else register_delay_s)
        self.policy = policy or Policy.from_settings(settings, open_lead_s=transcode_lead_s)
        # the edge tier's (scheduler.tiers), when the fleet has one; a fleet whose
        # stopped nodes come back by themselves (static) scales neither tier in
        self.edge_policy = edge_policy or (
            Policy.edge_from_settings(settings, open_lead_s=register_delay_s,
                                      scale_in=self.policy.scale_in)
            if settings.edge_tier else None)
        self.coordinator = coordinator or LocalCoordinator()
        self.metrics = metrics
        self.clock = clock

    @property
    def desired_version(self) -> str:
        return self.settings.desired_version or self.settings.image_version

    @property
    def policies(self) -> dict[NodeTier, Policy]:
        out = {NodeTier.TRANSCODE: self.policy}
        if self.edge_policy is not None:
            out[NodeTier.EDGE] = self.edge_policy
        return out

    async def tick(self, desired_version: str | None = None) -> TickResult:
        lock_ttl_s = max(2 * self.settings.scheduler_interval_s, 30.0)
        if not await self.coordinator.acquire(lock_ttl_s):
            logger.info("tick skipped: another tick holds the lock")
            if self.metrics is not None:
                self.metrics.ticks.labels(outcome="skipped").inc()
            return TickResult(ran=False)
        try:
            return await self._tick(desired_version or self.desired_version)
        finally:
            await self.coordinator.release()

    async def _tick(self, desired_version: str) -> TickResult:
        heartbeats = await self.live.list_nodes()
        instances = await asyncio.to_thread(self.backend.list_instances)
        view = merge_view(heartbeats, instances, self.policy.node_capacity,
                          self.policy.node_cost or 0.0,
                          self.edge_policy.node_capacity if self.edge_policy else None)
        memory = await self.coordinator.load_memory()
        now = self.clock()
        oldest, rate = await self._broadcast_load(now)
        versions = {NodeTier.TRANSCODE: desired_version,
                    NodeTier.EDGE: self.settings.edge_desired_version or desired_version}
        decision = decide_tiers(view, versions, self.policies, now, memory, oldest, rate)
        by_id = {n.id: n for n in view}
        errors: list[str] = []
        for action in decision.actions:
            try:
                await self._apply(action, by_id, now)
            except Exception as exc:
                logger.exception("scheduler action failed",
                                 extra={"action": describe(action)})
                errors.append(f"{describe(action)}: {exc}")
        await self._sync_routing(view, decision, errors)
        await self.coordinator.save_memory(decision.memory)
        if self.metrics is not None:
            self.metrics.record(decision)
            self.metrics.ticks.labels(outcome="ran").inc()
        if decision.actions:
            logger.info("tick", extra={"actions": [describe(a) for a in decision.actions],
                                       "live_broadcasts": decision.figures.live_broadcasts,
                                       "free": round(decision.figures.free, 3),
                                       "headroom": decision.figures.headroom})
        return TickResult(ran=True, decision=decision, errors=tuple(errors))

    async def _apply(self, action: Action, by_id: dict[str, Node], now: datetime) -> None:
        if isinstance(action, StartNodes):
            await asyncio.to_thread(self.backend.start, action.count, action.version,
                                    action.tier)
            return
        node = by_id[action.node_id]
        if isinstance(action, DrainNode):
            await self.live.set_node_command(node.id, DRAIN)
            await asyncio.to_thread(self.backend.set_routable, node, False)
        elif isinstance(action, ResumeNode):
            await self.live.set_node_command(node.id, RESUME)
            await asyncio.to_thread(self.backend.set_routable, node, True)
        elif isinstance(action, StopNode):
            await self.live.set_node_command(node.id, STOP)
            await asyncio.to_thread(self.backend.set_routable, node, False)
            await asyncio.to_thread(self.backend.stop, node.id)
        elif isinstance(action, CloseNode | OpenNode):
            # routing only: the node goes on as it is (_sync_routing keeps it so)
            await asyncio.to_thread(self.backend.set_routable, node,
                                    isinstance(action, OpenNode))
            await self._tell_edges(node, isinstance(action, OpenNode))
        elif isinstance(action, MarkLost):
            await self._fail_broadcasts(node.id, now)
            await self.live.set_node_command(node.id, STOP)  # if it ever comes back
            await asyncio.to_thread(self.backend.set_routable, node, False)
            await asyncio.to_thread(self.backend.stop, node.id)

    async def _broadcast_load(self, now: datetime
                              ) -> tuple[dict[str, datetime], float | None]:
        """Node id -> start of its oldest live broadcast (decide() ranks nodes for packing
        by it), and the publish rate: broadcasts started within :data:`RATE_WINDOW_S`,
        ended ones too (the live state's publish log). ({}, None) if the live state
        cannot answer: decide() then keeps the whole headroom in the load balancer."""
        oldest: dict[str, datetime] = {}
        try:
            broadcasts = await self.live.list_broadcasts()
            recent = await self.live.publishes_since(now - timedelta(seconds=RATE_WINDOW_S))
        except Exception:
            logger.exception("cannot list broadcasts: packing without their ages")
            return oldest, None
        for broadcast in broadcasts:
            if broadcast.state != BroadcastState.LIVE:
                continue
            seen = oldest.get(broadcast.node_id)
            if seen is None or broadcast.started_at < seen:
                oldest[broadcast.node_id] = broadcast.started_at
        return oldest, recent / RATE_WINDOW_S

    async def _fail_broadcasts(self, node_id: str, now: datetime) -> None:
        for broadcast in await self.live.list_broadcasts():
            if broadcast.node_id != node_id or broadcast.state != BroadcastState.LIVE:
                continue
            await self.live.put_broadcast(replace(broadcast, state=BroadcastState.FAILED,
                                                  ended_at=now))
            await announce(self.live, BroadcastFailed(
                broadcast.id, broadcast.channel, f"ingest node {node_id} lost"))
            logger.warning("broadcast failed: node lost",
                           extra={"broadcast_id": broadcast.id, "channel": broadcast.channel,
                                  "node": node_id})

    async def _sync_routing(self, view: list[Node], decision: Decision,
                            errors: list[str]) -> None:
        draining = {d.node_id: d for d in decision.memory.drains}
        closed = set(decision.memory.closed)
        gone = {a.node_id for a in decision.actions if isinstance(a, (StopNode, MarkLost))}
        for node in view:
            drain = draining.get(node.id)
            if (drain is not None and node.state == NodeState.ACTIVE
                    and node.heartbeat_at > drain.since):
                # it heartbeated since the order and is still active: the command was
                # lost (live state flushed?); order it again
                try:
                    await self.live.set_node_command(node.id, DRAIN)
                    await asyncio.to_thread(self.backend.set_routable, node, False)
                except Exception as exc:
                    logger.exception("drain repair failed", extra={"node": node.id})
                    errors.append(f"drain {node.id}: {exc}")
                continue
            if node.state != NodeState.ACTIVE or drain is not None or node.id in gone:
                continue
            try:  # closed: active, keeps its broadcasts, out of the load balancer
                await asyncio.to_thread(self.backend.set_routable, node, node.id not in closed)
                await self._tell_edges(node, node.id not in closed)
            except Exception as exc:
                logger.exception("register failed", extra={"node": node.id})
                errors.append(f"register {node.id}: {exc}")

    async def _tell_edges(self, node: Node, routable: bool) -> None:
        """Behind edges a transcoding node has no load balancer: the edges pick nodes
        from the heartbeats, so the node is told (a node command) and heartbeats it
        (``Node.routable``). Only when it heartbeats otherwise."""
        if (self.edge_policy is not None and node.tier is NodeTier.TRANSCODE
                and node.routable != routable):
            await self.live.set_node_command(node.id, OPEN if routable else CLOSE)

    async def run(self, interval_s: float | None = None,
                  stop: asyncio.Event | None = None) -> None:
        """Tick every ``interval_s`` until ``stop`` is set; a failed tick is logged and
        the next one runs on time."""
        interval = interval_s or self.settings.scheduler_interval_s
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                logger.exception("scheduler tick failed")
            try:
                async with asyncio.timeout(interval):
                    await stop.wait()
            except TimeoutError:
                pass
