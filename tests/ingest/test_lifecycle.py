"""The broadcast lifecycle core (ingest/lifecycle.py), from scripts: inputs in, the state
and the commands out. No sockets, no clock, no event loop. Then random input sequences,
delivered as BroadcastManager delivers them, against the invariants."""

from __future__ import annotations

import ast
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from castway.events.handover import Verdict
from castway.media import Codec, MediaKind, MediaPacket
from castway.model import BroadcastState
from ingest import lifecycle
from ingest.lifecycle import (
    TRANSITIONS,
    AcceptPublisher,
    AnnounceEnd,
    AnnounceResumed,
    AnnounceStarted,
    CancelGraceTimer,
    ClaimMoved,
    Command,
    DisconnectPublisher,
    Discontinuity,
    Ended,
    Failed,
    Feed,
    FinishMedia,
    Grace,
    GraceExpired,
    HandedOver,
    HandingOver,
    HandoverAsked,
    HandOverMedia,
    Input,
    Live,
    MediaStarted,
    MoveClaim,
    New,
    NodeStopping,
    PacketReceived,
    PublishAccepted,
    PublisherBack,
    PublisherGone,
    PutLiveRecord,
    RecordEnd,
    RejectPublisher,
    ReleaseClaim,
    ReplyHandover,
    Resuming,
    SaveCatalogRecord,
    SaveEnd,
    StartGraceTimer,
    Starting,
    StartMedia,
    State,
    Step,
    StepFailed,
    StopRequested,
    TakenOver,
    TransferClaim,
    step,
)

ROOT = Path(__file__).resolve().parents[2]
ENDED, FAILED = BroadcastState.ENDED, BroadcastState.FAILED
PACKET = MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 0, 0, b"frame")


def end(owner: str, reason: str, *, cancel: int | None = None) -> list[Command]:
    """What every end of a running broadcast does, in order."""
    first: list[Command] = [CancelGraceTimer(cancel)] if cancel is not None else []
    return [*first, FinishMedia(), RecordEnd(ENDED), SaveEnd(ENDED, wait=True),
            ReleaseClaim(owner), AnnounceEnd(ENDED, reason)]


def run(*inputs: Input, state: State | None = None) -> tuple[State, list[Command]]:
    """Feed ``inputs`` in order; the final state and every command, in order."""
    current: State = New() if state is None else state
    commands: list[Command] = []
    for event in inputs:
        current, out = step(current, event)
        commands.extend(out)
    return current, commands


def live(owner: str = "c1") -> State:
    state, _ = run(PublishAccepted(owner), MediaStarted())
    return state


def in_grace(owner: str = "c1", grace_s: float = 30.0) -> State:
    state, _ = run(PublisherGone(owner, "disconnected", grace_s), state=live(owner))
    return state


# --- a new broadcast --------------------------------------------------------------------

def test_a_new_broadcast_is_recorded_then_its_media_starts_then_it_is_announced() -> None:
    state, commands = run(PublishAccepted("c1"))
    assert isinstance(state, Starting)
    assert commands == [PutLiveRecord(), SaveCatalogRecord(), StartMedia()]
    state, commands = run(MediaStarted(), state=state)
    assert state == Live("c1", session=1)
    assert commands == [AnnounceStarted(), AcceptPublisher("c1", "accepted")]


def test_the_publishers_packets_are_fed_and_no_one_elses() -> None:
    assert run(PacketReceived("c1", PACKET), state=live())[1] == [Feed(PACKET)]
    assert run(PacketReceived("c0", PACKET), state=live())[1] == []


def test_a_second_publisher_of_a_live_channel_is_refused_and_the_first_goes_on() -> None:
    state, commands = run(PublisherBack("c2"), PacketReceived("c1", PACKET), state=live())
    assert state == Live("c1")
    assert commands == [RejectPublisher("c2"), Feed(PACKET)]


