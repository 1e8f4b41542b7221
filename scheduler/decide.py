"""The scheduler's one decision, :func:`decide`: fleet in, actions out. Pure, synchronous,
no I/O. OPENREC's "Expire >> Drain >> Stop Container", plus scaling on live broadcasts.

Design: docs/scheduler.md, "The decision".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from castway.model import Node, NodeState, NodeTier
from scheduler.policy import Policy


class DrainReason(StrEnum):
    EXPIRED = "expired"  # old image version
    SCALE_IN = "scale_in"  # surplus capacity
    SHUFFLE = "shuffle"  # old version at the fleet cap: make room for the new one
    UNKNOWN = "unknown"  # seen draining, no record of why (memory lost)


@dataclass(frozen=True, slots=True)
class StartNodes:
    count: int
    version: str
    reason: str = "headroom"
    tier: NodeTier = NodeTier.TRANSCODE  # which kind of node (scheduler.tiers)


@dataclass(frozen=True, slots=True)
class DrainNode:
    node_id: str
    reason: DrainReason


@dataclass(frozen=True, slots=True)
class ResumeNode:
    """Cancel a scale-in drain: cheaper than starting a node."""

    node_id: str


@dataclass(frozen=True, slots=True)
class StopNode:
    node_id: str
    reason: str
    forced: bool = False  # at the drain deadline, broadcasts may still be live


@dataclass(frozen=True, slots=True)
class MarkLost:
    node_id: str


@dataclass(frozen=True, slots=True)
class CloseNode:
    """Take an active node out of the load balancer without draining it: it keeps its
    broadcasts (and admits a publish that reaches it anyway), gets no new connection,
    and empties by itself."""

    node_id: str


@dataclass(frozen=True, slots=True)
class OpenNode:
    """Put a closed node back into the load balancer (cheaper than starting one)."""

    node_id: str


Action = StartNodes | DrainNode | ResumeNode | StopNode | MarkLost | CloseNode | OpenNode


@dataclass(frozen=True, slots=True)
class Drain:
    node_id: str
    since: datetime  # when the drain was ordered
    reason: DrainReason


@dataclass(frozen=True, slots=True)
class Resume:
    node_id: str
    at: datetime  # a "draining" heartbeat older than this predates the resume order


@dataclass(frozen=True, slots=True)
class Opened:
    node_id: str
    at: datetime  # first decision that had it open: it takes publishes open_lead_s later


@dataclass(frozen=True, slots=True)
class FleetMemory:
    """What one tick leaves for the next (cooldowns, drains in progress). JSON-able via
    castway.serde, so a stateless Lambda keeps it in Redis between ticks."""

    last_scale_out_at: datetime | None = None
    last_scale_in_at: datetime | None = None
    drains: tuple[Drain, ...] = ()
    resumes: tuple[Resume, ...] = ()
    closed: tuple[str, ...] = ()  # active nodes held out of the load balancer
    opened: tuple[Opened, ...] = ()  # active nodes in the load balancer, and since when
    # the edge tier's own cooldowns (scheduler.tiers); the fields above them are the
    # transcoding tier's, and the node-keyed tuples hold both tiers' nodes
    edge_last_scale_out_at: datetime | None = None
    edge_last_scale_in_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FleetFigures:
    live_broadcasts: int = 0
    # In cost units (cores, castway.cost), like every capacity figure of the decision.
    headroom: float = 0.0
    free: float = 0.0  # on accepting nodes of the desired version (open, closed, starting)
    open_headroom: float = 0.0
    open_free: float = 0.0  # on the open (routable) ones
    publish_rate_per_min: float | None = None
    by_state: tuple[tuple[str, int], ...] = ()
    # with an edge tier (scheduler.tiers): each tier's own figures; the edge's are in
    # publishers. The figures above are then the transcoding tier's (by_state: both)
    tiers: tuple[tuple[str, FleetFigures], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    memory: FleetMemory
    figures: FleetFigures = field(default_factory=FleetFigures)


def _seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


def capacity_of(node: Node, policy: Policy) -> float:
    """A node's transcode capacity in cores: what it heartbeats, or for a node that
    reports none (transcoding off, an older image, a launch placeholder) its slots at
    the policy's cost of a broadcast."""
    if node.cost_capacity > 0:
        return node.cost_capacity
    return node.capacity * policy.broadcast_cost


