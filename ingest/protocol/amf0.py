"""AMF0 (Adobe "Action Message Format -- AMF 0", December 2007): encode and decode.

Python mapping: number <-> float (ints encode as numbers), boolean <-> bool, string and
long string <-> str (long string chosen when over 65535 bytes), object <-> dict,
ECMA array <-> :class:`EcmaArray` (a dict), strict array <-> list, null <-> None,
undefined <-> :data:`UNDEFINED`, date <-> aware datetime (UTC), XML document <-> str,
typed object <-> dict. References, movieclip, recordset and "unsupported" are rejected
with :class:`AmfError`, and so is the AVM+ marker (0x11): we do not speak AMF3.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from enum import Enum, IntEnum
from typing import TypeAlias

from ingest.protocol.errors import AmfError
from ingest.protocol.limits import MAX_AMF_DEPTH, MAX_AMF_ENTRIES


class AmfType(IntEnum):
    """AMF0 type markers (AMF0 spec section 2.1)."""

    NUMBER = 0x00
    BOOLEAN = 0x01
    STRING = 0x02
    OBJECT = 0x03
    MOVIECLIP = 0x04
    NULL = 0x05
    UNDEFINED = 0x06
    REFERENCE = 0x07
    ECMA_ARRAY = 0x08
    OBJECT_END = 0x09
    STRICT_ARRAY = 0x0A
    DATE = 0x0B
    LONG_STRING = 0x0C
    UNSUPPORTED = 0x0D
    RECORDSET = 0x0E
    XML_DOCUMENT = 0x0F
    TYPED_OBJECT = 0x10
    AVMPLUS = 0x11


class Undefined(Enum):
    """AMF0 undefined (distinct from null)."""

    UNDEFINED = "undefined"


UNDEFINED = Undefined.UNDEFINED

AmfValue: TypeAlias = (
    "float | int | bool | str | None | Undefined | datetime | EcmaArray"
    " | dict[str, AmfValue] | list[AmfValue]"
)


class EcmaArray(dict[str, "AmfValue"]):
    """An AMF0 ECMA (associative) array: onMetaData's usual container."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- encoding -----------------------------------------------------------------------

def _encode_utf8(s: str, out: bytearray) -> None:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise AmfError("object key longer than 65535 bytes")
    out += struct.pack(">H", len(raw)) + raw


def _encode_props(obj: dict[str, AmfValue], out: bytearray, depth: int) -> None:
    for key, value in obj.items():
        _encode_utf8(key, out)
        _encode_value(value, out, depth + 1)
    out += b"\x00\x00\x09"


def _encode_value(value: AmfValue, out: bytearray, depth: int) -> None:
    if depth > MAX_AMF_DEPTH:
        raise AmfError("AMF0 value nested too deeply")
    if value is None:
        out.append(AmfType.NULL)
    elif value is UNDEFINED:
        out.append(AmfType.UNDEFINED)
    elif isinstance(value, bool):
        out += bytes((AmfType.BOOLEAN, int(value)))
    elif isinstance(value, int | float):
        out.append(AmfType.NUMBER)
        out += struct.pack(">d", float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(AmfType.LONG_STRING)
            out += struct.pack(">I", len(raw)) + raw
        else:
            out.append(AmfType.STRING)
            out += struct.pack(">H", len(raw)) + raw
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise AmfError("AMF0 dates must be timezone-aware")
        ms = (value - _EPOCH) / timedelta(milliseconds=1)
        out.append(AmfType.DATE)
        out += struct.pack(">dh", ms, 0)
    elif isinstance(value, EcmaArray):
        out.append(AmfType.ECMA_ARRAY)
        out += struct.pack(">I", len(value))
        _encode_props(value, out, depth)
    elif isinstance(value, dict):
        out.append(AmfType.OBJECT)
        _encode_props(value, out, depth)
    elif isinstance(value, list):
        out.append(AmfType.STRICT_ARRAY)
        out += struct.pack(">I", len(value))
        for item in value:
            _encode_value(item, out, depth + 1)
    else:
        raise AmfError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: AmfValue) -> bytes:
    """The AMF0 encoding of ``values``, one after another (a command message body)."""
    out = bytearray()
    for value in values:
        _encode_value(value, out, 0)
    return bytes(out)