@pytest.mark.parametrize("failing,cleanup", [
    # Nothing written anywhere yet: only the claim to give back.
    (PutLiveRecord(), [ReleaseClaim("c1")]),
    # Origins may have read the live record: failed, not left live with no node on it.
    (SaveCatalogRecord(), [RecordEnd(FAILED), SaveEnd(FAILED, wait=False), ReleaseClaim("c1"),
                           AnnounceEnd(FAILED, "could not start: CatalogUnavailable: down")]),
    (StartMedia(), [RecordEnd(FAILED), SaveEnd(FAILED, wait=False), ReleaseClaim("c1"),
                    AnnounceEnd(FAILED, "could not start: CatalogUnavailable: down")]),
])
def test_a_start_that_fails_undoes_what_it_did(failing: Step, cleanup: list[Command]) -> None:
    state, commands = run(PublishAccepted("c1"),
                          StepFailed(failing, "CatalogUnavailable: down"))
    assert state == Failed("could not start: CatalogUnavailable: down")
    assert commands == [PutLiveRecord(), SaveCatalogRecord(), StartMedia(), *cleanup]
    # No pipeline ran (StartMedia is the last step): nothing to finish.
    assert FinishMedia() not in commands


# --- the publisher goes: the grace window ----------------------------------------------

def test_a_publisher_gone_opens_the_grace_window_and_its_expiry_ends_the_broadcast() -> None:
    state, commands = run(PublisherGone("c1", "disconnected", 30.0), state=live())
    assert state == Grace("c1", timer=1, reason="disconnected")
    assert commands == [StartGraceTimer(1, 30.0)]
    state, commands = run(GraceExpired(1), state=state)
    assert state == Ended("disconnected")
    assert commands == end("c1", "disconnected")  # the timer fired: nothing to cancel


def test_with_no_grace_window_the_broadcast_ends_at_once() -> None:
    state, commands = run(PublisherGone("c1", "unpublished", 0.0), state=live())
    assert state == Ended("unpublished")
    assert commands == end("c1", "unpublished")


def test_the_close_of_a_connection_that_no_longer_publishes_changes_nothing() -> None:
    assert run(PublisherGone("c0", "disconnected", 30.0), state=live()) == (live(), [])


def test_the_same_publisher_back_within_grace_continues_the_broadcast() -> None:
    state, commands = run(PublisherBack("c2"), state=in_grace())
    assert state == Resuming(Grace("c1", 1, "disconnected"), "c2")
    # The timer runs on until the claim has moved.
    assert commands == [MoveClaim("c1", "c2")]
    state, commands = run(ClaimMoved(True), state=state)
    assert state == Live("c2", session=2)
    assert commands == [CancelGraceTimer(1), Discontinuity(), AnnounceResumed(),
                        AcceptPublisher("c2", "resumed")]


def test_an_expiry_from_an_earlier_window_changes_nothing() -> None:
    state, _ = run(PublisherBack("c2"), ClaimMoved(True),
                   PublisherGone("c2", "disconnected", 30.0), state=in_grace())
    assert state == Grace("c2", timer=2, reason="disconnected")
    assert run(GraceExpired(1), state=state) == (state, [])
    assert run(GraceExpired(2), state=state)[0] == Ended("disconnected")


def test_a_claim_taken_by_another_node_meanwhile_ends_the_broadcast_and_refuses() -> None:
    state, commands = run(PublisherBack("c2"), ClaimMoved(False), state=in_grace())
    assert state == Ended("channel claimed elsewhere")
    assert commands == [MoveClaim("c1", "c2"),
                        *end("c1", "channel claimed elsewhere", cancel=1),
                        RejectPublisher("c2")]


def test_a_claim_move_that_raises_leaves_the_grace_window_as_it_was() -> None:
    state, commands = run(PublisherBack("c2"), StepFailed(MoveClaim("c1", "c2"), "timeout"),
                          state=in_grace())
    assert state == in_grace() and commands == [MoveClaim("c1", "c2")]
    assert run(GraceExpired(1), state=state)[0] == Ended("disconnected")


# --- stopping ---------------------------------------------------------------------------

