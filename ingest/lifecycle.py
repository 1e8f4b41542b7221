"""A broadcast's lifecycle on one ingest node, sans-IO.

:func:`step` maps a state and an input to the next state and the commands that
:class:`ingest.broadcasts.BroadcastManager` carries out, in order. No I/O, no clock, no
asyncio: time arrives as inputs (a grace timer's expiry, the facts of a handover wait),
and what the I/O answers comes back as inputs (:class:`MediaStarted`, :class:`ClaimMoved`,
:class:`StepFailed`). The table and the reasons for it: docs/architecture.md, "The
broadcast lifecycle".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from castway.events.handover import Verdict
from castway.media import MediaPacket
from castway.model import BroadcastState
from ingest.handover import Decision, decide

# --- states ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class New:
    """Before the start: the channel is claimed, or the broadcast was handed to us."""


@dataclass(frozen=True, slots=True)
class Starting:
    owner: str  # the publisher's connection: it holds the channel claim
    steps: tuple[Step, ...]  # in order: a failed one tells which were done
    handover: bool = False  # a broadcast another node handed over
    end_reason: str | None = None  # ends as soon as its media runs (see TakenOver)


@dataclass(frozen=True, slots=True)
class Live:
    owner: str  # the publisher's connection: it holds the channel claim
    session: int = 1  # publications of this broadcast on this node; names its grace timer


@dataclass(frozen=True, slots=True)
class Grace:
    owner: str  # the gone publisher's connection: it holds the claim meanwhile
    timer: int
    reason: str  # why the publisher went: the end's reason if none comes back


@dataclass(frozen=True, slots=True)
class Resuming:
    grace: Grace  # what it is again if moving the claim fails
    connection: str  # the publisher that came back, waiting for the claim


@dataclass(frozen=True, slots=True)
class HandingOver:
    previous: Live | Grace  # what it is again if the claim cannot be given
    request_id: str
    to_owner: str  # the requesting node's connection


@dataclass(frozen=True, slots=True)
class Ended:
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


@dataclass(frozen=True, slots=True)
class HandedOver:
    to_owner: str


State = New | Starting | Live | Grace | Resuming | HandingOver | Ended | Failed | HandedOver

# --- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishAccepted:
    """A new broadcast: ``connection`` has just claimed the channel."""

    connection: str


@dataclass(frozen=True, slots=True)
class TakenOver:
    """Another node handed this live broadcast over to ``connection``."""

    connection: str
    claim_kept: bool  # still ours: it can expire during a very slow flush over there
    node_stopping: bool


@dataclass(frozen=True, slots=True)
class MediaStarted:
    """The answer to :class:`StartMedia`."""


@dataclass(frozen=True, slots=True)
class PacketReceived:
    connection: str
    packet: MediaPacket


@dataclass(frozen=True, slots=True)
class PublisherGone:
    connection: str
    reason: str
    grace_s: float  # the reconnect grace window as it is now (0: none)


@dataclass(frozen=True, slots=True)
class GraceExpired:
    timer: int


@dataclass(frozen=True, slots=True)
class PublisherBack:
    """``connection`` publishes on this broadcast's channel, on this node."""

    connection: str


@dataclass(frozen=True, slots=True)
class ClaimMoved:
    """The answer to :class:`MoveClaim` or :class:`TransferClaim`."""

    ok: bool


@dataclass(frozen=True, slots=True)
class HandoverAsked:
    """A node asks for this broadcast; the rest are the facts of ``handover.decide``."""

    request_id: str
    to_owner: str
    moving: bool = False
    quiet: bool = True
    waited_out: bool = False
    late: bool = False
    node_stopping: bool = False


@dataclass(frozen=True, slots=True)
class StopRequested:
    """An operator stops the broadcast: no grace window."""

    reason: str = "stopped"


@dataclass(frozen=True, slots=True)
class NodeStopping:
    pass


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A step raised: what it did not do is undone; the error goes on to the caller."""

    step: Step
    error: str


Input = (PublishAccepted | TakenOver | MediaStarted | PacketReceived | PublisherGone
         | GraceExpired | PublisherBack | ClaimMoved | HandoverAsked | StopRequested
         | NodeStopping | StepFailed)

# --- commands: steps (their failure comes back as StepFailed) ---------------------------


@dataclass(frozen=True, slots=True)
class PutLiveRecord:
    """The broadcast's record into the live state."""


