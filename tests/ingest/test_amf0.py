from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.protocol import amf0
from ingest.protocol.amf0 import UNDEFINED, AmfType, AmfValue, EcmaArray
from ingest.protocol.errors import AmfError, ProtocolError

ROUND_TRIPS: list[AmfValue] = [
    0.0, -1.5, 1e300, 42.0, True, False, "", "héllo", "x" * 70000, None, UNDEFINED,
    datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC),
    {"a": 1.0, "b": "two", "nested": {"c": [1.0, "x", None]}},
    EcmaArray(width=1920.0, height=1080.0, encoder="obs"),
    [1.0, True, "s", None, UNDEFINED, {"k": []}],
    {},
    [],
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_round_trip(value: AmfValue) -> None:
    encoded = amf0.encode(value)
    [decoded] = amf0.decode_all(encoded)
    assert decoded == value
    assert type(decoded) is type(value) or isinstance(value, int)


def test_wire_format_of_each_type() -> None:
    assert amf0.encode(1.0) == b"\x00" + struct.pack(">d", 1.0)
    assert amf0.encode(True) == b"\x01\x01"
    assert amf0.encode("ab") == b"\x02\x00\x02ab"
    assert amf0.encode({"a": None}) == b"\x03\x00\x01a\x05\x00\x00\x09"
    assert amf0.encode(None) == b"\x05"
    assert amf0.encode(UNDEFINED) == b"\x06"
    assert amf0.encode(EcmaArray(a=True)) == b"\x08\x00\x00\x00\x01\x00\x01a\x01\x01\x00\x00\x09"
    assert amf0.encode([None]) == b"\x0a\x00\x00\x00\x01\x05"
    assert amf0.encode(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == (
        b"\x0b" + struct.pack(">dh", 1000.0, 0))
    long = amf0.encode("y" * 65536)
    assert long[:5] == b"\x0c\x00\x01\x00\x00"
    assert amf0.encode(7) == amf0.encode(7.0)


def test_long_string_xml_and_typed_object_decode() -> None:
    assert amf0.decode_all(b"\x0c\x00\x00\x00\x02hi") == ["hi"]
    assert amf0.decode_all(b"\x0f\x00\x00\x00\x03<a>") == ["<a>"]
    typed = b"\x10\x00\x03Foo\x00\x01x\x00" + struct.pack(">d", 2.0) + b"\x00\x00\x09"
    assert amf0.decode_all(typed) == [{"x": 2.0}]


def test_ecma_array_count_is_only_a_hint() -> None:
    # Some encoders write a count of 0 and rely on the object-end marker.
    data = b"\x08\x00\x00\x00\x00\x00\x01a\x05\x00\x00\x09"
    assert amf0.decode_all(data) == [{"a": None}]


def test_decode_all_reads_a_command_body() -> None:
    body = amf0.encode("connect", 1.0, {"app": "live"})
    assert amf0.decode_all(body) == ["connect", 1.0, {"app": "live"}]


@pytest.mark.parametrize("data,message", [
    (bytes((AmfType.AVMPLUS,)) + b"\x01", "AMF3"),
    (b"\x07\x00\x01", "references"),
    (b"\x09", "object-end"),
    (b"\x04", "MOVIECLIP"),
    (b"\x0d", "UNSUPPORTED"),
    (b"\x0e", "RECORDSET"),
    (b"\x99", "0x99"),
    (b"\x00\x00\x00", "truncated"),
    (b"\x02\x00\x05ab", "truncated"),
    (b"\x02\x00\x02\xff\xfe", "UTF-8"),
    (b"\x03\x00\x01a\x05", "truncated"),
    (b"\x0a\xff\xff\xff\xff", "strict array"),
])
def test_malformed_or_unsupported_input_is_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(AmfError, match=message) as info:
        amf0.decode_all(data)
    assert isinstance(info.value, ProtocolError)


def test_nesting_is_bounded() -> None:
    data = b"\x0a\x00\x00\x00\x01" * 100 + b"\x05"
    with pytest.raises(AmfError, match="deeply"):
        amf0.decode_all(data)


def test_naive_datetimes_are_refused_when_encoding() -> None:
    with pytest.raises(AmfError):
        amf0.encode(datetime(2024, 1, 1))


# --- fuzzing (hypothesis) ---------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Dates travel as float milliseconds: whole milliseconds survive the round trip.
_DATES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                      timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
_SCALARS = (st.floats(allow_nan=False) | st.booleans() | st.text(max_size=40)
            | st.none() | st.just(UNDEFINED) | _DATES)
_VALUES: st.SearchStrategy[AmfValue] = st.recursive(
    _SCALARS,
    lambda inner: (st.lists(inner, max_size=5)
                   | st.dictionaries(st.text(max_size=10), inner, max_size=5)
                   | st.dictionaries(st.text(max_size=10), inner, max_size=5).map(EcmaArray)),
    max_leaves=25)


def _same(a: AmfValue, b: AmfValue) -> bool:
    """Equal, with the same AMF0 types all the way down (an EcmaArray is no object)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@FUZZ
@given(st.lists(_VALUES, max_size=4))
def test_encode_then_decode_is_the_identity(values: list[AmfValue]) -> None:
    decoded = amf0.decode_all(amf0.encode(*values))
    assert _same(decoded, values), (decoded, values)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_decode_or_raise_an_amf_error(data: bytes) -> None:
    try:
        amf0.decode_all(data)
    except AmfError:
        pass


@FUZZ
@given(st.lists(_VALUES, min_size=1, max_size=3),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                max_size=4))
def test_mutated_encodings_decode_or_raise_an_amf_error(
        values: list[AmfValue], mutations: list[tuple[int, int]]) -> None:
    data = bytearray(amf0.encode(*values))
    for pos, value in mutations:
        data[pos % len(data)] = value
    try:
        amf0.decode_all(bytes(data))
    except AmfError:
        pass