def test_a_stop_disconnects_the_publisher_and_ends_at_once() -> None:
    state, commands = run(StopRequested(), state=live())
    assert state == Ended("stopped")
    assert commands == [DisconnectPublisher("c1"), *end("c1", "stopped")]


def test_a_stop_in_the_grace_window_cancels_its_timer() -> None:
    state, commands = run(StopRequested(), state=in_grace())
    assert state == Ended("stopped")
    assert commands == end("c1", "stopped", cancel=1)


def test_a_stopping_node_ends_its_broadcasts_without_disconnecting_anyone() -> None:
    assert run(NodeStopping(), state=live()) == (Ended("node stopping"),
                                                 end("c1", "node stopping"))
    assert run(NodeStopping(), state=in_grace()) == (
        Ended("node stopping"), end("c1", "node stopping", cancel=1))


# --- handover: the holder ---------------------------------------------------------------

def test_a_broadcast_in_its_grace_window_is_handed_over() -> None:
    state, commands = run(HandoverAsked("r1", "b-1"), state=in_grace())
    assert state == HandingOver(Grace("c1", 1, "disconnected"), "r1", "b-1")
    assert commands == [TransferClaim("c1", "b-1")]
    state, commands = run(ClaimMoved(True), state=state)
    assert state == HandedOver("b-1")
    # Granted only after the flush: what this node wrote precedes the new node's.
    assert commands == [CancelGraceTimer(1), HandOverMedia(),
                        ReplyHandover("r1", Verdict.GRANTED)]


def test_a_connected_publisher_is_waited_for_then_the_request_is_refused() -> None:
    assert run(HandoverAsked("r1", "b-1"), state=live()) == (live(), [])  # wait
    state, commands = run(HandoverAsked("r1", "b-1", waited_out=True), state=live())
    assert state == live()
    assert commands == [ReplyHandover("r1", Verdict.REFUSED, "publisher still connected")]


def test_a_publisher_asked_to_move_is_handed_over_once_quiet_and_fed_until_then() -> None:
    assert run(HandoverAsked("r1", "b-1", moving=True, quiet=False), state=live())[1] == []
    state, commands = run(HandoverAsked("r1", "b-1", moving=True, quiet=True),
                          PacketReceived("c1", PACKET), state=live())
    assert isinstance(state, HandingOver)
    assert commands == [TransferClaim("c1", "b-1"), Feed(PACKET)]
    state, commands = run(ClaimMoved(True), PacketReceived("c1", PACKET),
                          PublisherGone("c1", "disconnected", 30.0), state=state)
    assert state == HandedOver("b-1")
    # No timer to cancel; the old connection's last packets and close change nothing.
    assert commands == [HandOverMedia(), ReplyHandover("r1", Verdict.GRANTED)]


def test_a_claim_that_cannot_be_given_refuses_and_keeps_the_broadcast() -> None:
    state, commands = run(HandoverAsked("r1", "b-1"), ClaimMoved(False), state=in_grace())
    assert state == in_grace()
    assert commands == [TransferClaim("c1", "b-1"),
                        ReplyHandover("r1", Verdict.REFUSED, "channel claim lost")]
    state, commands = run(HandoverAsked("r2", "b-1"),
                          StepFailed(TransferClaim("c1", "b-1"), "timeout"), state=in_grace())
    assert state == in_grace()  # the manager answers "internal error"
    assert commands == [TransferClaim("c1", "b-1")]


def test_a_stopping_node_refuses_requests() -> None:
    state, commands = run(HandoverAsked("r1", "b-1", node_stopping=True), state=in_grace())
    assert state == in_grace()
    assert commands == [ReplyHandover("r1", Verdict.REFUSED, "node stopping")]


# --- handover: the node that takes over -------------------------------------------------

def test_a_broadcast_taken_over_continues_here_after_a_discontinuity() -> None:
    state, commands = run(TakenOver("b-1", claim_kept=True, node_stopping=False))
    assert commands == [SaveCatalogRecord(), StartMedia(handover=True)]
    state, commands = run(MediaStarted(), state=state)
    assert state == Live("b-1")
    assert commands == [AnnounceResumed(), AcceptPublisher("b-1", "handover")]


