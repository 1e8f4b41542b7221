"""Replay a day of user-driven broadcasts against the scheduler (``castway``) and two
baselines (``cpu_autoscaler``, ``fixed_fleet``), against the ideal lower bound.

Capacity is in cost units (castway.cost: cores): each broadcast's source is drawn
from :data:`SOURCE_MIX` at its full-ladder cost, and a publish lands only where that fits.

Design: docs/scheduler.md, "Simulator".
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from castway.model import Node, NodeState, NodeTier
from castway.settings import Settings
from scheduler.decide import (
    CloseNode,
    DrainNode,
    FleetMemory,
    MarkLost,
    OpenNode,
    ResumeNode,
    StartNodes,
    StopNode,
    decide,
    usable_cost,
)
from scheduler.policy import RATE_WINDOW_S, Policy, heartbeat_interval_s
from scheduler.tiers import decide_tiers

#: (source, share of publishes, cost in cores with the full auto ladder): estimates from
#: ``castway calibrate`` on the 2-core development machine (docs/scheduler.md); a
#: passthrough-only source (no rung below it, or a codec the ladder passes through)
#: costs its packaging.
SOURCE_MIX: tuple[tuple[str, float, float], ...] = (
    ("1080p60", 0.15, 0.90), ("1080p30", 0.30, 0.58), ("720p30", 0.35, 0.30),
    ("passthrough", 0.20, 0.01))
NODE_COST = 1.7  # cores of a node: 2 at the 85 % utilisation target
NODE_VCPUS = 2.0  # what that node is billed as
#: A transcoding node behind edges: deploy/aws's default IngestCpu (8192 units). Once every
#: broadcast can move, bigger nodes pack tighter (docs/scheduler.md, the two tiers).
EDGE_TIER_TRANSCODE_VCPUS = 8.0
#: ... taking 24 broadcasts at most (NodeCapacity; 16 GiB of IngestMemory, and fewer
#: slots than the cores' cheap broadcasts would fill cost 1.287 x on seed 7, 3 refused)
EDGE_TIER_NODE_CAPACITY = 24
UTILISATION = NODE_COST / NODE_VCPUS


@dataclass(frozen=True, slots=True)
class Workload:
    seed: int = 7
    hours: float = 24.0
    warmup_h: float = 12.0  # simulated before the measured day, so it starts loaded
    trough_rate_per_min: float = 0.5
    peak_rate_per_min: float = 3.5
    peak_hour: float = 22.0
    median_duration_min: float = 40.0
    duration_sigma: float = 1.3  # of the log-normal: mean ~ 2.3 x median
    max_duration_h: float = 24.0
    reconnect_fraction: float = 0.0  # publishers that honour E-RTMP v2 ReconnectRequest
    deploy_at_h: float | None = 22.0  # new image version at the peak

    def rate_per_s(self, t: float) -> float:
        hour = (t / 3600.0) % 24.0
        shape = (1.0 + math.cos(2 * math.pi * (hour - self.peak_hour) / 24.0)) / 2.0
        return (self.trough_rate_per_min
                + (self.peak_rate_per_min - self.trough_rate_per_min) * shape ** 2) / 60.0

    def broadcasts(self) -> list[tuple[float, float, bool, float]]:
        """(arrival, duration, reconnectable, cost) from -warmup to the end of the day."""
        rng = random.Random(self.seed)
        sources = random.Random(self.seed + 1)  # the arrivals stay those of the seed
        shares = [share for _, share, _ in SOURCE_MIX]
        peak = self.peak_rate_per_min / 60.0
        t = -self.warmup_h * 3600.0
        end = self.hours * 3600.0
        out: list[tuple[float, float, bool, float]] = []
        mu = math.log(self.median_duration_min * 60.0)
        while True:
            t += rng.expovariate(peak)  # thinning of a non-homogeneous Poisson process
            if t >= end:
                return out
            if rng.random() * peak > self.rate_per_s(t):
                continue
            duration = min(rng.lognormvariate(mu, self.duration_sigma),
                           self.max_duration_h * 3600.0)
            cost = sources.choices(SOURCE_MIX, shares)[0][2]
            out.append((t, max(duration, 30.0), rng.random() < self.reconnect_fraction, cost))


@dataclass(slots=True)
class SimNode:
    id: str
    version: str
    capacity: int  # broadcasts at most
    cost_capacity: float  # cores
    active_at: float
    state: NodeState = NodeState.STARTING
    routable: bool = False
    routable_at: float = 0.0  # a node put into the load balancer takes publishes from then
    broadcasts: set[int] = field(default_factory=set)
    used: float = 0.0  # cores its broadcasts cost


@dataclass(slots=True)
class Figures:
    container_hours: float = 0.0
    ideal_container_hours: float = 0.0
    ideal_with_headroom_container_hours: float = 0.0  # the policy's own bound
    # the tightest bound for a scheduler that may neither cut nor move a broadcast: the
    # headroom bound, except that after the deploy the broadcasts pinned to old-version
    # nodes (no reconnect support) are packed apart from the rest, perfectly
    no_migration_bound_container_hours: float = 0.0
    # not a bound: what a clairvoyant packer that knows every broadcast's end and places it
    # itself (no load balancer) pays with the same headroom and no migration
    clairvoyant_packing_container_hours: float = 0.0
    # the same packer knowing no end: perfect placement control, no foresight
    online_packing_container_hours: float = 0.0
    interrupted: int = 0
    refused: int = 0
    broadcasts: int = 0
    moved: int = 0  # broadcasts moved off a draining node by a reconnect request
    peak_nodes: int = 0
    # (hour, nodes, nodes the live broadcasts' cost fills)
    samples: list[tuple[float, int, float]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"interrupted": self.interrupted,
                "container_hours": round(self.container_hours, 1),
                "ideal_container_hours": round(self.ideal_container_hours, 1),
                "ideal_with_headroom_container_hours":
                    round(self.ideal_with_headroom_container_hours, 1),
                "no_migration_bound_container_hours":
                    round(self.no_migration_bound_container_hours, 1),
                "clairvoyant_packing_container_hours":
                    round(self.clairvoyant_packing_container_hours, 1),
                "online_packing_container_hours":
                    round(self.online_packing_container_hours, 1),
                "no_migration_ratio":
                    round(self.container_hours / self.no_migration_bound_container_hours, 3)
                if self.no_migration_bound_container_hours else None,
                "ratio": round(self.container_hours / self.ideal_container_hours, 3)
                if self.ideal_container_hours else None,
                "refused": self.refused, "broadcasts": self.broadcasts,
                "moved": self.moved, "peak_nodes": self.peak_nodes}


class World:
    """Nodes, broadcasts and the counters; strategies act on it at each tick."""

    def __init__(self, workload: Workload, capacity: int, start_delay_s: float,
                 rng: random.Random, register_delay_s: float = 0.0,
                 node_cost: float = NODE_COST, *, prefix: str = "n",
                 placement: str = "random") -> None:
        self.workload = workload
        self.prefix = prefix
        # "random": a load balancer's pick among the routable nodes with room; "fullest":
        # the routable node with the least room that holds it (an edge picking the
        # transcoding node it relays to); "emptiest": what castway edge does today
        # (ingest.edge.placement): the active node with the most free cores, closed
        # (out of the load balancer) or not, from its first heartbeat
        self.placement = placement
        self.capacity = capacity
        self.node_cost = node_cost
        self.cost: dict[int, float] = {}  # broadcast -> its cost
        self.start_delay_s = start_delay_s
        self.register_delay_s = register_delay_s
        self.publishes: deque[float] = deque()  # when each broadcast was placed
        self.rng = rng
        self.nodes: dict[str, SimNode] = {}
        self.where: dict[int, str] = {}  # broadcast -> node
        self.reconnectable: set[int] = set()
        self.started: dict[int, float] = {}  # broadcast -> its start
        self.figures = Figures()
        self.now = 0.0
        self.version = "v1"
        self._ids = itertools.count(1)

    @property
    def measuring(self) -> bool:
        return self.now >= 0.0

    def start(self, version: str) -> SimNode:
        node = SimNode(f"{self.prefix}{next(self._ids)}", version, self.capacity, self.node_cost,
                       self.now + self.start_delay_s)
        self.nodes[node.id] = node
        return node

    def stop(self, node_id: str) -> None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        for b in node.broadcasts:
            del self.where[b]
            self.started.pop(b, None)
            self.reconnectable.discard(b)
            if self.measuring:
                self.figures.interrupted += 1

    def set_routable(self, node: SimNode, routable: bool) -> None:
        """In or out of the load balancer; in, it takes publishes once registered."""
        if routable and not node.routable:
            node.routable_at = self.now + self.register_delay_s
        node.routable = routable

    def publish_rate(self, window_s: float = RATE_WINDOW_S) -> float:
        while self.publishes and self.publishes[0] < self.now - window_s:
            self.publishes.popleft()
        return len(self.publishes) / window_s

    def accepting(self, cost: float, exclude: str | None = None) -> list[SimNode]:
        """Routable nodes with room for a broadcast of ``cost`` (a float a hair over is
        rounding, not over-commitment)."""
        every_active = self.placement == "emptiest"
        return [n for n in self.nodes.values() if n.state == NodeState.ACTIVE
                and (every_active or (n.routable and n.routable_at <= self.now))
                and len(n.broadcasts) < n.capacity
                and n.used + cost <= n.cost_capacity + 1e-9 and n.id != exclude]

    def place(self, b: int, exclude: str | None = None) -> bool:
        cost = self.cost[b]
        choices = self.accepting(cost, exclude)
        if not choices:
            return False
        if self.placement == "fullest":
            node = min(choices, key=lambda n: (n.cost_capacity - n.used,
                                               n.capacity - len(n.broadcasts), n.id))
        elif self.placement == "emptiest":
            node = min(choices, key=lambda n: (n.used - n.cost_capacity,
                                               len(n.broadcasts) - n.capacity, n.id))
        else:
            node = self.rng.choice(choices)
        if b not in self.started:
            self.publishes.append(self.now)
        self.started.setdefault(b, self.now)
        node.broadcasts.add(b)
        node.used += cost
        self.where[b] = node.id
        return True

    def _take(self, node: SimNode, b: int) -> None:
        if b in node.broadcasts:
            node.broadcasts.discard(b)
            node.used = max(0.0, node.used - self.cost[b])

    def end(self, b: int) -> None:
        self.started.pop(b, None)
        node_id = self.where.pop(b, None)
        self.reconnectable.discard(b)
        if node_id is not None:
            self._take(self.nodes[node_id], b)

    def move_off(self, node: SimNode) -> None:
        """A draining node's reconnect requests: each reconnectable publisher reconnects
        through the load balancer; refused, it keeps streaming where it is."""
        for b in sorted(node.broadcasts & self.reconnectable):
            if self.place(b, exclude=node.id):
                self._take(node, b)
                if self.measuring:
                    self.figures.moved += 1

    @property
    def live(self) -> int:
        return len(self.where)

    @property
    def live_cost(self) -> float:
        return sum(self.cost[b] for b in self.where)


Strategy = Callable[[World], None]


def castway_strategy(policy: Policy) -> Strategy:
    memory = FleetMemory()
    epoch = datetime(2026, 1, 1, tzinfo=UTC)

    def tick(world: World) -> None:
        nonlocal memory
        now = epoch + timedelta(seconds=world.now)
        view = [Node(id=n.id, image_version=n.version, address="", state=n.state,
                     capacity=n.capacity, active_broadcasts=len(n.broadcasts),
                     heartbeat_at=now, cost_capacity=n.cost_capacity, cost_used=n.used,
                     broadcast_costs=tuple(world.cost[b] for b in n.broadcasts),
                     reconnectable=len(n.broadcasts & world.reconnectable))
                for n in world.nodes.values()]
        oldest = {n.id: epoch + timedelta(seconds=min(world.started[b] for b in n.broadcasts))
                  for n in world.nodes.values() if n.broadcasts}
        decision = decide(view, world.version, policy, now, memory, oldest,
                          world.publish_rate())
        memory = decision.memory
        draining: list[SimNode] = []
        for action in decision.actions:
            if isinstance(action, StartNodes):
                for _ in range(action.count):
                    world.start(action.version)
            elif isinstance(action, DrainNode):
                node = world.nodes[action.node_id]
                node.state = NodeState.DRAINING
                world.set_routable(node, False)
                draining.append(node)
            elif isinstance(action, ResumeNode):
                world.nodes[action.node_id].state = NodeState.ACTIVE
            elif isinstance(action, (StopNode, MarkLost)):
                world.stop(action.node_id)
            elif isinstance(action, (CloseNode, OpenNode)):
                pass  # routability follows memory.closed below
        closed = set(memory.closed)
        for node in world.nodes.values():
            # the executor (de)registers every active node on every tick
            world.set_routable(node, node.state == NodeState.ACTIVE and node.id not in closed)
        for node in draining:  # the agent's on_drain hook: reconnect requests, once
            world.move_off(node)

    return tick


def _cpu(node: SimNode) -> float:
    """CPU of a node: its broadcasts' cost over its cores (the cost capacity is 85 %)."""
    return min(1.0, 0.05 + node.used / (node.cost_capacity / 0.85))


