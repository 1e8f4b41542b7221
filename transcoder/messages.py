"""The messages between a transcoder child and its supervisor: a closed set of frozen
dataclasses, pickled over the pipes (:mod:`transcoder.worker`, :mod:`transcoder.supervisor`).

``seq`` numbers what the supervisor sends a child for the replay bookkeeping
(:mod:`transcoder.replay`); -1 marks a configuration record sent ahead of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from castway.media import MediaPacket
from transcoder.ladder import LadderSpec
from transcoder.overload import Degradation
from transcoder.packager import Output
from transcoder.pipeline import PipelineStats, RenditionInfo

# --- supervisor -> child ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Feed:
    packet: MediaPacket
    seq: int


@dataclass(frozen=True, slots=True)
class Restart:
    """The publisher reconnected: timestamps may restart (flush, start over)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Finish:
    """The broadcast ended (or moves to another node): flush everything, then exit."""


@dataclass(frozen=True, slots=True)
class SetLadder:
    """The ladder the node gave this broadcast (castway.cost), chosen with its cost when
    the source became known; before the child's first decoded frame."""

    ladder: LadderSpec


ToChild = Feed | Restart | Finish | SetLadder

# --- child -> supervisor ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Announced:
    """The ladder the master playlist lists: every rendition, at once."""

    ladder: tuple[RenditionInfo, ...]


@dataclass(frozen=True, slots=True)
class Produced:
    """An init segment, part or segment."""

    output: Output


@dataclass(frozen=True, slots=True)
class Boundary:
    """Packet ``seq`` starts a segment in every rendition (before any output of it)."""

    seq: int
    pts_ms: int


@dataclass(frozen=True, slots=True)
class Flushed:
    """Everything open was flushed for a break at packet ``seq`` (a reconnect, new codec
    parameters, a timestamp jump): the next segments follow a discontinuity."""

    seq: int


@dataclass(frozen=True, slots=True)
class RungStopped:
    """Overload stopped a rung (transcoder.overload), after its last output: its
    playlist ends and the master lists it no more."""

    step: Degradation


@dataclass(frozen=True, slots=True)
class Stats:
    """At least every second, also while idle: the heartbeat."""

    stats: PipelineStats


@dataclass(frozen=True, slots=True)
class Done:
    """Flushed after :class:`Finish`; the child exits."""


@dataclass(frozen=True, slots=True)
class Failed:
    """A deterministic error (unsupported input): a restart would fail the same way."""

    error: str


@dataclass(frozen=True, slots=True)
class Exited:
    """Not sent by a child: its pipe closed (the supervisor's reader says so)."""

    generation: int


FromChild = (Announced | Produced | Boundary | Flushed | RungStopped | Stats | Done | Failed
             | Exited)