@pytest.mark.parametrize("claim_kept,stopping,reason", [
    (False, False, "channel claimed elsewhere"),  # the claim expired in a very slow flush
    (True, True, "node stopping"),
])
def test_a_broadcast_taken_over_that_cannot_go_on_here_is_ended_here(
        claim_kept: bool, stopping: bool, reason: str) -> None:
    # Its media starts all the same: the end writes the EXT-X-ENDLIST left out over there.
    state, commands = run(TakenOver("b-1", claim_kept, stopping), MediaStarted())
    assert state == Ended(reason)
    assert commands == [SaveCatalogRecord(), StartMedia(handover=True), *end("b-1", reason),
                        RejectPublisher("b-1")]


def test_a_broadcast_taken_over_whose_media_cannot_start_fails() -> None:
    state, commands = run(TakenOver("b-1", True, False),
                          StepFailed(StartMedia(handover=True), "OSError: no fork"))
    assert state == Failed("could not start: OSError: no fork")
    assert commands[2:] == [RecordEnd(FAILED), SaveEnd(FAILED, wait=False),
                            ReleaseClaim("b-1"),
                            AnnounceEnd(FAILED, "could not start: OSError: no fork")]


# --- the end is final -------------------------------------------------------------------

ANY_INPUT: list[Input] = [
    PublishAccepted("c9"), TakenOver("c9", True, False), MediaStarted(),
    PacketReceived("c1", PACKET), PublisherGone("c1", "x", 30.0), GraceExpired(1),
    PublisherBack("c9"), ClaimMoved(True), HandoverAsked("r", "b"), StopRequested(),
    NodeStopping(), StepFailed(StartMedia(), "x"),
]


@pytest.mark.parametrize("final", [Ended("x"), Failed("x"), HandedOver("b")])
@pytest.mark.parametrize("event", ANY_INPUT, ids=lambda e: type(e).__name__)
def test_nothing_happens_to_a_broadcast_after_its_end(final: State, event: Input) -> None:
    assert step(final, event) == (final, ())


# --- the table, its documentation, its purity ---------------------------------------------