@dataclass(frozen=True, slots=True)
class SaveCatalogRecord:
    """The broadcast's record into the catalog."""


@dataclass(frozen=True, slots=True)
class StartMedia:
    """Start the media pipeline; answered by :class:`MediaStarted`."""

    handover: bool = False  # continue the playlists another node left open


@dataclass(frozen=True, slots=True)
class MoveClaim:
    """The claim from the old connection to the new one in one step, or claimed afresh
    if it lapsed; answered by :class:`ClaimMoved` (not ok: another node has it)."""

    from_owner: str
    to_owner: str


@dataclass(frozen=True, slots=True)
class TransferClaim:
    """The claim to another node's connection, atomically (no third publisher slips in);
    answered by :class:`ClaimMoved`."""

    from_owner: str
    to_owner: str


Step = PutLiveRecord | SaveCatalogRecord | StartMedia | MoveClaim | TransferClaim

# --- commands: effects (a failure is logged and the rest goes on) -----------------------


@dataclass(frozen=True, slots=True)
class AcceptPublisher:
    connection: str
    how: Literal["accepted", "resumed", "handover"]


@dataclass(frozen=True, slots=True)
class RejectPublisher:
    """The channel is live (or its claim is held elsewhere)."""

    connection: str


@dataclass(frozen=True, slots=True)
class AnnounceStarted:
    pass


@dataclass(frozen=True, slots=True)
class AnnounceResumed:
    """The broadcast goes on, on this node (a reconnect here, or a handover)."""


@dataclass(frozen=True, slots=True)
class Feed:
    packet: MediaPacket


@dataclass(frozen=True, slots=True)
class Discontinuity:
    pass


@dataclass(frozen=True, slots=True)
class StartGraceTimer:
    timer: int
    delay_s: float


@dataclass(frozen=True, slots=True)
class CancelGraceTimer:
    timer: int


@dataclass(frozen=True, slots=True)
class DisconnectPublisher:
    connection: str


@dataclass(frozen=True, slots=True)
class FinishMedia:
    """Flush and end the playlists (EXT-X-ENDLIST)."""


@dataclass(frozen=True, slots=True)
class HandOverMedia:
    """Flush and leave the playlists open for the node that continues."""


@dataclass(frozen=True, slots=True)
class RecordEnd:
    """The end into the live state's record."""

    state: BroadcastState


@dataclass(frozen=True, slots=True)
class SaveEnd:
    """The end into the catalog, retried until it is there (what the archiver trusts)."""

    state: BroadcastState  # ended or failed
    wait: bool  # for the first attempt; a refused publish is answered without waiting


@dataclass(frozen=True, slots=True)
class ReleaseClaim:
    owner: str


@dataclass(frozen=True, slots=True)
class AnnounceEnd:
    state: BroadcastState  # ended or failed
    reason: str


@dataclass(frozen=True, slots=True)
class ReplyHandover:
    request_id: str
    verdict: Verdict
    reason: str = ""


Effect = (AcceptPublisher | RejectPublisher | AnnounceStarted | AnnounceResumed | Feed
          | Discontinuity | StartGraceTimer | CancelGraceTimer | DisconnectPublisher
          | FinishMedia | HandOverMedia | RecordEnd | SaveEnd | ReleaseClaim | AnnounceEnd
          | ReplyHandover)
Command = Step | Effect
Commands = tuple[Command, ...]
Transition = tuple[State, Commands]

# --- transitions ----------------------------------------------------------------------


def _end(state: Live | Grace, reason: str, *, timer_running: bool = True,
         disconnect: bool = False) -> Transition:
    first: Commands = ()
    if isinstance(state, Grace) and timer_running:
        first = (CancelGraceTimer(state.timer),)
    elif isinstance(state, Live) and disconnect:
        first = (DisconnectPublisher(state.owner),)
    ended = BroadcastState.ENDED
    return Ended(reason), (*first, FinishMedia(), RecordEnd(ended), SaveEnd(ended, wait=True),
                           ReleaseClaim(state.owner), AnnounceEnd(ended, reason))