def cpu_strategy(target: float = 0.6, scale_in_after_ticks: int = 15,
                 min_nodes: int = 1, max_nodes: int = 200) -> Strategy:
    """ECS service target tracking on CPU, rolling deploys (min 100 %, max 200 %)."""
    low_ticks = 0

    def tick(world: World) -> None:
        nonlocal low_ticks
        for node in world.nodes.values():
            if node.state == NodeState.ACTIVE:
                world.set_routable(node, True)
        current = [n for n in world.nodes.values() if n.version == world.version]
        old = [n for n in world.nodes.values() if n.version != world.version]
        if old:  # rolling deploy: replace old tasks as new ones come up
            up = [n for n in current if n.state == NodeState.ACTIVE]
            pending = [n for n in current if n.state == NodeState.STARTING]
            for _ in range(max(0, len(old) - len(up) - len(pending))):
                world.start(world.version)
            for node in old[:len(up)]:
                world.stop(node.id)
            return
        active = [n for n in current if n.state == NodeState.ACTIVE]
        if not active:
            if not current:
                world.start(world.version)
            return
        avg = sum(_cpu(n) for n in active) / len(active)
        desired = max(min_nodes, min(max_nodes, math.ceil(len(active) * avg / target)))
        if desired > len(current):
            low_ticks = 0
            for _ in range(desired - len(current)):
                world.start(world.version)
        elif desired < len(active):
            low_ticks += 1
            if low_ticks >= scale_in_after_ticks:
                low_ticks = 0
                for node in world.rng.sample(active, len(active) - desired):
                    world.stop(node.id)
        else:
            low_ticks = 0

    return tick


