"""What a crashed transcoder child had not finished, and how its successor redoes it:
:class:`Recovery` (``plan``, ``prelude``, ``keep``). Pure and synchronous.

Design: docs/transcoder.md, "Replay after a crash".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from castway.media import MediaKind, MediaPacket
from transcoder.packager import InitOut, Output, PartOut, SegmentOut

# Bounds on what is kept for a replay: normally two segments of packets (a few MB at
# most); a source without keyframes for minutes would otherwise grow without end.
MAX_REPLAY_PACKETS = 20_000
MAX_REPLAY_BYTES = 64 * 1024 * 1024
# How far back before a boundary's keyframe to look for audio that belongs after it
# (audio leads video in most publishers' interleaving by a frame or a few).
AUDIO_LOOKBACK_PACKETS = 256


@dataclass(frozen=True, slots=True)
class Break:
    """A ``("discontinuity",)`` sent to the child (the publisher reconnected)."""


BREAK = Break()


@dataclass(frozen=True, slots=True)
class Sent:
    """One item sent to a child: a packet or a break, with its sequence number."""

    seq: int
    item: MediaPacket | Break


@dataclass(frozen=True, slots=True)
class Plan:
    """A successor redoes the work in progress from packet ``start_seq`` (inclusive),
    which starts boundary ``boundary`` at ``start_pts_ms`` (None when the replay starts
    after a break, where no segment was open)."""

    start_seq: int
    boundary: int
    start_pts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Prelude:
    """What a successor is sent before anything else: the configuration records in force
    at the replay's start, then the packets (and breaks) from there, in order."""

    configs: tuple[MediaPacket, ...]
    items: tuple[Sent, ...]

    @property
    def last_seq(self) -> int:
        return self.items[-1].seq if self.items else -1