def _go_live(_: New, accepted: PublishAccepted) -> Transition:
    steps: tuple[Step, ...] = (PutLiveRecord(), SaveCatalogRecord(), StartMedia())
    return Starting(accepted.connection, steps), steps


def _take_over(_: New, taken: TakenOver) -> Transition:
    # The pipeline starts even when the broadcast must end here at once: its end writes
    # the EXT-X-ENDLIST the other node left out.
    end_reason = ("node stopping" if taken.node_stopping
                  else None if taken.claim_kept else "channel claimed elsewhere")
    steps: tuple[Step, ...] = (SaveCatalogRecord(), StartMedia(handover=True))
    return Starting(taken.connection, steps, handover=True, end_reason=end_reason), steps


def _started(state: Starting, _: MediaStarted) -> Transition:
    live = Live(state.owner)
    if state.end_reason is not None:
        ended, commands = _end(live, state.end_reason)
        return ended, (*commands, RejectPublisher(state.owner))
    if state.handover:
        return live, (AnnounceResumed(), AcceptPublisher(state.owner, "handover"))
    return live, (AnnounceStarted(), AcceptPublisher(state.owner, "accepted"))


def _start_failed(state: Starting, failure: StepFailed) -> Transition:
    if failure.step not in state.steps:
        return state, ()
    done = state.steps[:state.steps.index(failure.step)]
    reason = f"could not start: {failure.error}"
    # StartMedia is the last step, so no pipeline runs here. A record others can read
    # (a handed-over broadcast's always) is failed, not left live with no node on it.
    if not state.handover and PutLiveRecord() not in done:
        return Failed(reason), (ReleaseClaim(state.owner),)
    failed = BroadcastState.FAILED
    return Failed(reason), (RecordEnd(failed), SaveEnd(failed, wait=False),
                            ReleaseClaim(state.owner), AnnounceEnd(failed, reason))


def _feed(state: Live, packet: PacketReceived) -> Transition:
    return state, ((Feed(packet.packet),) if packet.connection == state.owner else ())


def _feed_while_handing_over(state: HandingOver, packet: PacketReceived) -> Transition:
    # Until the claim is given, a publisher asked to move may still send what the new
    # node will not have.
    if isinstance(state.previous, Live) and packet.connection == state.previous.owner:
        return state, (Feed(packet.packet),)
    return state, ()


def _publisher_gone(state: Live, gone: PublisherGone) -> Transition:
    if gone.connection != state.owner:
        return state, ()
    if gone.grace_s <= 0:
        return _end(state, gone.reason)
    return (Grace(state.owner, state.session, gone.reason),
            (StartGraceTimer(state.session, gone.grace_s),))


def _grace_expired(state: Grace, expired: GraceExpired) -> Transition:
    if expired.timer != state.timer:  # a timer of an earlier window
        return state, ()
    return _end(state, state.reason, timer_running=False)


def _refuse_second(state: State, back: PublisherBack) -> Transition:
    return state, (RejectPublisher(back.connection),)


def _publisher_back(state: Grace, back: PublisherBack) -> Transition:
    # The timer runs on until the claim has moved: if moving it fails, nothing changed.
    return Resuming(state, back.connection), (MoveClaim(state.owner, back.connection),)


def _resumed(state: Resuming, moved: ClaimMoved) -> Transition:
    if not moved.ok:  # it lapsed and another node's publisher claimed it
        ended, commands = _end(state.grace, "channel claimed elsewhere")
        return ended, (*commands, RejectPublisher(state.connection))
    return (Live(state.connection, session=state.grace.timer + 1),
            (CancelGraceTimer(state.grace.timer), Discontinuity(), AnnounceResumed(),
             AcceptPublisher(state.connection, "resumed")))


def _resume_failed(state: Resuming, failed: StepFailed) -> Transition:
    return (state.grace, ()) if isinstance(failed.step, MoveClaim) else (state, ())


