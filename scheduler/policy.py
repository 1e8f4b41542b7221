"""The scheduler's policy (:class:`Policy`): how much spare capacity to keep (the headroom
and the open headroom, in transcode cores, never momentary CPU), how fast to move.

Capacity is counted in transcode cost (castway.cost: cores), with the headroom sized
in broadcasts of ``broadcast_cost`` cores each.

Design: docs/scheduler.md, "The decision".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time

from castway.settings import Settings

#: The publish rate the headroom is sized on: broadcasts started in the last 10 minutes.
RATE_WINDOW_S = 600.0
#: The grid the costs of expected publishes are summed on (cores; each cost rounded up).
DEMAND_STEP = 0.05


#: The headroom's share of the live cost on one tier, where a broadcast stays on its node
#: until it ends (a fragmented fleet cannot pack what it has).
ONE_TIER_HEADROOM_FRACTION = 0.2
#: Behind an edge tier every broadcast can move: the publish rate's quantile is the need.
EDGE_TIER_HEADROOM_FRACTION = 0.0


def headroom_fraction(settings: Settings) -> float:
    """HEADROOM_FRACTION, or its default for the fleet: behind an edge tier none, since
    every broadcast can move and the publish rate's quantile is the whole need."""
    if settings.headroom_fraction is not None:
        return settings.headroom_fraction
    return EDGE_TIER_HEADROOM_FRACTION if settings.edge_tier else ONE_TIER_HEADROOM_FRACTION


def heartbeat_interval_s(heartbeat_ttl_s: float) -> float:
    """How often a node agent heartbeats: three beats per TTL, at most every 5 s."""
    return max(0.5, min(5.0, heartbeat_ttl_s / 3))


class PolicyError(ValueError):
    """A policy value that cannot work (negative headroom, empty fleet cap...)."""