# --- decoding -----------------------------------------------------------------------

class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError("truncated AMF0 data")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def utf8(self, length: int) -> str:
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AmfError("AMF0 string is not valid UTF-8") from exc

    def short_string(self) -> str:
        (length,) = struct.unpack(">H", self.take(2))
        return self.utf8(length)

    def long_string(self) -> str:
        (length,) = struct.unpack(">I", self.take(4))
        return self.utf8(length)

    def count(self) -> int:
        (n,) = struct.unpack(">I", self.take(4))
        return int(n)


def _decode_props(r: _Reader, into: dict[str, AmfValue], depth: int) -> None:
    for _ in range(MAX_AMF_ENTRIES + 1):
        key = r.short_string()
        if key == "" and r.data[r.pos:r.pos + 1] == bytes((AmfType.OBJECT_END,)):
            r.pos += 1
            return
        into[key] = _decode_value(r, depth + 1)
    raise AmfError(f"AMF0 object with more than {MAX_AMF_ENTRIES} properties")


def _decode_value(r: _Reader, depth: int) -> AmfValue:
    if depth > MAX_AMF_DEPTH:
        raise AmfError("AMF0 value nested too deeply")
    marker = r.u8()
    if marker == AmfType.NUMBER:
        return float(struct.unpack(">d", r.take(8))[0])
    if marker == AmfType.BOOLEAN:
        return r.u8() != 0
    if marker == AmfType.STRING:
        return r.short_string()
    if marker in (AmfType.LONG_STRING, AmfType.XML_DOCUMENT):
        return r.long_string()
    if marker == AmfType.NULL:
        return None
    if marker == AmfType.UNDEFINED:
        return UNDEFINED
    if marker == AmfType.OBJECT:
        obj: dict[str, AmfValue] = {}
        _decode_props(r, obj, depth)
        return obj
    if marker == AmfType.TYPED_OBJECT:
        r.short_string()  # class name: we keep only the properties
        typed: dict[str, AmfValue] = {}
        _decode_props(r, typed, depth)
        return typed
    if marker == AmfType.ECMA_ARRAY:
        r.count()  # only a hint: the end marker terminates (encoders get it wrong)
        arr = EcmaArray()
        _decode_props(r, arr, depth)
        return arr
    if marker == AmfType.STRICT_ARRAY:
        n = r.count()
        if n > MAX_AMF_ENTRIES:
            raise AmfError(f"AMF0 strict array of {n} entries exceeds {MAX_AMF_ENTRIES}")
        return [_decode_value(r, depth + 1) for _ in range(n)]
    if marker == AmfType.DATE:
        ms, _tz = struct.unpack(">dh", r.take(10))
        try:
            return _EPOCH + timedelta(milliseconds=ms)
        except (OverflowError, ValueError) as exc:
            raise AmfError(f"AMF0 date out of range: {ms}") from exc
    if marker == AmfType.AVMPLUS:
        raise AmfError("AMF3 (avmplus-object marker) is not supported")
    if marker == AmfType.REFERENCE:
        raise AmfError("AMF0 references are not supported")
    if marker == AmfType.OBJECT_END:
        raise AmfError("AMF0 object-end marker outside an object")
    try:
        name = AmfType(marker).name
    except ValueError:
        name = f"0x{marker:02x}"
    raise AmfError(f"unsupported AMF0 type {name}")


def decode_all(data: bytes) -> list[AmfValue]:
    """Every value in ``data`` (a command or data message body)."""
    r = _Reader(data)
    values: list[AmfValue] = []
    while r.pos < len(data):
        values.append(_decode_value(r, 0))
    return values