def fixed_strategy(size: int) -> Strategy:
    """A fleet of ``size`` nodes; a deploy replaces them (rolling, min 100 %)."""

    def tick(world: World) -> None:
        for node in world.nodes.values():
            if node.state == NodeState.ACTIVE:
                world.set_routable(node, True)
        current = [n for n in world.nodes.values() if n.version == world.version]
        old = [n for n in world.nodes.values() if n.version != world.version]
        for _ in range(size - len(current)):
            world.start(world.version)
        up = [n for n in current if n.state == NodeState.ACTIVE]
        for node in old[:len(up)]:
            world.stop(node.id)

    return tick


def run(workload: Workload, strategy: Strategy, *, capacity: int = 8,
        node_cost: float = NODE_COST,
        start_delay_s: float = 60.0, register_delay_s: float = 60.0, tick_s: float = 60.0,
        step_s: float = 5.0, seed: int = 1, policy: Policy | None = None) -> Figures:
    """Replay ``workload`` against ``strategy``; figures cover the measured day only.

    A node takes ``start_delay_s`` to come up; put into the load balancer (a new node,
    or a closed one reopened), it takes publishes ``register_delay_s`` later."""
    world = World(workload, capacity, start_delay_s, random.Random(seed), register_delay_s,
                  node_cost)
    policy = policy or replace(default_policy(), node_capacity=capacity, node_cost=node_cost)
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    arrivals = workload.broadcasts()
    ends: list[tuple[float, int]] = []
    # (end, cost) of every broadcast wanted, placed or not, and of those on the old
    # version at the deploy
    demand: list[tuple[float, float]] = []
    pinned: list[tuple[float, float]] = []
    deploy_at = (workload.deploy_at_h * 3600.0 if workload.deploy_at_h is not None
                 else math.inf)
    t = -workload.warmup_h * 3600.0
    end = workload.hours * 3600.0
    i = 0
    next_tick = t
    world.now = t
    strategy(world)
    while t < end:
        t += step_s
        world.now = t
        while ends and ends[0][0] <= t:
            _, b = heapq.heappop(ends)
            world.end(b)
        while demand and demand[0][0] <= t:
            heapq.heappop(demand)
        for node in world.nodes.values():
            if node.state == NodeState.STARTING and node.active_at <= t:
                node.state = NodeState.ACTIVE
        while pinned and pinned[0][0] <= t:
            heapq.heappop(pinned)
        if t >= deploy_at:
            world.version, deploy_at = "v2", math.inf
            pinned = sorted((a + d, c) for a, d, r, c in arrivals[:i] if a + d > t and not r)
        while i < len(arrivals) and arrivals[i][0] <= t:
            arrival, duration, reconnectable, cost = arrivals[i]
            world.cost[i] = cost
            heapq.heappush(demand, (arrival + duration, cost))
            if world.place(i):
                heapq.heappush(ends, (arrival + duration, i))
                if reconnectable:
                    world.reconnectable.add(i)
            elif world.measuring:
                world.figures.refused += 1
            if world.measuring:
                world.figures.broadcasts += 1
            i += 1
        if t >= next_tick:
            next_tick += tick_s
            strategy(world)
        if world.measuring:
            f = world.figures
            f.container_hours += len(world.nodes) * step_s / 3600.0
            demand_cost = sum(c for _, c in demand)
            pinned_cost = sum(c for _, c in pinned)
            f.ideal_container_hours += _nodes(demand_cost, node_cost) * step_s / 3600.0
            wanted = demand_cost + policy.headroom(len(demand), epoch + timedelta(seconds=t),
                                                   used_cost=demand_cost)
            f.ideal_with_headroom_container_hours += (_nodes(wanted, node_cost)
                                                      * step_s / 3600.0)
            f.no_migration_bound_container_hours += (
                (_nodes(pinned_cost, node_cost)
                 + _nodes(wanted - pinned_cost, node_cost)) * step_s / 3600.0)
            f.peak_nodes = max(f.peak_nodes, len(world.nodes))
            if int(t) % 300 == 0:
                f.samples.append((t / 3600.0, len(world.nodes), demand_cost / node_cost))
    return world.figures