@dataclass(frozen=True, slots=True)
class CapacityWindow:
    """A daily window (UTC wall clock) of known peak: keep at least this much capacity.

    ``end`` before ``start`` wraps midnight (e.g. 20:00 -> 02:00).
    """

    start: time
    end: time
    min_nodes: int = 0
    min_free_slots: int = 0

    def contains(self, now: datetime) -> bool:
        t = now.timetz().replace(tzinfo=None) if now.tzinfo else now.time()
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    @classmethod
    def parse(cls, text: str) -> CapacityWindow:
        """``"HH:MM-HH:MM:nodes[:free_slots]"``, e.g. ``"20:00-02:00:6:16"``."""
        try:
            span, _, rest = text.partition("-")
            end_h, end_m, *numbers = rest.split(":")
            start = time.fromisoformat(span.strip())
            end = time(int(end_h), int(end_m))
            min_nodes = int(numbers[0]) if numbers else 0
            min_free = int(numbers[1]) if len(numbers) > 1 else 0
        except (ValueError, IndexError) as exc:
            raise PolicyError(f"bad capacity window {text!r}: want HH:MM-HH:MM:nodes"
                              "[:free_slots]") from exc
        return cls(start=start, end=end, min_nodes=min_nodes, min_free_slots=min_free)


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything :func:`scheduler.decide.decide` needs besides the fleet and the clock."""

    node_capacity: int = 8  # broadcasts a node takes at most (its ceiling)
    # cores one broadcast is counted at when sizing the headroom (and for a node that
    # reports no cost); 1.0 makes cores and slots the same number
    broadcast_cost: float = 1.0
    # transcode capacity (cores) of a node the scheduler starts; None: the largest that
    # nodes of the desired version heartbeat, else node_capacity x broadcast_cost
    node_cost: float | None = None
    headroom_min_slots: int = 2
    headroom_fraction: float = ONE_TIER_HEADROOM_FRACTION  # of the live cost, fleet-wide
    max_nodes: int = 20  # every running node counts, draining ones too
    heartbeat_ttl_s: float = 30.0  # an active/draining node silent longer is lost
    start_timeout_s: float = 180.0  # a starting node silent longer is lost
    scale_in_cooldown_s: float = 600.0  # no scale-in this soon after a scale-out
    scale_in_interval_s: float = 120.0  # at most one scale-in drain per interval
    hysteresis_slots: int = 2  # free slots kept beyond the headroom before scaling in
    # False for a fleet whose stopped nodes come back by themselves (static backend):
    # no node is closed nor drained for surplus; expired and lost ones still are
    scale_in: bool = True
    drain_deadline_s: float | None = None  # stop a draining node anyway after this
    windows: tuple[CapacityWindow, ...] = ()
    # what the publish rate must be covered for: a tick, then a started node coming up
    # and into the load balancer (start_lead_s) or a reopened one registering (open_lead_s)
    tick_interval_s: float = 60.0
    start_lead_s: float = 120.0
    open_lead_s: float = 60.0
    burst_quantile: float = 0.999  # of the Poisson arrivals within those lead times

    def __post_init__(self) -> None:
        if self.node_capacity < 1:
            raise PolicyError("node_capacity must be at least 1")
        if self.broadcast_cost <= 0 or (self.node_cost is not None and self.node_cost <= 0):
            raise PolicyError("costs are positive")
        if self.headroom_min_slots < 0 or self.headroom_fraction < 0:
            raise PolicyError("headroom cannot be negative")
        if self.max_nodes < 1:
            raise PolicyError("max_nodes must be at least 1")
        if self.hysteresis_slots < 0:
            raise PolicyError("hysteresis_slots cannot be negative")
        if not 0.0 < self.burst_quantile < 1.0:
            raise PolicyError("burst_quantile must be between 0 and 1")

    def _window_slots(self, now: datetime) -> int:
        return max((w.min_free_slots for w in self.windows if w.contains(now)), default=0)

    def headroom(self, live_broadcasts: int, now: datetime,
                 publish_rate_per_s: float | None = None, *,
                 used_cost: float | None = None, costs: Sequence[float] = ()) -> float:
        """Free cores to keep on the accepting nodes of the desired version.

        ``used_cost``: what the live broadcasts cost (default: ``broadcast_cost`` each);
        its fraction is rounded up to whole broadcasts. ``costs``: each live
        broadcast's, the mix the expected publishes are costed on
        (:meth:`publish_demand`)."""
        used = (live_broadcasts * self.broadcast_cost if used_cost is None else used_cost)
        share = math.ceil(self.headroom_fraction * used / self.broadcast_cost - 1e-9)
        floor = max(self.headroom_min_slots, share, self._window_slots(now)) * self.broadcast_cost
        if publish_rate_per_s is None:
            return floor
        lead = self.tick_interval_s + self.start_lead_s
        return max(floor, self.publish_demand(publish_rate_per_s * lead, costs))

    def open_headroom(self, live_broadcasts: int, now: datetime,
                      publish_rate_per_s: float | None = None, *,
                      used_cost: float | None = None, costs: Sequence[float] = ()) -> float:
        """Free cores to keep on the nodes in the load balancer. Without a measured
        publish rate, the whole headroom."""
        headroom = self.headroom(live_broadcasts, now, publish_rate_per_s,
                                 used_cost=used_cost, costs=costs)
        if publish_rate_per_s is None:
            return headroom
        lead = self.tick_interval_s + self.open_lead_s
        floor = max(self.headroom_min_slots, self._window_slots(now)) * self.broadcast_cost
        return min(headroom, max(floor, self.publish_demand(publish_rate_per_s * lead, costs)))

    def publish_demand(self, expected_publishes: float, costs: Sequence[float] = ()) -> float:
        """Cores the publishes of a lead time need at the ``burst_quantile``.

        Without the live mix, that many publishes (the Poisson quantile) at
        ``broadcast_cost`` each. With it, the quantile of what they *cost*
        (compound Poisson), each publish drawn from the live broadcasts' costs plus
        one at ``broadcast_cost``: a prior that weighs on a small fleet and fades on a
        large one. Counting every publish at the dearest cost is the first figure's
        bias: at 0.999 it kept about twice the cores the same publishes need
        (docs/scheduler.md)."""
        if not costs:
            return poisson_upper(expected_publishes, self.burst_quantile) * self.broadcast_cost
        return compound_poisson_upper(expected_publishes, (*costs, self.broadcast_cost),
                                      self.burst_quantile)

    def min_nodes(self, now: datetime) -> int:
        """Accepting nodes to keep whatever the load (scheduled capacity windows)."""
        return max((w.min_nodes for w in self.windows if w.contains(now)), default=0)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> Policy:
        values: dict[str, object] = {
            "node_capacity": settings.node_capacity,
            "broadcast_cost": settings.headroom_broadcast_cost,
            "headroom_min_slots": settings.headroom_min_slots,
            "headroom_fraction": headroom_fraction(settings),
            "max_nodes": settings.max_nodes,
            "heartbeat_ttl_s": settings.heartbeat_ttl_s,
            "tick_interval_s": settings.scheduler_interval_s,
            "windows": tuple(CapacityWindow.parse(w) for w in
                             (settings.capacity_windows or "").split(",") if w.strip()),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def edge_from_settings(cls, settings: Settings, **overrides: object) -> Policy:
        """The edge tier's policy (scheduler.tiers): counted in publishers (an edge node
        heartbeats no transcode cost, so each publisher counts one unit), its own
        headroom and fleet cap; the capacity windows are the transcoding tier's."""
        values: dict[str, object] = {
            "node_capacity": settings.edge_capacity,
            "broadcast_cost": 1.0,
            "headroom_min_slots": settings.edge_headroom_min_slots,
            "headroom_fraction": settings.edge_headroom_fraction,
            "max_nodes": settings.edge_max_nodes,
            "heartbeat_ttl_s": settings.heartbeat_ttl_s,
            "tick_interval_s": settings.scheduler_interval_s,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def poisson_upper(mean: float, quantile: float) -> int:
    """The smallest k with P(X <= k) >= ``quantile`` for X ~ Poisson(``mean``)."""
    if mean <= 0.0:
        return 0
    if mean > 500.0:  # normal approximation, far past any node's slots
        z = _normal_quantile(quantile)
        return math.ceil(mean + z * math.sqrt(mean) + 0.5)
    term = math.exp(-mean)
    total = term
    k = 0
    while total < quantile:
        k += 1
        term *= mean / k
        total += term
    return k


def compound_poisson_upper(mean: float, costs: Sequence[float], quantile: float,
                           step: float = DEMAND_STEP) -> float:
    """The ``quantile`` of S = C1 + ... + CN, N ~ Poisson(``mean``), each C drawn
    uniformly from ``costs`` (rounded up to ``step``): Panjer's recursion on the grid.
    Past a mean of 500 (exp(-mean) underflows) the normal approximation, as in
    :func:`poisson_upper`."""
    if mean <= 0.0 or not costs:
        return 0.0
    units = Counter(max(1, math.ceil(c / step - 1e-9)) for c in costs)
    total = len(costs)
    weights = {unit: count / total for unit, count in units.items()}
    if mean > 500.0:
        first = sum(u * w for u, w in weights.items()) * step
        second = sum(u * u * w for u, w in weights.items()) * step * step
        z = _normal_quantile(quantile)
        return mean * first + z * math.sqrt(mean * second)
    probabilities = [math.exp(-mean)]
    cumulative = probabilities[0]
    s = 0
    while cumulative < quantile:
        s += 1
        p = mean / s * sum(unit * w * probabilities[s - unit]
                           for unit, w in weights.items() if unit <= s)
        probabilities.append(p)
        cumulative += p
    return s * step


def _normal_quantile(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return hi