def _documented_pairs() -> set[tuple[str, str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Ingest: the broadcast lifecycle", 1)[1].split("\n## ", 1)[0]
    pairs: set[tuple[str, str]] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        states = re.findall(r"`(\w+)`", cells[0])
        inputs = re.findall(r"`(\w+)`", cells[1])
        pairs |= {(s, i) for s in states for i in inputs}
    return pairs


def test_docs_architecture_shows_every_row_of_the_table_and_no_other() -> None:
    assert _documented_pairs() == {(s.__name__, i.__name__) for s, i in TRANSITIONS}


def test_the_core_does_no_io_reads_no_clock_and_needs_no_event_loop() -> None:
    tree = ast.parse((ROOT / "ingest" / "lifecycle.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "collections.abc", "dataclasses", "typing",
                        "castway.media", "castway.model", "castway.events.handover",
                        "ingest.handover"}, imported


def test_states_inputs_and_commands_are_frozen() -> None:
    for kind in (State, Input, Command):
        for cls in typing.get_args(kind):
            assert cls.__dataclass_params__.frozen, cls


# --- random sequences, delivered as the manager does -------------------------------------

CONNECTIONS = ("c0", "c1", "c2", "c3")


@st.composite
def external_inputs(draw: st.DrawFn, world: World) -> Input:
    """Any input the manager may deliver between drives (the answers of steps come only
    within a drive, right after their step), most of them about the connections and
    timers in play, and the ends rarer than the rest, so sequences go somewhere."""
    in_play = [c for c in (lifecycle.publisher(world.state), world.claim) if c is not None]
    connection = st.sampled_from([*in_play, *in_play, *CONNECTIONS])
    timer = st.sampled_from([*sorted(world.timers), *range(world.timers_started + 2)])
    kind = draw(st.sampled_from(
        ["gone"] * 4 + ["back", "expired", "handover"] * 3 + ["packet"] * 2
        + ["stop", "node stopping", "out of place"]))
    event: Input
    if kind == "packet":
        event = PacketReceived(draw(connection), PACKET)
    elif kind == "gone":
        event = PublisherGone(draw(connection), "disconnected",
                              draw(st.sampled_from([5.0, 5.0, 5.0, 0.0])))
    elif kind == "back":
        event = PublisherBack(draw(connection))
    elif kind == "expired":
        event = GraceExpired(draw(timer))
    elif kind == "handover":
        event = HandoverAsked(draw(st.sampled_from(["r1", "r2"])), "b-1",
                              moving=draw(st.booleans()), quiet=draw(st.booleans()),
                              waited_out=draw(st.booleans()),
                              late=draw(st.sampled_from([False, False, True])),
                              node_stopping=draw(st.sampled_from([False, False, True])))
    elif kind == "stop":
        event = StopRequested()
    elif kind == "node stopping":
        event = NodeStopping()
    else:  # answers out of place: ignored
        out_of_place: list[Input] = [ClaimMoved(True), ClaimMoved(False), MediaStarted(),
                                     StepFailed(PutLiveRecord(), "x")]
        event = draw(st.sampled_from(out_of_place))
    return event


@dataclass
class World:
    """One broadcast's lifecycle driven like BroadcastManager._drive drives it, and what
    its commands did to the world."""

    data: st.DataObject
    state: State = field(default_factory=New)
    claim: str | None = None  # the connection holding the channel claim
    claim_releases: int = 0  # released, or given to another node
    recorded: bool = False  # the broadcast's record was written where others read it
    media: str = "none"  # none -> running -> finished | handed over
    media_ends: int = 0
    announced_end: int = 0
    timers: set[int] = field(default_factory=set)  # running
    timers_started: int = 0
    answers: int = 0  # AcceptPublisher / RejectPublisher of the drive under way
    replies: int = 0  # ReplyHandover of the drive under way
    failed_step: bool = False
    done: list[Command] = field(default_factory=list)  # the commands of the drive under way

    def drive(self, event: Input) -> None:
        if isinstance(event, PacketReceived):  # not under the lock: never a drive
            self.packet(event.connection)
            return
        self.answers = self.replies = 0
        self.failed_step = False
        self.done = []
        before = self.state
        inputs: list[Input] = [event]
        while inputs:
            previous = self.state
            self.state, commands = step(self.state, inputs.pop(0))
            if lifecycle.is_over(previous):
                assert self.state == previous and commands == (), "restarted after its end"
            self.done.extend(commands)
            for command in commands:
                answer = self.carry_out(command)
                if isinstance(answer, StepFailed):
                    self.failed_step = True
                    inputs.append(answer)
                    break
                if answer is not None:
                    inputs.append(answer)
        self.check_drive(event, before)

    def carry_out(self, command: Command) -> Input | None:
        if isinstance(command, Step):
            # Packets are not under the manager's lock: one may come during any await.
            if self.data.draw(st.sampled_from([False, True]), label="packet meanwhile"):
                self.packet(self.data.draw(st.sampled_from(CONNECTIONS)))
            if self.data.draw(st.sampled_from([False] * 7 + [True]), label="step fails"):
                return StepFailed(command, "boom")
        match command:
            case PutLiveRecord():
                self.recorded = True
            case StartMedia():
                assert self.media == "none"
                self.media = "running"
                return MediaStarted()
            case MoveClaim(from_owner=old, to_owner=new) | TransferClaim(from_owner=old,
                                                                          to_owner=new):
                assert old == self.claim
                ok = self.data.draw(st.sampled_from([True, True, False]), label="claim moves")
                if ok and isinstance(command, MoveClaim):
                    self.claim = new
                elif ok:
                    self.claim = None
                    self.claim_releases += 1
                return ClaimMoved(ok)
            case Feed() | Discontinuity():
                assert self.media == "running"
            case FinishMedia() | HandOverMedia():
                assert self.media == "running"
                self.media = "finished" if isinstance(command, FinishMedia) else "handed over"
                self.media_ends += 1
            case ReleaseClaim(owner=owner):
                assert owner == self.claim
                self.claim_releases += 1
            case AnnounceEnd():
                assert self.recorded
                self.announced_end += 1
            case StartGraceTimer(timer=timer):
                assert not self.timers, "two grace timers at once"
                self.timers.add(timer)
                self.timers_started += 1
            case CancelGraceTimer(timer=timer):
                assert timer in self.timers
                self.timers.discard(timer)
            case AcceptPublisher() | RejectPublisher():
                self.answers += 1
            case ReplyHandover():
                self.replies += 1
        return None

    def packet(self, connection: str) -> None:
        publishing = lifecycle.publisher(self.state)
        state, commands = step(self.state, PacketReceived(connection, PACKET))
        assert state == self.state, "a packet changed the state"
        assert commands == ((Feed(PACKET),) if connection == publishing else ())
        for command in commands:
            self.carry_out(command)

    def check_drive(self, event: Input, before: State) -> None:
        if isinstance(event, GraceExpired) and event.timer in self.timers \
                and isinstance(before, Grace):
            self.timers.discard(event.timer)  # it fired
        if isinstance(event, PublishAccepted | TakenOver | PublisherBack):
            # Every publish gets one answer, or the error of its failed step.
            assert self.answers == (0 if self.failed_step else 1), (event, self.answers)
        else:
            assert self.answers == 0
        if isinstance(event, PublisherGone) and event.connection != lifecycle.publisher(before):
            assert self.state == before and self.done == [], "a stale close acted on"
        # Viewers hear of every publisher that gets the broadcast, once; one that comes
        # back after a break gets a discontinuity (a handed-over pipeline makes its own).
        how = [c.how for c in self.done if isinstance(c, AcceptPublisher)]
        count = self.done.count
        assert count(AnnounceStarted()) == how.count("accepted")
        assert count(AnnounceResumed()) == how.count("resumed") + how.count("handover")
        assert count(Discontinuity()) == how.count("resumed")
        assert self.replies <= 1
        if not lifecycle.is_over(self.state) and not isinstance(self.state, New):
            assert lifecycle.claim_owner(self.state) == self.claim
        # Between drives no step is pending (the lock).
        assert not isinstance(self.state, Starting | lifecycle.Resuming | HandingOver)

    def check_end(self) -> None:
        assert lifecycle.is_over(self.state)
        assert not self.timers, "a grace timer left running"
        # The channel claim is released (or given to the next node) exactly once.
        assert self.claim_releases == 1
        # Every pipeline started is finished or handed over exactly once.
        assert self.media_ends == (0 if self.media == "none" else 1)
        # Exactly one "ended"/"failed" for a broadcast others could see; none for one
        # handed over (it goes on elsewhere) or never written anywhere.
        expected = 1 if self.recorded and not isinstance(self.state, HandedOver) else 0
        assert self.announced_end == expected
        if isinstance(self.state, Ended):
            assert self.media == "finished"


def start(data: st.DataObject) -> World:
    taken_over = data.draw(st.booleans(), label="taken over")
    # A handed-over broadcast's record is in the live state before this node starts.
    world = World(data, claim="c0", recorded=taken_over)
    world.drive(TakenOver("c0", data.draw(st.sampled_from([True, True, False])),
                          data.draw(st.sampled_from([False, False, True])))
                if taken_over else PublishAccepted("c0"))
    return world


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(10, 60))
def test_random_sequences_keep_the_invariants(data: st.DataObject, length: int) -> None:
    world = start(data)
    for _ in range(length):
        while lifecycle.is_over(world.state):  # the books balance; it goes live again
            world.check_end()
            world = start(data)
        world.drive(data.draw(external_inputs(world)))
    # Whatever happened, the node stopping ends it, and the books balance.
    world.drive(NodeStopping())
    world.check_end()