def _nodes(cost: float, node_cost: float) -> int:
    return math.ceil(cost / node_cost - 1e-9) if cost > 0 else 0


def clairvoyant_packing(workload: Workload, policy: Policy, *, capacity: int = 8,
                        node_cost: float = NODE_COST, step_s: float = 5.0,
                        clairvoyant: bool = True) -> float:
    """Container-hours of a reference no scheduler can beat by much without moving
    broadcasts: it knows when every broadcast will end and places each one itself, on
    the node of the current version that lives at least as long and ends soonest after
    it (else on the longest-lived one, else a new node). Nodes stop as their last
    broadcast ends; free slots on any node of the current version count as headroom, and
    empty nodes are added only when they do not cover it. Best-fit is a heuristic, so
    this is a reference for the cost of heavy tails and the deploy, not a lower bound.

    ``clairvoyant=False``: the same packer without knowing any end, placing each
    broadcast itself on the fullest node (no load balancer, no start or registration
    delay): about the best a scheduler that can neither see the future nor move a
    broadcast does."""
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    arrivals = workload.broadcasts()
    count: dict[int, int] = {}
    load: dict[int, float] = {}
    last_end: dict[int, float] = {}
    version: dict[int, int] = {}
    ends: list[tuple[float, int, float]] = []
    ids = itertools.count(1)
    current = 1
    deploy_at = (workload.deploy_at_h * 3600.0 if workload.deploy_at_h is not None
                 else math.inf)
    t = -workload.warmup_h * 3600.0
    end = workload.hours * 3600.0
    i = 0
    cost = 0.0
    while t < end:
        t += step_s
        while ends and ends[0][0] <= t:
            _, b, c = heapq.heappop(ends)
            count[b] -= 1
            load[b] -= c
            if count[b] == 0:
                del count[b], load[b], last_end[b], version[b]
        if t >= deploy_at:
            current, deploy_at = current + 1, math.inf
        while i < len(arrivals) and arrivals[i][0] <= t:
            arrival, duration, _, need = arrivals[i]
            finish = arrival + duration
            i += 1
            open_bins = [b for b in count if version[b] == current and count[b] < capacity
                         and load[b] + need <= node_cost + 1e-9]
            longer = [b for b in open_bins if last_end[b] >= finish]
            if not clairvoyant and open_bins:  # no end known: fullest, then oldest
                chosen = max(open_bins, key=lambda b: (load[b], -b))
            elif longer:
                chosen = min(longer, key=lambda b: (last_end[b], b))
            elif open_bins:
                chosen = max(open_bins, key=lambda b: (last_end[b], -b))
            else:
                chosen = next(ids)
                count[chosen], load[chosen] = 0, 0.0
                last_end[chosen], version[chosen] = finish, current
            count[chosen] += 1
            load[chosen] += need
            last_end[chosen] = max(last_end[chosen], finish)
            heapq.heappush(ends, (finish, chosen, need))
        if t >= 0.0:
            live = sum(count.values())
            used = sum(load.values())
            free = sum(usable_cost(node_cost - load[b], policy) for b, c in count.items()
                       if version[b] == current and c < capacity)
            short = policy.headroom(live, epoch + timedelta(seconds=t), used_cost=used) - free
            extra = _nodes(short, usable_cost(node_cost, policy) or node_cost)
            cost += (len(count) + extra) * step_s / 3600.0
    return cost


