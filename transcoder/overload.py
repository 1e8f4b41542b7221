"""What a transcoder gives up when the machine cannot keep up: one defined order, decided
here from the lag alone (sans-IO: lag and clock in, the plan out).

The order, cheapest loss first (docs/transcoder.md, "Overload"):

1. every encoded rung above 30 fps drops to half its rate (60 -> 30), the highest first:
   motion is what those rungs add, and half their encoding goes with it;
2. whole rungs stop, from the next segment on, the largest first and the smallest last:
   the passthrough still serves the top quality, so the largest encoded rung has the
   nearest substitute and costs the most, while the bottom rung is what thin links have.

With every rung stopped the broadcast is a passthrough, which costs a hundredth of a core
and always keeps up. Halved frame rates come back once the lag has stayed low for a
while; a stopped rung never does: its playlist is gone and players have moved off it.

Nothing else is skipped: no rung ever drops frames below its (possibly halved) rate, so
every segment is whole and as long as its media, in every rung that still runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from castway.rungs import LOW_RUNG_MAX_FPS
from transcoder.ladder import Rung

# Behind real time by more than this, the next step is taken.
LAG_LIMIT_S = 1.0
# After a step has taken effect, the next one waits this long (wall clock) for the lag
# to turn...
SETTLE_S = 1.0
# ...and is not taken while the lag comes down at least this fast (seconds of lag per
# second: catching up at 1.1x real time clears a 2 s lag in 20 s).
RECOVERY_RATE = 0.1
# Below LAG_LIMIT_S / 4 for this long, the most recent halved rate comes back.
RECOVER_AFTER_S = 15.0


class Action(StrEnum):
    HALF_RATE = "half_rate"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Degradation:
    """One rung's degradation, as the broadcast's stats show it."""

    rung: str
    action: Action
    since_s: float  # the clock (time.monotonic in the child) when it was decided
    lag_s: float  # the lag that decided it: the why


@dataclass(slots=True)
class OverloadPolicy:
    """The plan for one broadcast's encoded rungs (largest first, as the ladder has them)."""

    rungs: Sequence[Rung]
    lag_limit_s: float = LAG_LIMIT_S
    degraded: dict[str, Degradation] = field(default_factory=dict)
    # Stops decided but not yet in effect: a rung stops at the next segment boundary.
    pending_stops: list[str] = field(default_factory=list)
    # Rungs at half rate: a rung halved, then stopped, stays halved until it stops.
    halved: set[str] = field(default_factory=set)
    _last_step_at: float | None = None
    _lag_at_step: float = 0.0
    _last_lag: float = 0.0
    _low_since: float | None = None

    def observe(self, lag_s: float, now: float) -> Degradation | None:
        """The lag now; returns the step taken, if any (a rung to stop is also in
        :attr:`pending_stops` until :meth:`stops_at_boundary` hands it over)."""
        self._last_lag = lag_s
        if lag_s < self.lag_limit_s / 4:
            return self._maybe_recover(now)
        self._low_since = None
        if lag_s <= self.lag_limit_s or self.pending_stops:
            return None
        if self._last_step_at is not None:
            since = now - self._last_step_at
            if since < SETTLE_S or lag_s <= self._lag_at_step - RECOVERY_RATE * since:
                return None
        step = self._next_step(lag_s, now)
        if step is not None:
            self._last_step_at, self._lag_at_step = now, lag_s
            self.degraded[step.rung] = step
            if step.action is Action.HALF_RATE:
                self.halved.add(step.rung)
            else:
                self.pending_stops.append(step.rung)
        return step

    def stops_at_boundary(self, now: float) -> list[str]:
        """At a segment boundary: the rungs that stop here (their last segment ended
        just before it). The next step waits from here, where the stop takes effect."""
        stops, self.pending_stops = self.pending_stops, []
        if stops:
            self._last_step_at, self._lag_at_step = now, self._last_lag
        return stops

    def fps_divisor(self, rung: str) -> int:
        return 2 if rung in self.halved else 1

    def stopped(self, rung: str) -> bool:
        step = self.degraded.get(rung)
        return step is not None and step.action is Action.STOPPED

    def _next_step(self, lag_s: float, now: float) -> Degradation | None:
        for rung in self.rungs:
            if rung.fps > LOW_RUNG_MAX_FPS + 1 and rung.name not in self.degraded:
                return Degradation(rung.name, Action.HALF_RATE, now, lag_s)
        for rung in self.rungs:
            if not self.stopped(rung.name):
                return Degradation(rung.name, Action.STOPPED, now, lag_s)
        return None

    def _maybe_recover(self, now: float) -> Degradation | None:
        if self._low_since is None:
            self._low_since = now
            return None
        halved = [d for d in self.degraded.values() if d.action is Action.HALF_RATE]
        if not halved or now - self._low_since < RECOVER_AFTER_S:
            return None
        latest = max(halved, key=lambda d: d.since_s)
        del self.degraded[latest.rung]
        self.halved.discard(latest.rung)
        self._low_since = now  # one rung at a time, each after a quiet stretch
        return latest
