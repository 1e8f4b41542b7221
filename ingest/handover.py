"""Cross-node handover of a live broadcast: the exchange (:func:`request_handover`,
:class:`RequestListener`) and the holder's decision (:func:`decide`, pure).

Design: docs/architecture.md, "Ingest: reconnects and handovers".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum

from castway.events.handover import (
    HandoverReply,
    HandoverRequest,
    Verdict,
    reply_topic,
    request_topic,
)
from castway.live.base import EventBus, LiveStateError, Subscription

logger = logging.getLogger(__name__)

#: The holder acknowledges a request within this long, or is taken for dead.
ACK_TIMEOUT_S = 3.0
#: The holder starts giving a broadcast away within this long of a request, or refuses
#: (its manager lock may be held by a slow end of another broadcast).
COMMIT_WITHIN_S = 15.0
#: Longest hand-over of a transcoder once started: its flush (FINISH_TIMEOUT_S, 60 s)
#: plus stopping the child (twice STOP_TIMEOUT_S, 5 s) in transcoder.supervisor.
FLUSH_BOUND_S = 70.0
#: After the acknowledgement the requester waits this long for the verdict. It exceeds
#: everything the holder may take, so a broadcast the holder gave away always has a node
#: that takes it (never a broadcast live in the records that no node runs).
GRANT_TIMEOUT_S = COMMIT_WITHIN_S + FLUSH_BOUND_S + 5.0
#: A holder whose publisher is still connected (and was not asked to move) waits this
#: long for its TCP close (a blip the holder has not noticed yet).
PUBLISHER_WAIT_S = 2.0
#: A publisher asked to move (make-before-break) may still be sending here what it sent
#: before it left: the hand-over waits until nothing came for this long (or
#: PUBLISHER_WAIT_S passed), so the old node's playlists keep all of that.
MOVE_QUIET_S = 0.25
#: Requests a node serves at once; more are refused ("busy").
MAX_IN_FLIGHT = 32
# Between attempts to listen for requests while the live state is down.
RESUBSCRIBE_S = 1.0


class Decision(StrEnum):
    GRANT = "grant"
    WAIT = "wait"  # for the old publisher's close, up to PUBLISHER_WAIT_S
    REFUSE = "refuse"


def decide(*, holds_broadcast: bool, publishing: bool, stopping: bool,
           waited_out: bool, moving: bool = False, quiet: bool = True,
           late: bool = False) -> tuple[Decision, str]:
    """The holder's answer to a request, and the reason of a refusal.

    ``holds_broadcast``: this node runs the requested broadcast (same channel and id);
    ``publishing``: its publisher is still connected; ``moving``: this node sent that
    publisher an E-RTMP v2 reconnect request, so the request is that publisher arriving
    where it was sent (the spec's make-before-break: it leaves the old connection only
    after publishing on the new one); ``quiet``: nothing arrived from that publisher for
    :data:`MOVE_QUIET_S`; ``waited_out``: the wait for the publisher to go (or, when it
    is moving, to go quiet) is over; ``late``: :data:`COMMIT_WITHIN_S` passed since the
    request came (the requester might stop waiting before a hand-over started now ends).
    """
    if stopping:
        return Decision.REFUSE, "node stopping"
    if not holds_broadcast:
        return Decision.REFUSE, "broadcast not on this node"
    if late:
        return Decision.REFUSE, "too late"
    if not publishing:
        return Decision.GRANT, ""
    if moving:
        return (Decision.GRANT, "") if quiet or waited_out else (Decision.WAIT, "")
    if waited_out:
        return Decision.REFUSE, "publisher still connected"
    return Decision.WAIT, ""


async def request_handover(live: EventBus, holder: str, request: HandoverRequest, *,
                           ack_timeout_s: float = ACK_TIMEOUT_S,
                           grant_timeout_s: float = GRANT_TIMEOUT_S) -> HandoverReply | None:
    """Ask node ``holder`` to hand a broadcast over; its final reply (granted or refused),
    or None when it does not answer in time."""
    async with await live.subscribe(reply_topic(request.request_id)) as replies:
        await live.publish(request_topic(holder), request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ack_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    reply = await replies.get()
            except TimeoutError:
                return None
            if reply.request_id != request.request_id:
                continue
            if reply.verdict is not Verdict.ACK:
                return reply
            deadline = loop.time() + grant_timeout_s


async def send_reply(live: EventBus, reply: HandoverReply) -> None:
    await live.publish(reply_topic(reply.request_id), reply)


class RequestListener:
    """The holder's side: requests addressed to ``node_id``, each acknowledged at once
    and served in a task of its own by ``serve``, which sends the final reply itself
    or returns why it refuses (an exception refuses too: "internal error")."""

    def __init__(self, live: EventBus, node_id: str,
                 serve: Callable[[HandoverRequest], Awaitable[str | None]]) -> None:
        self.live = live
        self.node_id = node_id
        self._serve = serve
        self._subscription: Subscription[HandoverRequest] | None = None
        self._task: asyncio.Task[None] | None = None
        self._serving: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Subscribed when this returns, unless the live state is down: then it keeps
        trying."""
        try:
            self._subscription = await self.live.subscribe(request_topic(self.node_id))
        except LiveStateError:
            logger.exception("cannot listen for handover requests yet; retrying",
                             extra={"node": self.node_id})
        self._task = asyncio.create_task(self._listen(), name="ingest-handover")

    async def close(self) -> None:
        """Stop listening; wait for the requests being served (they refuse, or finish
        the flush they started)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            with contextlib.suppress(LiveStateError):
                await self._subscription.close()
        if self._serving:
            await asyncio.gather(*self._serving, return_exceptions=True)

    async def reply(self, reply: HandoverReply) -> None:
        try:
            await send_reply(self.live, reply)
        except LiveStateError:
            logger.exception("handover reply failed", extra={"request_id": reply.request_id})

    async def _listen(self) -> None:
        while True:
            if self._subscription is None:
                try:
                    self._subscription = await self.live.subscribe(request_topic(self.node_id))
                except LiveStateError:
                    await asyncio.sleep(RESUBSCRIBE_S)
                    continue
            try:
                ask = await self._subscription.get()
            except LiveStateError:  # closed under us (the live state closing)
                return
            if len(self._serving) >= MAX_IN_FLIGHT:
                await self.reply(HandoverReply(ask.request_id, Verdict.REFUSED, "busy"))
                continue
            task = asyncio.create_task(self._answer(ask), name=f"handover-{ask.request_id}")
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _answer(self, ask: HandoverRequest) -> None:
        fields = {"broadcast_id": ask.broadcast_id, "channel": ask.channel,
                  "to_node": ask.node_id, "request_id": ask.request_id}
        logger.info("handover requested", extra=fields)
        await self.reply(HandoverReply(ask.request_id, Verdict.ACK))
        try:
            refusal = await self._serve(ask)
        except Exception:
            logger.exception("handover failed", extra=fields)
            refusal = "internal error"
        if refusal is not None:
            logger.info("handover refused", extra={**fields, "reason": refusal})
            await self.reply(HandoverReply(ask.request_id, Verdict.REFUSED, refusal))