def peak_live(workload: Workload) -> tuple[int, float]:
    """Most broadcasts, and most cost, live at once in the workload (sizes the fixed
    fleet)."""
    arrivals = workload.broadcasts()
    events = sorted([(a, 1, c) for a, _, _, c in arrivals]
                    + [(a + d, -1, -c) for a, d, _, c in arrivals])
    live = best = 0
    cost = best_cost = 0.0
    for _, delta, c in events:
        live += delta
        cost += c
        best = max(best, live)
        best_cost = max(best_cost, cost)
    return best, best_cost


def compare(workload: Workload, policy: Policy, *, start_delay_s: float = 60.0
            ) -> dict[str, Figures]:
    cap = policy.node_capacity
    node_cost = policy.node_cost or NODE_COST
    peak, peak_cost = peak_live(workload)
    fixed_size = _nodes(peak_cost + policy.headroom(peak, datetime(2026, 1, 1, tzinfo=UTC),
                                                    used_cost=peak_cost), node_cost)
    results = {
        "castway": run(workload, castway_strategy(policy), capacity=cap, node_cost=node_cost,
                       start_delay_s=start_delay_s, policy=policy),
        "cpu_autoscaler": run(workload, cpu_strategy(max_nodes=policy.max_nodes),
                              capacity=cap, node_cost=node_cost,
                              start_delay_s=start_delay_s, policy=policy),
        "fixed_fleet": run(workload, fixed_strategy(fixed_size), capacity=cap,
                           node_cost=node_cost, start_delay_s=start_delay_s, policy=policy),
    }
    reference = clairvoyant_packing(workload, policy, capacity=cap, node_cost=node_cost)
    online = clairvoyant_packing(workload, policy, capacity=cap, node_cost=node_cost,
                                 clairvoyant=False)
    for figures in results.values():
        figures.clairvoyant_packing_container_hours = reference
        figures.online_packing_container_hours = online
    return results


def report(results: dict[str, Figures]) -> dict[str, Any]:
    """One JSON object: castway's figures at the top level, each baseline under its name."""
    out = results["castway"].as_json()
    for name, figures in results.items():
        if name != "castway":
            out[name] = figures.as_json()
    return out


