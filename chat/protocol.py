"""The chat wire format: JSON text frames over a WebSocket, validated here without I/O.

Client -> server: ``{"type": "send", "text": "...", "ref": "..."}`` (``ref`` optional,
echoed in the message so a sender can find its own) and ``{"type": "ping"}``.
Server -> client: ``welcome``, ``history``, ``message``, ``delete``, ``ban``, ``pong``,
``error`` (see docs/chat.md). A message frame is built once by the server that accepted it
and fanned out byte for byte, so the frame text *is* the Pub/Sub payload.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

MAX_TEXT_CHARS = 100  # OPENREC's limit, in code points after NFC normalisation
MAX_FRAME_BYTES = 4096  # a client frame larger than this is refused unparsed
MAX_NICK_CHARS = 24
MAX_REF_CHARS = 64
TOKEN_BYTES = 16
NICK_RE = re.compile(r"^[\w-]{1,24}$")  # MAX_NICK_CHARS
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ErrorCode(StrEnum):
    """``code`` of an error frame; the connection stays up after every one of them."""

    BAD_FRAME = "bad_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    BAD_TEXT = "bad_text"
    RATE_LIMITED = "rate_limited"
    BANNED = "banned"
    UNAVAILABLE = "unavailable"
    TOO_MANY_CONNECTIONS = "too_many_connections"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 section 7.4; 4000-4999 private)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008  # bad channel or nickname, too many sockets from one address: do not
    # retry as is
    TRY_AGAIN_LATER = 1013  # connection setup rate exceeded: back off and retry
    SLOW_CONSUMER = 4001  # fell more than CHAT_SEND_QUEUE frames behind


class ChatError(Exception):
    """Base of chat's errors."""


class Refused(ChatError):
    """A client frame that is not accepted; answered with an error frame."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref  # the client's ref of the refused frame, when it had a valid one


@dataclass(frozen=True, slots=True)
class SendRequest:
    text: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


ClientFrame = SendRequest | Ping


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """Decode one client frame; :class:`Refused` says why it is not acceptable."""
    if len(raw) > MAX_FRAME_BYTES:
        raise Refused(ErrorCode.FRAME_TOO_LARGE, f"frames are limited to {MAX_FRAME_BYTES} "
                      "bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused(ErrorCode.BAD_FRAME, "a frame must be a JSON object") from None
    if not isinstance(data, dict):
        raise Refused(ErrorCode.BAD_FRAME, "a frame must be a JSON object")
    kind = data.get("type")
    if kind == "ping":
        return Ping()
    if kind != "send":
        raise Refused(ErrorCode.BAD_FRAME, f"unknown frame type {kind!r}")
    ref = data.get("ref")
    if ref is not None and not (isinstance(ref, str) and len(ref) <= MAX_REF_CHARS):
        raise Refused(ErrorCode.BAD_FRAME, f"ref must be a string of at most {MAX_REF_CHARS} "
                      "characters")
    try:
        return SendRequest(validate_text(data.get("text")), ref)
    except Refused as refused:
        refused.ref = ref
        raise


def validate_text(text: object) -> str:
    """The message text to publish: NFC, trimmed, 1..MAX_TEXT_CHARS, no control chars."""
    if not isinstance(text, str):
        raise Refused(ErrorCode.BAD_FRAME, "text must be a string")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise Refused(ErrorCode.EMPTY, "the message is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise Refused(ErrorCode.TOO_LONG, f"messages are limited to {MAX_TEXT_CHARS} "
                      f"characters (this one has {len(text)})")
    if _CONTROL.search(text):
        raise Refused(ErrorCode.BAD_TEXT, "control characters are not allowed")
    return text


def valid_nick(nick: str) -> bool:
    return bool(NICK_RE.fullmatch(nick))


def nick_key(nick: str) -> str:
    """What a nickname ban matches: case-insensitively, whatever the Unicode form."""
    return unicodedata.normalize("NFKC", nick).casefold()


def issue_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def user_id(token: str) -> str:
    """The public id of a token's holder: shown with messages, used by bans."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


# --- server frames -----------------------------------------------------------------

def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def message_body(*, channel: str, nick: str, user: str, text: str, ts_ms: int,
                 ref: str | None) -> str:
    """A message frame without its opening ``{"type":"message","id":N,``.

    The id is assigned where the order is decided (the shard's Redis, atomically with the
    publish), which prepends :func:`message_prefix`.
    """
    data: dict[str, Any] = {"channel": channel, "nick": nick, "user": user, "text": text,
                            "ts": ts_ms}
    if ref is not None:
        data["ref"] = ref
    return _dumps(data)[1:]


def message_prefix(message_id: int) -> str:
    return f'{{"type":"message","id":{message_id},'


def message_frame(message_id: int, body: str) -> str:
    return message_prefix(message_id) + body


def history_frame(channel: str, frames: list[str]) -> str:
    return f'{{"type":"history","channel":{_dumps_str(channel)},"messages":[' + ",".join(
        frames) + "]}"


def _dumps_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def delete_frame(channel: str, message_id: int) -> str:
    return _dumps({"type": "delete", "channel": channel, "id": message_id})


def ban_frame(channel: str, user: str | None, nick: str | None) -> str:
    return _dumps({"type": "ban", "channel": channel, "user": user, "nick": nick})


def welcome_frame(*, channel: str, nick: str, user: str, token: str, rate_per_s: float,
                  burst: int) -> str:
    return _dumps({"type": "welcome", "channel": channel, "nick": nick, "user": user,
                   "token": token, "limits": {"max_chars": MAX_TEXT_CHARS,
                                              "rate_per_s": rate_per_s, "burst": burst}})


def error_frame(code: ErrorCode, message: str, ref: str | None = None) -> str:
    data: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if ref is not None:
        data["ref"] = ref
    return _dumps(data)


PONG_FRAME = '{"type":"pong"}'


@dataclass(frozen=True, slots=True)
class EventHead:
    """What the hub needs of a fanned-out frame: its type and, for messages, its id."""

    kind: str
    message_id: int | None
    ts_ms: int | None


def event_head(frame: str) -> EventHead:
    """Peek at a bus frame (written by a chat server, still checked: Redis is shared)."""
    try:
        data = json.loads(frame)
    except ValueError:
        return EventHead("invalid", None, None)
    if not isinstance(data, dict):
        return EventHead("invalid", None, None)
    kind = data.get("type")
    if kind != "message":
        return EventHead(kind if isinstance(kind, str) else "invalid", None, None)
    message_id, ts = data.get("id"), data.get("ts")
    if not isinstance(message_id, int) or not isinstance(ts, int):
        return EventHead("invalid", None, None)
    return EventHead(kind, message_id, ts)
