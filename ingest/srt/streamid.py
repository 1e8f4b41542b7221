"""The SRT ``streamid`` a caller sends, read as a publish request (sans-IO).

Two forms are taken:

- the SRT Access Control syntax (SRT AccessControl.md, "Standard Keys"):
  ``#!::r=live/KEY,m=publish`` -- comma-separated ``key=value`` pairs after ``#!::``;
  ``r`` is the resource (``APP/KEY`` or ``KEY``), ``m`` the mode (``publish`` only: castway
  takes no SRT playback), ``t`` the type (``stream`` only); ``u``, ``s``, ``h`` and keys
  unknown to the spec are kept but not used;
- a bare stream key: ``KEY`` (what encoders with one "stream id" box get pasted).

A refusal carries the SRT rejection code the caller sees (SRT_REJX_*, srt.h: 1000 + the
HTTP status).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

#: SRTO_STREAMID's limit in libsrt (srt.h: SRT's handshake extension carries at most 512).
MAX_STREAMID = 512
#: What a key and an app name may contain: what RTMP stream keys use, nothing that could
#: be read as another field or a path step.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")
_PREFIX = "#!::"


class RejectCode(IntEnum):
    """SRT rejection reasons a listener sets (srt.h ``SRT_REJX_*``, SRT AccessControl.md)."""

    BAD_REQUEST = 1400  # malformed streamid
    UNAUTHORIZED = 1401  # passphrase / key not known
    OVERLOAD = 1402
    FORBIDDEN = 1403  # wrong stream key
    NOT_FOUND = 1404  # unknown application
    BAD_MODE = 1405  # m= other than publish
    CONFLICT = 1409  # channel already live from another publisher
    INTERNAL = 1500
    UNAVAILABLE = 1503  # draining, shutting down, catalog unreachable


class StreamIdError(ValueError):
    def __init__(self, reason: str, code: RejectCode = RejectCode.BAD_REQUEST) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True, slots=True)
class StreamId:
    """A publish request as the caller's streamid names it."""

    key: str
    app: str | None = None  # None: a bare key, or ``r=KEY`` without an app
    user: str | None = None
    fields: tuple[tuple[str, str], ...] = ()  # every pair as sent, in order


def _check_name(value: str, what: str) -> str:
    if not value:
        raise StreamIdError(f"empty {what}")
    if not set(value) <= _NAME_CHARS:
        raise StreamIdError(f"{what} has characters a stream key cannot have")
    return value


def parse_streamid(raw: str) -> StreamId:
    """The publish request in ``raw``; :class:`StreamIdError` if it is not one."""
    if len(raw) > MAX_STREAMID:
        raise StreamIdError("streamid longer than 512 characters")
    if not raw.startswith(_PREFIX):
        if raw.startswith("#!"):
            raise StreamIdError("streamid starts with '#!' but not '#!::'")
        return StreamId(key=_check_name(raw, "stream key"))
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in raw[len(_PREFIX):].split(","):
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise StreamIdError(f"streamid field {item!r} is not key=value")
        if name in seen:
            raise StreamIdError(f"streamid field {name!r} given twice")
        seen.add(name)
        pairs.append((name, value))
    fields = dict(pairs)
    mode = fields.get("m", "publish")
    if mode != "publish":
        raise StreamIdError(f"mode {mode!r}: this server only takes publishers (m=publish)",
                            RejectCode.BAD_MODE)
    kind = fields.get("t", "stream")
    if kind != "stream":
        raise StreamIdError(f"type {kind!r}: only t=stream is served")
    resource = fields.get("r")
    if resource is None:
        raise StreamIdError("streamid has no resource (r=APP/KEY)")
    app, slash, key = resource.rpartition("/")
    return StreamId(key=_check_name(key, "stream key"),
                    app=_check_name(app, "application") if slash else None,
                    user=fields.get("u"), fields=tuple(pairs))