def plot(results: dict[str, Figures], path: Path) -> None:
    """Nodes and live broadcasts over the day, one panel per strategy (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 3 * len(results)), sharex=True)
    for ax, (name, figures) in zip(axes, results.items(), strict=True):
        hours = [s[0] for s in figures.samples]
        ax.plot(hours, [s[1] for s in figures.samples], label="nodes")
        ax.plot(hours, [s[2] for s in figures.samples], label="live cost / node cost",
                linestyle="--")
        ax.set_title(f"{name}: {figures.container_hours:.0f} container-h "
                     f"(ideal {figures.ideal_container_hours:.0f}), "
                     f"{figures.interrupted} interrupted, {figures.refused} refused")
        ax.legend(loc="upper left")
    axes[-1].set_xlabel("hour of day (deploy at the peak)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def default_policy(max_nodes: int = 200) -> Policy:
    """The scheduler's defaults on 2-core nodes: a broadcast counted at the cost of the
    dearest source of the mix for the headroom."""
    return replace(Policy(), max_nodes=max_nodes, node_cost=NODE_COST,
                   broadcast_cost=max(cost for _, _, cost in SOURCE_MIX))


# --- two tiers: RTMP edge nodes in front of the transcoding nodes (issue 15) ----------

#: Cores one relayed publisher costs ``castway edge``, measured by ``castway bench edge
#: --publishers 20`` on the 2-core machine (BENCHMARKS.md, "Edge relay overhead"): the
#: relay's cost follows its message rate, hardly its bit rate (720p30: 0.0111 at 3.3
#: Mbit/s, 0.0118 at 6.4; 720p60 at 6.4 Mbit/s: 0.0159).
EDGE_COST_30FPS = 0.0118
EDGE_COST_60FPS = 0.0159
#: The simulator's mix (15 % 60 fps sources, the rest 30 fps) at those costs.
EDGE_COST_PER_PUBLISHER = 0.012
#: An edge node as deploy/aws starts it: EdgeCpu 512 (0.5 vCPU) and EdgeCapacity 25
#: publishers, what its cores hold at the utilisation target were they all 60 fps.
EDGE_TIER_EDGE_VCPUS = 0.5
EDGE_TIER_EDGE_CAPACITY = 25


@dataclass(frozen=True, slots=True)
class EdgeModel:
    """The edge tier of the two-tier day: every publisher's connection ends on an edge
    node, which relays its broadcast to a transcoding node.

    ``cost_per_publisher`` (cores, :data:`EDGE_COST_PER_PUBLISHER` by default); an edge
    node takes ``capacity`` publishers at most and no more than its cores hold at the
    utilisation target; ``vcpus`` is its size (by default the transcoding nodes' 2-vCPU
    node; ``castway scheduler simulate --edge`` takes deploy/aws's)."""

    cost_per_publisher: float = EDGE_COST_PER_PUBLISHER
    capacity: int = 200
    vcpus: float = NODE_VCPUS

    @property
    def node_cost(self) -> float:
        return self.vcpus * UTILISATION

    @property
    def publishers_per_node(self) -> int:
        return max(1, min(self.capacity,
                          math.floor(self.node_cost / self.cost_per_publisher + 1e-9)))


@dataclass(slots=True)
class TierFigures:
    vcpus_per_node: float
    node_hours: float = 0.0
    peak_nodes: int = 0
    interrupted: int = 0
    moved: int = 0

    @property
    def vcpu_hours(self) -> float:
        return self.node_hours * self.vcpus_per_node

    def as_json(self) -> dict[str, Any]:
        return {"vcpu_hours": round(self.vcpu_hours, 1),
                "node_hours": round(self.node_hours, 1),
                "vcpus_per_node": self.vcpus_per_node, "peak_nodes": self.peak_nodes,
                "interrupted": self.interrupted, "moved": self.moved}


@dataclass(slots=True)
class TwoTierFigures:
    edge: TierFigures
    transcode: TierFigures
    publishers_per_edge_node: int = 0
    # both tiers' live cost at every instant, in whole 2-vCPU nodes (the one-tier
    # ideal's definition, with the edge's cost added)
    ideal_vcpu_hours: float = 0.0
    transcode_ideal_vcpu_hours: float = 0.0  # the one-tier ideal, in vCPU-hours
    refused: int = 0
    broadcasts: int = 0
    one_tier: Figures | None = None
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)

    @property
    def total_vcpu_hours(self) -> float:
        return self.edge.vcpu_hours + self.transcode.vcpu_hours

    def as_json(self) -> dict[str, Any]:
        edge = self.edge.as_json() | {"publishers_per_node": self.publishers_per_edge_node}
        transcode = self.transcode.as_json() | {
            "ideal_vcpu_hours": round(self.transcode_ideal_vcpu_hours, 1),
            "ratio": round(self.transcode.vcpu_hours / self.transcode_ideal_vcpu_hours, 3)
            if self.transcode_ideal_vcpu_hours else None}
        out: dict[str, Any] = {
            "tiers": {"edge": edge, "transcode": transcode},
            "total_vcpu_hours": round(self.total_vcpu_hours, 1),
            "ideal_vcpu_hours": round(self.ideal_vcpu_hours, 1),
            "ratio": round(self.total_vcpu_hours / self.ideal_vcpu_hours, 3)
            if self.ideal_vcpu_hours else None,
            "interrupted": self.edge.interrupted + self.transcode.interrupted,
            "refused": self.refused, "moved": self.transcode.moved,
            "broadcasts": self.broadcasts}
        if self.one_tier is not None:
            # the same transcoding nodes, no edge: its ideal is the transcoding tier's
            one = self.one_tier
            vcpu_hours = one.container_hours * self.transcode.vcpus_per_node
            out["one_tier"] = {
                "vcpu_hours": round(vcpu_hours, 1),
                "container_hours": round(one.container_hours, 1),
                "ideal_vcpu_hours": round(self.transcode_ideal_vcpu_hours, 1),
                "ratio": round(vcpu_hours / self.transcode_ideal_vcpu_hours, 3)
                if self.transcode_ideal_vcpu_hours else None,
                "interrupted": one.interrupted, "refused": one.refused,
                "moved": one.moved, "peak_nodes": one.peak_nodes}
        return out