class Recovery:
    def __init__(self, *, max_packets: int = MAX_REPLAY_PACKETS,
                 max_bytes: int = MAX_REPLAY_BYTES) -> None:
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self._items: deque[Sent] = deque()
        self._bytes = 0
        self._next_seq = 0
        # Configuration records in force before the first item kept.
        self._base_configs: dict[tuple[MediaKind, int], MediaPacket] = {}
        # Boundary number -> (seq of the packet that made it, whether a replay can start
        # there); only boundaries some rendition may still need.
        self._boundaries: dict[int, tuple[int, bool]] = {}
        self._next_boundary = 0  # the number the child's next boundary gets
        # Where the child last restarted its timeline (a break it reported): a segment
        # not yet begun starts after it.
        self._break_seq = 0
        # The first boundary after that break: its segment also holds the audio that
        # came before its keyframe, so a replay of it starts at the break.
        self._timeline_first = 0
        # Per rendition: the boundary its open (not yet complete) segment starts at, and
        # how many of that segment's parts are published.
        self._open: dict[str, int] = {}
        self._parts_out: dict[str, int] = {}
        # Per rendition: the boundary of the segment the current child is producing.
        self._producing: dict[str, int] = {}
        # Per rendition: boundaries of segments published but not yet durable (stored or
        # spooled); the source journal keeps their packets (transcoder.journal).
        self._undurable: dict[str, set[int]] = {}
        # The boundary of the last segment :meth:`keep` let through.
        self.kept_boundary: int | None = None

    # --- what the child is sent -----------------------------------------------------
    def sent(self, item: MediaPacket | Break) -> int:
        """Record an item handed to the child (before the send, which may fail: then the
        successor gets it in the replay); returns its sequence number."""
        seq = self._next_seq
        self._next_seq += 1
        self._items.append(Sent(seq, item))
        if isinstance(item, MediaPacket):
            self._bytes += len(item.payload)
        self._trim()
        return seq

    # --- what the child reports -----------------------------------------------------
    def boundary(self, seq: int, pts_ms: int) -> None:
        """The child started a segment at the packet ``seq`` (presentation time
        ``pts_ms``) in every rendition."""
        del pts_ms  # the packet itself says where it is; kept in the message for logs
        packet = self._packet(seq)
        replayable = packet is not None and (
            packet.is_keyframe if packet.kind == MediaKind.VIDEO else True)
        self._boundaries[self._next_boundary] = (seq, replayable)
        self._next_boundary += 1

    def child_break(self, seq: int) -> None:
        """The child flushed everything and restarted its timeline at packet ``seq``
        (a publisher reconnect, a timestamp jump, new codec parameters)."""
        if seq > self._break_seq:
            self._break_seq = seq
            self._timeline_first = self._next_boundary
        self._trim()

    def rendition(self, name: str) -> None:
        """The child announced a rendition (it may have no output yet)."""
        self._open.setdefault(name, self._latest_boundary())
        self._producing.setdefault(name, self._latest_boundary())

    def keep(self, out: Output) -> bool:
        """Whether an output of the current child is new (to be published), or a
        re-production of what an earlier child already published."""
        name = out.rendition
        self.rendition(name)
        producing, open_at = self._producing[name], self._open[name]
        if isinstance(out, InitOut):
            return True  # the sink keeps one init per distinct content
        if isinstance(out, PartOut):
            if producing < open_at or (producing == open_at
                                       and out.index < self._parts_out.get(name, 0)):
                return False
            self._parts_out[name] = out.index + 1
            return True
        assert isinstance(out, SegmentOut)
        self._producing[name] = producing + 1
        if producing < open_at:
            return False
        self._open[name] = producing + 1
        self._parts_out[name] = 0
        self._undurable.setdefault(name, set()).add(producing)
        self.kept_boundary = producing
        self._trim()
        return True

    def durable(self, rendition: str, boundary: int) -> None:
        """The segment of ``rendition`` starting at ``boundary`` is stored or spooled."""
        self._undurable.get(rendition, set()).discard(boundary)
        self._trim()

    @property
    def all_durable(self) -> bool:
        return not any(self._undurable.values())

    def open_boundary(self, rendition: str) -> int | None:
        """The boundary where the rendition's open segment starts."""
        return self._open.get(rendition)

    @property
    def journal_boundary(self) -> int:
        """The oldest boundary whose segment some rendition has not made durable: where
        the source journal starts."""
        return self._keep_needed()

    # --- a child died -------------------------------------------------------------------
    def plan(self) -> Plan | None:
        """How the successor redoes the segments still open, or None when it cannot
        (then :meth:`abandon`)."""
        return self._plan_from(self._needed_boundary())

    def journal_plan(self) -> Plan | None:
        """Where the source journal starts (what a salvage after this process dies must
        redo: every segment not yet durable), or None when no replay can start there."""
        return self._plan_from(self._keep_needed())

    def _plan_from(self, needed: int) -> Plan | None:
        if needed < self._next_boundary:
            seq, replayable = self._boundaries.get(needed, (-1, False))
            packet = self._packet(seq)
            if not replayable or packet is None:
                return None
            if needed == self._timeline_first and self._holds(self._break_seq):
                return Plan(self._break_seq, needed)
            return Plan(seq, needed, packet.pts_ms)
        # No rendition has begun the next segment: whatever came after the last break
        # (the successor starts its first segment at the first keyframe, as the child
        # before it would have).
        first = self._items[0].seq if self._items else self._next_seq
        return Plan(max(self._break_seq, first), needed)

    def start_successor(self, plan: Plan) -> None:
        """The successor starts with ``plan``: its first boundary is ``plan.boundary``."""
        for number in [n for n in self._boundaries if n >= plan.boundary]:
            del self._boundaries[number]
        self._next_boundary = plan.boundary
        self._producing = {name: plan.boundary for name in self._open}

    def prelude(self, plan: Plan) -> Prelude:
        """The configuration records in force at ``plan.start_seq`` and every item kept
        from there (with audio just ahead of the boundary that belongs after it)."""
        configs = dict(self._base_configs)
        start = self._packet(plan.start_seq)
        lookback: list[Sent] = []
        items: list[Sent] = []
        for sent in self._items:
            item = sent.item
            if sent.seq < plan.start_seq:
                if isinstance(item, Break) or sent.seq < self._break_seq <= plan.start_seq:
                    lookback = []  # another timeline: its times say nothing about this one
                if isinstance(item, MediaPacket) and item.is_config:
                    configs[item.stream] = item
                elif (isinstance(item, MediaPacket) and start is not None
                      and item.kind == MediaKind.AUDIO and start.kind == MediaKind.VIDEO
                      and item.pts_ms >= start.pts_ms):
                    lookback.append(sent)
                continue
            items.append(sent)
        lookback = [s for s in lookback if s.seq >= plan.start_seq - AUDIO_LOOKBACK_PACKETS]
        return Prelude(tuple(configs.values()), tuple(lookback + items))

    def abandon(self) -> None:
        """The successor starts over (after a discontinuity): the segments in progress
        were closed from their published parts, nothing before now is replayed."""
        self._forget_before(self._next_seq)
        self._break_seq = self._next_seq
        self._timeline_first = self._next_boundary
        self._open = {name: self._next_boundary for name in self._open}
        self._parts_out.clear()
        self._producing = dict(self._open)
        self._boundaries.clear()
        self._undurable.clear()

    # --- internals --------------------------------------------------------------------
    def _latest_boundary(self) -> int:
        return max(0, self._next_boundary - 1)

    def _needed_boundary(self) -> int:
        # Before any rendition has said a word, the segment they will all begin with.
        return min(self._open.values(), default=self._latest_boundary())

    def _holds(self, seq: int) -> bool:
        return bool(self._items) and self._items[0].seq <= seq <= self._items[-1].seq

    def _packet(self, seq: int) -> MediaPacket | None:
        if not self._items:
            return None
        index = seq - self._items[0].seq
        if not 0 <= index < len(self._items):
            return None
        item = self._items[index].item
        return item if isinstance(item, MediaPacket) else None

    def _keep_needed(self) -> int:
        pending = [min(b) for b in self._undurable.values() if b]
        return min([self._needed_boundary(), *pending])

    def _trim(self) -> None:
        needed = self._keep_needed()
        keep_from = self._boundaries.get(needed, (None, False))[0]
        if keep_from is None and needed >= self._next_boundary or \
                needed == self._timeline_first:
            keep_from = self._break_seq
        if keep_from is not None:
            keep_from = max(0, keep_from - AUDIO_LOOKBACK_PACKETS)
            self._forget_before(keep_from)
        for number in [n for n in self._boundaries if n < needed]:
            del self._boundaries[number]
        while self._items and (len(self._items) > self.max_packets
                               or self._bytes > self.max_bytes):
            self._pop()

    def _forget_before(self, seq: int) -> None:
        while self._items and self._items[0].seq < seq:
            self._pop()

    def _pop(self) -> None:
        item = self._items.popleft().item
        if isinstance(item, MediaPacket):
            self._bytes -= len(item.payload)
            if item.is_config:
                self._base_configs[item.stream] = item
