"""A live broadcast moving between ingest nodes: the messages of the request/reply
exchange (the protocol and the holder's decision are ``ingest.handover``'s).

``handover:{node_id}``
    requests to one node, :class:`HandoverRequest`.
``handover-reply:{request_id}``
    that request's replies, :class:`HandoverReply`: ``ack`` at once ("I hold that
    broadcast and am on it"), then ``granted`` or ``refused``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from castway.events.topic import Messages, Topic


@dataclass(frozen=True, slots=True)
class HandoverRequest:
    TYPE: ClassVar[str] = "request"
    request_id: str
    channel: str
    broadcast_id: str
    owner: str  # the requesting node's connection: the channel claim goes to it
    node_id: str  # the requesting node


class Verdict(StrEnum):
    ACK = "ack"
    GRANTED = "granted"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class HandoverReply:
    request_id: str
    verdict: Verdict
    reason: str = ""


class _Replies:
    """The verdict is the wire's ``"type"`` (nodes of every version read it so)."""

    def encode(self, message: HandoverReply) -> dict[str, Any]:
        return {"type": message.verdict.value, "request_id": message.request_id,
                "reason": message.reason}

    def decode(self, event: Mapping[str, Any]) -> HandoverReply | None:
        request_id, reason = event.get("request_id"), event.get("reason", "")
        try:
            verdict = Verdict(str(event.get("type")))
        except ValueError:
            return None
        if not isinstance(request_id, str) or not request_id or not isinstance(reason, str):
            return None
        return HandoverReply(request_id, verdict, reason)


_REQUESTS = Messages[HandoverRequest](HandoverRequest)
_REPLIES = _Replies()


def request_topic(node_id: str) -> Topic[HandoverRequest]:
    return Topic(f"handover:{node_id}", _REQUESTS)


def reply_topic(request_id: str) -> Topic[HandoverReply]:
    return Topic(f"handover-reply:{request_id}", _REPLIES)