TwoTierStrategy = Callable[[World, World], None]


def _view(world: World, tier: NodeTier, now: datetime) -> list[Node]:
    edge = tier == NodeTier.EDGE
    return [Node(id=n.id, image_version=n.version, address="", state=n.state,
                 capacity=n.capacity, active_broadcasts=len(n.broadcasts),
                 heartbeat_at=now, cost_capacity=0.0 if edge else n.cost_capacity,
                 cost_used=0.0 if edge else n.used,
                 broadcast_costs=() if edge else tuple(world.cost[b] for b in n.broadcasts),
                 reconnectable=len(n.broadcasts & world.reconnectable), tier=tier)
            for n in world.nodes.values()]


def two_tier_strategy(policies: dict[NodeTier, Policy]) -> TwoTierStrategy:
    """castway's :func:`scheduler.tiers.decide_tiers` over both tiers at each tick."""
    memory = FleetMemory()
    epoch = datetime(2026, 1, 1, tzinfo=UTC)

    def tick(edges: World, transcoders: World) -> None:
        nonlocal memory
        now = epoch + timedelta(seconds=transcoders.now)
        worlds = {NodeTier.EDGE: edges, NodeTier.TRANSCODE: transcoders}
        view = [n for tier, world in worlds.items() for n in _view(world, tier, now)]
        oldest = {n.id: epoch + timedelta(seconds=min(world.started[b] for b in n.broadcasts))
                  for world in worlds.values() for n in world.nodes.values() if n.broadcasts}
        decision = decide_tiers(view, {t: w.version for t, w in worlds.items()}, policies,
                                now, memory, oldest, transcoders.publish_rate())
        memory = decision.memory
        for action in decision.actions:
            if isinstance(action, StartNodes):
                for _ in range(action.count):
                    worlds[action.tier].start(action.version)
                continue
            world = edges if action.node_id in edges.nodes else transcoders
            if isinstance(action, DrainNode):
                node = world.nodes[action.node_id]
                node.state = NodeState.DRAINING
                world.set_routable(node, False)
            elif isinstance(action, ResumeNode):
                world.nodes[action.node_id].state = NodeState.ACTIVE
            elif isinstance(action, (StopNode, MarkLost)):
                world.stop(action.node_id)
        closed = set(memory.closed)
        for world in worlds.values():
            for node in world.nodes.values():
                world.set_routable(node, node.state == NodeState.ACTIVE
                                   and node.id not in closed)
        # Reconnect requests: every relay on a draining transcoding node is asked to
        # move, and one that found no room is asked again at the next tick, so the node
        # empties as soon as the others have room instead of waiting for broadcasts to
        # end (the edge tier's publishers cannot move: move_off leaves them).
        for node in list(transcoders.nodes.values()):
            if node.state == NodeState.DRAINING and node.broadcasts:
                transcoders.move_off(node)

    return tick


def two_tier_policies(policy: Policy, edge: EdgeModel) -> dict[NodeTier, Policy]:
    """The transcoding tier's policy as given, a reopened node counted open after a
    heartbeat (as scheduler.tick does behind edges); the edge tier's with the defaults
    of :meth:`Policy.edge_from_settings`, counted in publishers."""
    settings = _default_settings()
    defaults = Policy.edge_from_settings(settings)
    return {NodeTier.EDGE: replace(defaults, node_capacity=edge.publishers_per_node,
                                   max_nodes=policy.max_nodes),
            NodeTier.TRANSCODE: replace(
                policy, open_lead_s=heartbeat_interval_s(settings.heartbeat_ttl_s))}


def _default_settings() -> Settings:
    return Settings.model_construct()  # the defaults, without reading the environment