def usable_cost(free: float, policy: Policy) -> float:
    """Of ``free`` cores on one node, those that hold whole broadcasts of the policy's
    ``broadcast_cost``: a publish needs its full ladder's room on one node, so 0.3
    cores free on each of ten nodes do not hold one 0.9-core broadcast (fragments do
    not count towards the headroom; small broadcasts still land in them)."""
    whole = math.floor(free / policy.broadcast_cost + 1e-9)
    return max(0, whole) * policy.broadcast_cost


def free_of(node: Node, policy: Policy) -> float:
    """Usable cores free on a node for new broadcasts (:func:`usable_cost`); none once
    its broadcast ceiling is reached, whatever the cores say."""
    if node.free_slots <= 0:
        return 0.0
    if node.cost_capacity > 0:
        return usable_cost(node.cost_free, policy)
    return node.free_slots * policy.broadcast_cost


def used_of(node: Node, policy: Policy) -> float:
    if node.cost_capacity > 0:
        return node.cost_used
    return node.active_broadcasts * policy.broadcast_cost


def _moving(node: Node, policy: Policy) -> float:
    """What a node's reconnect-capable broadcasts will need where they land: their share
    of its cost (each at its mean), or the policy's cost of a broadcast."""
    if node.reconnectable <= 0:
        return 0.0
    if node.cost_capacity > 0 and node.active_broadcasts > 0:
        return node.reconnectable * node.cost_used / node.active_broadcasts
    return node.reconnectable * policy.broadcast_cost


def _silent(node: Node, policy: Policy, now: datetime) -> bool:
    limit = policy.start_timeout_s if node.state == NodeState.STARTING else policy.heartbeat_ttl_s
    return _seconds(now, node.heartbeat_at) > limit


