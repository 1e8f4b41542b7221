"""The scheduler's policy: how much spare capacity to keep, how fast to move.

Capacity is counted in broadcast slots, never CPU: an RTMP connection lasts as long as
its broadcaster wants, so the only safe measure of load is the number of live broadcasts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time

from castway.settings import Settings


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

    node_capacity: int = 8  # slots of a node the scheduler starts
    headroom_min_slots: int = 2
    headroom_fraction: float = 0.2  # of live broadcasts, fleet-wide
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

    def __post_init__(self) -> None:
        if self.node_capacity < 1:
            raise PolicyError("node_capacity must be at least 1")
        if self.headroom_min_slots < 0 or self.headroom_fraction < 0:
            raise PolicyError("headroom cannot be negative")
        if self.max_nodes < 1:
            raise PolicyError("max_nodes must be at least 1")
        if self.hysteresis_slots < 0:
            raise PolicyError("hysteresis_slots cannot be negative")

    def headroom(self, live_broadcasts: int, now: datetime) -> int:
        """Free slots to keep on nodes that accept publishes."""
        slots = max(self.headroom_min_slots, math.ceil(self.headroom_fraction * live_broadcasts))
        for window in self.windows:
            if window.contains(now):
                slots = max(slots, window.min_free_slots)
        return slots

    def min_nodes(self, now: datetime) -> int:
        """Accepting nodes to keep whatever the load (scheduled capacity windows)."""
        return max((w.min_nodes for w in self.windows if w.contains(now)), default=0)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> Policy:
        values: dict[str, object] = {
            "node_capacity": settings.node_capacity,
            "headroom_min_slots": settings.headroom_min_slots,
            "headroom_fraction": settings.headroom_fraction,
            "max_nodes": settings.max_nodes,
            "heartbeat_ttl_s": settings.heartbeat_ttl_s,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
