"""castway.events: typed topics and the wire form of their messages.

Every family goes to the wire as the flat JSON objects castway sent before the messages
had types (so processes of two versions read each other during a rolling deploy), and
comes back only as one of its topic's messages: anything else decodes to None and never
reaches a subscriber. Both live-state backends carry exactly this
(tests/castway/test_live_state.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pytest

from castway.events.broadcasts import (
    BROADCASTS_TOPIC,
    BroadcastEnded,
    BroadcastFailed,
    BroadcastResumed,
    BroadcastStarted,
)
from castway.events.handover import (
    HandoverReply,
    HandoverRequest,
    Verdict,
    reply_topic,
    request_topic,
)
from castway.events.media import MediaUpdate, media_topic
from castway.events.nodes import StopBroadcast, node_commands_topic
from castway.events.topic import Messages, Topic

ROUND_TRIPS: list[tuple[Topic[Any], Any, dict[str, Any]]] = [
    (BROADCASTS_TOPIC, BroadcastStarted("b1", "alpha"),
     {"type": "started", "broadcast_id": "b1", "channel": "alpha"}),
    (BROADCASTS_TOPIC, BroadcastResumed("b1", "alpha", "node-b"),
     {"type": "resumed", "broadcast_id": "b1", "channel": "alpha", "node_id": "node-b"}),
    (BROADCASTS_TOPIC, BroadcastEnded("b1", "alpha"),
     {"type": "ended", "broadcast_id": "b1", "channel": "alpha"}),
    (BROADCASTS_TOPIC, BroadcastFailed("b1", "alpha", "node lost"),
     {"type": "failed", "broadcast_id": "b1", "channel": "alpha", "reason": "node lost"}),
    (media_topic("b1"), MediaUpdate("720p", 7, 2),
     {"rendition": "720p", "msn": 7, "part": 2}),
    (media_topic("b1"), MediaUpdate("720p", 7),
     {"rendition": "720p", "msn": 7, "part": None}),
    (media_topic("b1"), BroadcastFailed("b1", "alpha"),
     {"type": "failed", "broadcast_id": "b1", "channel": "alpha", "reason": ""}),
    (node_commands_topic("n1"), StopBroadcast("b1"),
     {"type": "stop-broadcast", "broadcast_id": "b1"}),
    (request_topic("n1"), HandoverRequest("r1", "alpha", "b1", "conn-2", "n2"),
     {"type": "request", "request_id": "r1", "channel": "alpha", "broadcast_id": "b1",
      "owner": "conn-2", "node_id": "n2"}),
    *((reply_topic("r1"), HandoverReply("r1", verdict, "why"),
       {"type": verdict.value, "request_id": "r1", "reason": "why"}) for verdict in Verdict),
]


@pytest.mark.parametrize(("topic", "message", "wire"), ROUND_TRIPS,
                         ids=[f"{t.name}-{type(m).__name__}" for t, m, _ in ROUND_TRIPS])
def test_a_message_goes_to_the_wire_as_before_and_comes_back_equal(
        topic: Topic[Any], message: Any, wire: dict[str, Any]) -> None:
    assert topic.encode(message) == wire
    assert topic.decode(wire) == message


def test_topic_names_are_the_channels_castway_always_used() -> None:
    assert [t.name for t in (BROADCASTS_TOPIC, media_topic("b1"), node_commands_topic("n1"),
                             request_topic("n1"), reply_topic("r1"))] == [
        "broadcasts", "media:b1", "node-commands:n1", "handover:n1", "handover-reply:r1"]


@pytest.mark.parametrize(("topic", "wire"), [
    (BROADCASTS_TOPIC, {"type": "paused", "broadcast_id": "b1", "channel": "alpha"}),
    (BROADCASTS_TOPIC, {"broadcast_id": "b1", "channel": "alpha"}),  # no type
    (BROADCASTS_TOPIC, {"type": "ended", "channel": "alpha"}),  # no id
    (BROADCASTS_TOPIC, {"type": "ended", "broadcast_id": "", "channel": "alpha"}),
    (BROADCASTS_TOPIC, {"type": "ended", "broadcast_id": 42, "channel": "alpha"}),
    (BROADCASTS_TOPIC, {"type": 1, "broadcast_id": "b1", "channel": "alpha"}),
    (BROADCASTS_TOPIC, {"type": "failed", "broadcast_id": "b1", "channel": "a",
                        "reason": None}),
    (media_topic("b1"), {"rendition": "720p", "msn": "7", "part": None}),
    (media_topic("b1"), {"rendition": "720p", "msn": True, "part": None}),
    (media_topic("b1"), {"rendition": "720p", "msn": 7, "part": 0.5}),
    (media_topic("b1"), {"msn": 7}),
    # a start is no news for an origin: not one of the media topic's messages
    (media_topic("b1"), {"type": "started", "broadcast_id": "b1", "channel": "alpha"}),
    (node_commands_topic("n1"), {"type": "stop", "broadcast_id": "b1"}),
    (request_topic("n1"), {"type": "request", "request_id": "r", "channel": "c",
                           "broadcast_id": "b", "owner": "o"}),
    (request_topic("n1"), {"type": "request", "request_id": 5, "channel": "c",
                           "broadcast_id": "b", "owner": "o", "node_id": "n"}),
    (request_topic("n1"), {"type": "ack", "request_id": "r"}),
    (reply_topic("r"), {"type": "maybe", "request_id": "r"}),
    (reply_topic("r"), {"type": "ack", "request_id": ""}),
])
def test_what_is_none_of_a_topics_messages_decodes_to_none(
        topic: Topic[Any], wire: dict[str, Any]) -> None:
    assert topic.decode(wire) is None


def test_keys_a_newer_writer_added_are_ignored_and_defaults_fill_missing_ones() -> None:
    assert BROADCASTS_TOPIC.decode({"type": "failed", "broadcast_id": "b1",
                                    "channel": "alpha", "region": "eu"}) == \
        BroadcastFailed("b1", "alpha", "")
    assert media_topic("b1").decode({"rendition": "720p", "msn": 3}) == MediaUpdate("720p", 3)


def test_a_message_of_another_family_is_refused_at_the_publisher() -> None:
    with pytest.raises(TypeError):
        BROADCASTS_TOPIC.encode(StopBroadcast("b1"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Ok:
    TYPE: ClassVar[str] = "ok"
    name: str
    ratio: float = 1.0


@dataclass
class _Mutable:
    TYPE: ClassVar[str] = "mutable"
    name: str


@dataclass(frozen=True)
class _TypeField:
    TYPE: ClassVar[str] = "tf"
    type: str


@dataclass(frozen=True)
class _Unsupported:
    TYPE: ClassVar[str] = "when"
    at: datetime


@dataclass(frozen=True)
class _Untagged:
    name: str


@dataclass(frozen=True)
class _AlsoOk:
    TYPE: ClassVar[str] = "ok"
    other: str


@pytest.mark.parametrize("classes", [
    (_Mutable,), (_TypeField,), (_Unsupported,), (_Untagged,), (_Ok, _AlsoOk)],
    ids=["not frozen", "a field named type", "a datetime field", "no TYPE", "one tag twice"])
def test_a_family_that_cannot_go_to_the_wire_fails_at_import(classes: tuple[type, ...]) -> None:
    with pytest.raises(TypeError):
        Messages[Any](*classes)


def test_an_integer_on_the_wire_fills_a_float_field() -> None:
    codec = Messages[_Ok](_Ok)
    assert codec.decode({"type": "ok", "name": "x", "ratio": 2}) == _Ok("x", 2.0)
    assert codec.decode({"type": "ok", "name": "x", "ratio": False}) is None