def decide(nodes: Sequence[Node], desired_version: str, policy: Policy, now: datetime,
           memory: FleetMemory | None = None,
           oldest_broadcast: Mapping[str, datetime] | None = None,
           publish_rate_per_s: float | None = None) -> Decision:
    """The actions that move ``nodes`` towards ``desired_version`` with the headroom kept.

    ``nodes`` is the merged view of the fleet: every node's last heartbeat, plus a
    ``starting`` placeholder (heartbeat_at = launch time) for each node the backend has
    launched that has not heartbeated yet. ``oldest_broadcast`` (node id -> start of its
    oldest live broadcast, from the live state) ranks nodes for packing: under a
    heavy-tailed duration, the older a broadcast the longer it is likely to last, so a
    node with an old broadcast will stay up anyway and is the best place for new ones.
    """
    memory = memory or FleetMemory()
    oldest = oldest_broadcast or {}

    def age(node: Node) -> float:
        started = oldest.get(node.id)
        if node.active_broadcasts == 0 or started is None:
            return 0.0
        return max(0.0, _seconds(now, started))

    actions: list[Action] = []
    by_state: dict[str, int] = {}
    alive: list[Node] = []
    for node in sorted(nodes, key=lambda n: n.id):
        if node.state == NodeState.STOPPED:
            by_state[NodeState.STOPPED] = by_state.get(NodeState.STOPPED, 0) + 1
            continue
        if node.state == NodeState.LOST or _silent(node, policy, now):
            by_state[NodeState.LOST] = by_state.get(NodeState.LOST, 0) + 1
            actions.append(MarkLost(node.id))
            continue
        alive.append(node)
    alive_ids = {n.id for n in alive}
    drains = {d.node_id: d for d in memory.drains if d.node_id in alive_ids}
    by_id = {n.id: n for n in alive}
    # a resumed node's "draining" heartbeats are stale until it heartbeats after the order
    resumes = {r.node_id: r for r in memory.resumes
               if r.node_id in by_id and by_id[r.node_id].heartbeat_at <= r.at}
    for node in alive:
        if (node.state == NodeState.DRAINING and node.id not in drains
                and node.id not in resumes):
            drains[node.id] = Drain(node.id, node.heartbeat_at, DrainReason.UNKNOWN)
    for node in alive:
        state = NodeState.DRAINING if node.id in drains else node.state
        by_state[state] = by_state.get(state, 0) + 1

    live = sum(n.active_broadcasts for n in alive)
    used = sum(used_of(n, policy) for n in alive)
    costs = [c for n in alive for c in n.broadcast_costs]
    headroom = policy.headroom(live, now, publish_rate_per_s, used_cost=used, costs=costs)
    open_headroom = policy.open_headroom(live, now, publish_rate_per_s, used_cost=used,
                                         costs=costs)
    hysteresis = policy.hysteresis_slots * policy.broadcast_cost

    def free(n: Node) -> float:
        return free_of(n, policy)
    stopping: set[str] = set()

    # Drain >> Stop: a node stops when its own post-drain heartbeat shows it empty.
    draining = [n for n in alive if n.id in drains]
    for node in draining:
        drain = drains[node.id]
        if (node.state == NodeState.DRAINING and node.active_broadcasts == 0
                and node.heartbeat_at >= drain.since):
            actions.append(StopNode(node.id, reason="drained"))
            stopping.add(node.id)
        elif (policy.drain_deadline_s is not None
              and _seconds(now, drain.since) >= policy.drain_deadline_s):
            actions.append(StopNode(node.id, reason="drain deadline", forced=True))
            stopping.add(node.id)

    accepting = [n for n in alive if n.id not in drains]
    current = [n for n in accepting if n.image_version == desired_version]
    old = [n for n in accepting if n.image_version != desired_version]
    # An old node that never went active has no broadcast to wait for.
    for node in old:
        if node.state == NodeState.STARTING and node.active_broadcasts == 0:
            actions.append(StopNode(node.id, reason="expired before active"))
            stopping.add(node.id)
    old_active = [n for n in old if n.id not in stopping]
    cur_active = [n for n in current if n.state == NodeState.ACTIVE]
    cur_starting = [n for n in current if n.state != NodeState.ACTIVE]
    # Routability: only the open nodes are in the load balancer. A closed node keeps its
    # broadcasts and admits a publish that reaches it (it is not draining); it simply
    # gets no new connection, so it empties by itself, and its free slots are warm
    # headroom: back in the load balancer within a tick.
    remembered = set(memory.closed)
    closed = {n.id for n in cur_active if n.id in remembered}
    retiring: set[str] = set()  # drained for scale-in in this decision

    def free_open() -> float:
        return sum(free(n) for n in cur_active if n.id not in closed and n.id not in retiring)

    def free_all() -> float:  # open, closed and starting: the headroom's cores
        return (sum(free(n) for n in cur_active if n.id not in retiring)
                + sum(free(n) for n in cur_starting))

    # Broadcasts that will land on the open nodes: reconnect requests in flight from
    # draining nodes, and those the expired nodes will send once drained.
    moving = sum(_moving(n, policy) for n in draining if n.id not in stopping)
    old_moving = sum(_moving(n, policy) for n in old_active)
    target = headroom + moving + old_moving
    open_target = open_headroom + moving + old_moving
    floor = policy.min_nodes(now)

    def place_rank(n: Node) -> tuple[int, float, str]:
        # where new broadcasts should go: the fullest nodes (the others empty), then the
        # one likeliest to stay up anyway (under a heavy-tailed duration, the older its
        # oldest broadcast the longer it is likely to last)
        return (-n.active_broadcasts, -age(n), n.id)

    def open_best(until: float) -> None:
        for node in sorted((n for n in cur_active if n.id in closed and free(n) > 0
                            and n.id not in retiring), key=place_rank):
            if free_open() >= until:
                return
            closed.discard(node.id)
            actions.append(OpenNode(node.id))

    # Scale out at once. Open slots first: reopen closed nodes (paid for already), the
    # best placed first. Then the headroom: resume scale-in drains, then start nodes.
    if free_open() < open_target:
        open_best(open_target)
    short = target - free_all()
    short_nodes = floor - len(current)
    if short > 0 or short_nodes > 0:
        resumable = sorted((n for n in draining if n.id not in stopping
                            and n.image_version == desired_version
                            and drains[n.id].reason == DrainReason.SCALE_IN),
                           key=lambda n: (-n.active_broadcasts, n.id))
        for node in resumable:
            if short <= 0 and short_nodes <= 0:
                break
            actions.append(ResumeNode(node.id))
            del drains[node.id]
            resumes[node.id] = Resume(node.id, now)
            short -= free(node)
            short_nodes -= 1
    running = len(alive) - len(stopping)
    node_cost = policy.node_cost or max(
        (capacity_of(n, policy) for n in current), default=policy.node_capacity
        * policy.broadcast_cost)
    node_cost = usable_cost(node_cost, policy) or node_cost  # what a new node holds
    # a float a hair above a whole number of nodes is that number (no extra node)
    wanted = max(math.ceil(short / node_cost - 1e-9) if short > 0 else 0, short_nodes, 0)
    room = max(0, policy.max_nodes - running)
    started = min(wanted, room)
    last_out = memory.last_scale_out_at
    if started > 0:
        actions.append(StartNodes(started, desired_version))
        last_out = now

    # Expire >> Drain: once the desired version holds the headroom on its own.
    last_in = memory.last_scale_in_at
    current_free = sum(free(n) for n in cur_active)
    opened_at = {o.node_id: o.at for o in memory.opened}
    serving_free = sum(free(n) for n in cur_active if n.id not in closed
                       and (policy.open_lead_s <= 0 or (
                           n.id in opened_at
                           and _seconds(now, opened_at[n.id]) >= policy.open_lead_s)))
    if old_active:
        # the new version must hold the headroom, and its load balancer registrations
        # must have taken before the old nodes leave it
        if current_free >= target and serving_free >= min(open_target, current_free) > 0:
            for node in old_active:
                actions.append(DrainNode(node.id, DrainReason.EXPIRED))
                drains[node.id] = Drain(node.id, now, DrainReason.EXPIRED)
        elif wanted > started and not any(d.reason == DrainReason.SHUFFLE
                                           for d in drains.values()):
            # At the fleet cap the new version cannot start: free one old node's place.
            node = min(old_active, key=lambda n: (n.active_broadcasts - n.reconnectable,
                                                  n.active_broadcasts, n.id))
            actions.append(DrainNode(node.id, DrainReason.SHUFFLE))
            drains[node.id] = Drain(node.id, now, DrainReason.SHUFFLE)
    elif policy.scale_in and started == 0 and short <= 0:
        # Packing: close the open nodes new broadcasts should not go to (the worst
        # placed first) while the rest keep the open headroom plus the hysteresis.
        keep_open = open_target + hysteresis
        for node in sorted((n for n in cur_active if n.id not in closed),
                           key=place_rank, reverse=True):
            if free_open() - free(node) < keep_open:
                break
            closed.add(node.id)
            actions.append(CloseNode(node.id))
        # A closed node whose broadcasts can all move (none, or all reconnect-capable)
        # is drained when the headroom holds without it: its publishers reconnect to
        # the open nodes and it stops.
        keep = target + hysteresis
        cooled = last_out is None or _seconds(now, last_out) >= policy.scale_in_cooldown_s
        spaced = last_in is None or _seconds(now, last_in) >= policy.scale_in_interval_s
        kept = len(current)
        for node in sorted((n for n in cur_active if n.id in closed),
                           key=lambda n: (n.active_broadcasts, place_rank(n))):
            if node.active_broadcasts > node.reconnectable or kept - 1 < max(floor, 1):
                continue
            if node.active_broadcasts and not (cooled and spaced):
                continue  # moving broadcasts is not free: slowly, and not while growing
            if free_all() - free(node) - _moving(node, policy) < keep:
                continue
            actions.append(DrainNode(node.id, DrainReason.SCALE_IN))
            drains[node.id] = Drain(node.id, now, DrainReason.SCALE_IN)
            retiring.add(node.id)
            closed.discard(node.id)
            kept -= 1
            if node.reconnectable:  # its publishers land on the open nodes
                open_target += _moving(node, policy)
                open_best(open_target + hysteresis)
                last_in = now
                spaced = False

    # a node closed and reopened within this decision is left as it was
    for node_id in {a.node_id for a in actions if isinstance(a, CloseNode)} & {
            a.node_id for a in actions if isinstance(a, OpenNode)}:
        actions = [a for a in actions
                   if not (isinstance(a, CloseNode | OpenNode) and a.node_id == node_id)]

    for node_id in stopping:
        drains.pop(node_id, None)
    opened = tuple(Opened(n.id, opened_at.get(n.id, now))
                   for n in sorted(cur_active, key=lambda n: n.id)
                   if n.id not in closed and n.id not in drains)
    new_memory = replace(memory, last_scale_out_at=last_out, last_scale_in_at=last_in,
                         closed=tuple(sorted(closed)), opened=opened,
                         drains=tuple(sorted(drains.values(), key=lambda d: d.node_id)),
                         resumes=tuple(sorted(resumes.values(), key=lambda r: r.node_id)))
    figures = FleetFigures(live_broadcasts=live, headroom=headroom, free=free_all(),
                           open_headroom=open_headroom, open_free=free_open(),
                           publish_rate_per_min=None if publish_rate_per_s is None
                           else round(publish_rate_per_s * 60.0, 2),
                           by_state=tuple(sorted(by_state.items())))
    return Decision(actions=tuple(actions), memory=new_memory, figures=figures)