def run_two_tier(workload: Workload, strategy: TwoTierStrategy, edge: EdgeModel, *,
                 capacity: int = 8, node_cost: float = NODE_COST,
                 start_delay_s: float = 60.0, register_delay_s: float = 60.0,
                 transcode_open_delay_s: float = 5.0,
                 tick_s: float = 60.0, step_s: float = 5.0, seed: int = 1,
                 placement: str = "random") -> TwoTierFigures:
    """Replay ``workload`` on two tiers: each publish lands on a routable edge node
    (a load balancer's pick), whose relay lands on a routable transcoding node with room
    for its ladder (``placement``); refused when either tier has no room. Behind the
    edge every broadcast is reconnect-capable on the transcoding tier, whatever its
    encoder; the edge tier keeps its publishers. The deploy is the transcoding tier's
    (the edge is rarely deployed). ``register_delay_s`` is the edge tier's (its load
    balancer's); a reopened transcoding node takes relays once its next heartbeat
    says so (``transcode_open_delay_s``)."""
    rng = random.Random(seed)
    edges = World(workload, edge.publishers_per_node, start_delay_s,
                  random.Random(rng.random()), register_delay_s, 0.0, prefix="e")
    transcoders = World(workload, capacity, start_delay_s, random.Random(rng.random()),
                        transcode_open_delay_s, node_cost, prefix="t", placement=placement)
    figures = TwoTierFigures(edge=TierFigures(edge.vcpus),
                             transcode=TierFigures(node_cost / UTILISATION),
                             publishers_per_edge_node=edge.publishers_per_node)
    arrivals = workload.broadcasts()
    ends: list[tuple[float, int]] = []
    demand: list[tuple[float, float]] = []
    deploy_at = (workload.deploy_at_h * 3600.0 if workload.deploy_at_h is not None
                 else math.inf)
    t = -workload.warmup_h * 3600.0
    end = workload.hours * 3600.0
    i = 0
    next_tick = t
    worlds = (edges, transcoders)
    for world in worlds:
        world.now = t
    strategy(edges, transcoders)
    while t < end:
        t += step_s
        for world in worlds:
            world.now = t
        while ends and ends[0][0] <= t:
            _, b = heapq.heappop(ends)
            edges.end(b)
            transcoders.end(b)
        while demand and demand[0][0] <= t:
            heapq.heappop(demand)
        for world in worlds:
            for node in world.nodes.values():
                if node.state == NodeState.STARTING and node.active_at <= t:
                    node.state = NodeState.ACTIVE
        if t >= deploy_at:
            transcoders.version, deploy_at = "v2", math.inf
        while i < len(arrivals) and arrivals[i][0] <= t:
            arrival, duration, _, cost = arrivals[i]
            edges.cost[i], transcoders.cost[i] = 0.0, cost
            heapq.heappush(demand, (arrival + duration, cost))
            if edges.place(i):
                if transcoders.place(i):
                    heapq.heappush(ends, (arrival + duration, i))
                    transcoders.reconnectable.add(i)  # the edge honours reconnects
                else:
                    edges.end(i)  # no transcoding room: the edge refuses the publish
                    figures.refused += transcoders.measuring
            else:
                figures.refused += transcoders.measuring
            figures.broadcasts += transcoders.measuring
            i += 1
        if t >= next_tick:
            next_tick += tick_s
            strategy(edges, transcoders)
        if transcoders.measuring:
            hours = step_s / 3600.0
            demand_cost = sum(c for _, c in demand)
            edge_cost = len(demand) * edge.cost_per_publisher
            figures.ideal_vcpu_hours += (_nodes(demand_cost + edge_cost, NODE_COST)
                                         * NODE_VCPUS * hours)
            figures.transcode_ideal_vcpu_hours += (_nodes(demand_cost, NODE_COST)
                                                   * NODE_VCPUS * hours)
            for world, tier in ((edges, figures.edge), (transcoders, figures.transcode)):
                tier.node_hours += len(world.nodes) * hours
                tier.peak_nodes = max(tier.peak_nodes, len(world.nodes))
            if int(t) % 300 == 0:
                figures.samples.append((t / 3600.0, len(edges.nodes), len(transcoders.nodes),
                                        demand_cost / node_cost))
    figures.edge.interrupted = edges.figures.interrupted
    figures.transcode.interrupted = transcoders.figures.interrupted
    figures.transcode.moved = transcoders.figures.moved
    return figures


def sized_policy(policy: Policy, vcpus: float) -> Policy:
    """``policy`` for nodes of ``vcpus``: their cores at the utilisation target, and the
    broadcast ceiling of the 2-vCPU node per vCPU (8 per 2 vCPUs)."""
    return replace(policy, node_cost=vcpus * UTILISATION,
                   node_capacity=max(1, round(policy.node_capacity * vcpus / NODE_VCPUS)))


def compare_tiers(workload: Workload, policy: Policy, edge: EdgeModel | None = None, *,
                  start_delay_s: float = 60.0, placement: str = "random",
                  one_tier_policy: Policy | None = None) -> TwoTierFigures:
    """The same day on two tiers, with today's one tier beside it (the same transcoding
    node; ``one_tier_policy``, by default the same policy)."""
    edge = edge or EdgeModel()
    node_cost = policy.node_cost or NODE_COST
    figures = run_two_tier(workload, two_tier_strategy(two_tier_policies(policy, edge)),
                           edge, capacity=policy.node_capacity, node_cost=node_cost,
                           start_delay_s=start_delay_s, placement=placement)
    one = one_tier_policy or policy
    figures.one_tier = run(workload, castway_strategy(one), capacity=one.node_capacity,
                           node_cost=node_cost, start_delay_s=start_delay_s, policy=one)
    return figures