def _handover_asked(state: Live | Grace, asked: HandoverAsked) -> Transition:
    decision, reason = decide(holds_broadcast=True, publishing=isinstance(state, Live),
                              stopping=asked.node_stopping, moving=asked.moving,
                              quiet=asked.quiet, waited_out=asked.waited_out,
                              late=asked.late)
    if decision is Decision.REFUSE:
        return state, (ReplyHandover(asked.request_id, Verdict.REFUSED, reason),)
    if decision is Decision.WAIT:  # asked again when the publisher goes, or later
        return state, ()
    return (HandingOver(state, asked.request_id, asked.to_owner),
            (TransferClaim(state.owner, asked.to_owner),))


def _handed_over(state: HandingOver, moved: ClaimMoved) -> Transition:
    if not moved.ok:
        return state.previous, (ReplyHandover(state.request_id, Verdict.REFUSED,
                                              "channel claim lost"),)
    cancel: Commands = ((CancelGraceTimer(state.previous.timer),)
                        if isinstance(state.previous, Grace) else ())
    # Granted only after the flush, so everything written here precedes the new node's.
    return HandedOver(state.to_owner), (*cancel, HandOverMedia(),
                                        ReplyHandover(state.request_id, Verdict.GRANTED))


def _handover_failed(state: HandingOver, failed: StepFailed) -> Transition:
    return (state.previous, ()) if isinstance(failed.step, TransferClaim) else (state, ())


def _stop(state: Live | Grace, stop: StopRequested) -> Transition:
    return _end(state, stop.reason, disconnect=True)


def _node_stopping(state: Live | Grace, _: NodeStopping) -> Transition:
    return _end(state, "node stopping")


_Handler = Callable[[Any, Any], Transition]

#: The one transition table: (state, input) -> what happens. A pair not in it changes
#: nothing: a packet or close of a connection no longer publishing, a timer already
#: cancelled, anything after the end. The manager's lock keeps inputs other than
#: packets out of Starting, Resuming and HandingOver, except their answers.
TRANSITIONS: dict[tuple[type[State], type[Input]], _Handler] = {
    (New, PublishAccepted): _go_live,
    (New, TakenOver): _take_over,
    (Starting, MediaStarted): _started,
    (Starting, StepFailed): _start_failed,
    (Starting, PublisherBack): _refuse_second,
    (Live, PacketReceived): _feed,
    (Live, PublisherGone): _publisher_gone,
    (Live, PublisherBack): _refuse_second,
    (Live, HandoverAsked): _handover_asked,
    (Live, StopRequested): _stop,
    (Live, NodeStopping): _node_stopping,
    (Grace, GraceExpired): _grace_expired,
    (Grace, PublisherBack): _publisher_back,
    (Grace, HandoverAsked): _handover_asked,
    (Grace, StopRequested): _stop,
    (Grace, NodeStopping): _node_stopping,
    (Resuming, ClaimMoved): _resumed,
    (Resuming, StepFailed): _resume_failed,
    (Resuming, PublisherBack): _refuse_second,
    (HandingOver, PacketReceived): _feed_while_handing_over,
    (HandingOver, ClaimMoved): _handed_over,
    (HandingOver, StepFailed): _handover_failed,
    (HandingOver, PublisherBack): _refuse_second,
}


def step(state: State, event: Input) -> Transition:
    handler = TRANSITIONS.get((type(state), type(event)))
    return handler(state, event) if handler is not None else (state, ())


# --- questions the manager asks of a state ------------------------------------------------

def is_over(state: State) -> bool:
    """This node is done with the broadcast (ended, failed or handed over)."""
    return isinstance(state, Ended | Failed | HandedOver)


def on_this_node(state: State) -> bool:
    """Live here, its grace window included."""
    return isinstance(state, Live | Grace)


def publisher(state: State) -> str | None:
    """The connection publishing now, if any."""
    if isinstance(state, HandingOver):
        state = state.previous
    return state.owner if isinstance(state, Live) else None


def claim_owner(state: State) -> str | None:
    """The connection that holds the channel claim for this broadcast, if any."""
    if isinstance(state, Resuming):
        return state.grace.owner
    if isinstance(state, HandingOver):
        return state.previous.owner
    return state.owner if isinstance(state, Starting | Live | Grace) else None
