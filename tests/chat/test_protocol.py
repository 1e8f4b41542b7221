"""The wire format: client frame validation, server frames, identities."""

from __future__ import annotations

import json

import pytest

from chat.protocol import (
    MAX_FRAME_BYTES,
    MAX_TEXT_CHARS,
    ErrorCode,
    EventHead,
    Ping,
    Refused,
    SendRequest,
    ban_frame,
    delete_frame,
    error_frame,
    event_head,
    history_frame,
    message_body,
    message_frame,
    nick_key,
    parse_client_frame,
    user_id,
    valid_nick,
)


@pytest.mark.parametrize(("raw", "expected"), [
    ('{"type": "ping"}', Ping()),
    ('{"type": "send", "text": "hi"}', SendRequest("hi")),
    ('{"type": "send", "text": "  hi  ", "ref": "r"}', SendRequest("hi", "r")),
    ('{"type": "send", "text": "e\\u0301"}', SendRequest("\u00e9")),  # NFC
    ('{"type": "send", "text": "tab\\there"}', SendRequest("tab\there")),
    ('{"type": "send", "text": "%s"}' % ("あ" * MAX_TEXT_CHARS),
     SendRequest("あ" * MAX_TEXT_CHARS)),
    (b'{"type": "send", "text": "bytes"}', SendRequest("bytes")),
])
def test_accepted_frames(raw: str | bytes, expected: object) -> None:
    assert parse_client_frame(raw) == expected


@pytest.mark.parametrize(("raw", "code", "ref"), [
    ("", ErrorCode.BAD_FRAME, None),
    ("nope", ErrorCode.BAD_FRAME, None),
    (b"\xff\xfe", ErrorCode.BAD_FRAME, None),
    ('"send"', ErrorCode.BAD_FRAME, None),
    ('{"text": "hi"}', ErrorCode.BAD_FRAME, None),
    ('{"type": "send"}', ErrorCode.BAD_FRAME, None),
    ('{"type": "send", "text": ["hi"]}', ErrorCode.BAD_FRAME, None),
    ('{"type": "send", "text": "hi", "ref": 5}', ErrorCode.BAD_FRAME, None),
    ('{"type": "send", "text": "hi", "ref": "%s"}' % ("r" * 65), ErrorCode.BAD_FRAME, None),
    ('{"type": "send", "text": "", "ref": "a"}', ErrorCode.EMPTY, "a"),
    ('{"type": "send", "text": " \\n ", "ref": "a"}', ErrorCode.EMPTY, "a"),
    ('{"type": "send", "text": "%s", "ref": "b"}' % ("x" * (MAX_TEXT_CHARS + 1)),
     ErrorCode.TOO_LONG, "b"),
    ('{"type": "send", "text": "a\\u0007b"}', ErrorCode.BAD_TEXT, None),
    ('{"type": "send", "text": "a\\u007fb"}', ErrorCode.BAD_TEXT, None),
    ("x" * (MAX_FRAME_BYTES + 1), ErrorCode.FRAME_TOO_LARGE, None),
])
def test_refused_frames(raw: str | bytes, code: ErrorCode, ref: str | None) -> None:
    with pytest.raises(Refused) as refused:
        parse_client_frame(raw)
    assert refused.value.code is code
    assert refused.value.ref == ref
    assert refused.value.message


@pytest.mark.parametrize(("nick", "ok"), [
    ("alice", True), ("Bob_2", True), ("ゆうき", True), ("x-y", True), ("a" * 24, True),
    ("", False), ("a" * 25, False), ("a b", False), ("<b>", False), ("alice\n", False),
])
def test_nicknames(nick: str, ok: bool) -> None:
    assert valid_nick(nick) is ok


def test_nickname_bans_ignore_case_and_width() -> None:
    assert nick_key("Alice") == nick_key("ALICE") == nick_key("ａｌｉｃｅ")


def test_user_ids_are_public_and_stable_per_token() -> None:
    assert user_id("token-one-0123456789") == user_id("token-one-0123456789")
    assert user_id("token-one-0123456789") != user_id("token-two-0123456789")
    assert len(user_id("t")) == 16 and "token" not in user_id("token-one-0123456789")


def test_a_message_frame_is_its_prefix_plus_body_and_valid_json() -> None:
    body = message_body(channel="demo", nick="アリス", user="u" * 16, text='say "hi"',
                        ts_ms=1_700_000_000_123, ref="r1")
    frame = message_frame(42, body)
    assert json.loads(frame) == {"type": "message", "id": 42, "channel": "demo",
                                 "nick": "アリス", "user": "u" * 16, "text": 'say "hi"',
                                 "ts": 1_700_000_000_123, "ref": "r1"}
    assert "ref" not in json.loads(message_frame(1, message_body(
        channel="demo", nick="a", user="u", text="t", ts_ms=1, ref=None)))
    assert event_head(frame) == EventHead("message", 42, 1_700_000_000_123)


def test_other_server_frames() -> None:
    assert json.loads(history_frame("demo", [message_frame(1, message_body(
        channel="demo", nick="a", user="u", text="t", ts_ms=1, ref=None))])) == {
        "type": "history", "channel": "demo", "messages": [
            {"type": "message", "id": 1, "channel": "demo", "nick": "a", "user": "u",
             "text": "t", "ts": 1}]}
    assert json.loads(history_frame("demo", [])) == {"type": "history", "channel": "demo",
                                                     "messages": []}
    assert json.loads(error_frame(ErrorCode.TOO_LONG, "m", "r")) == {
        "type": "error", "code": "too_long", "message": "m", "ref": "r"}
    assert event_head(delete_frame("demo", 3)) == EventHead("delete", None, None)
    assert event_head(ban_frame("demo", "u", None)) == EventHead("ban", None, None)


@pytest.mark.parametrize("frame", ["", "[]", "{", '{"type": 1}',
                                   '{"type": "message", "id": "1", "ts": 1}',
                                   '{"type": "message", "id": 1}'])
def test_event_head_of_garbage_is_invalid(frame: str) -> None:
    assert event_head(frame).kind == "invalid"
