"""The chunk stream (RTMP 1.0 5.3): byte streams built by hand for every header form."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.protocol.buffer import Buffer
from ingest.protocol.chunk import ChunkReader, ChunkWriter, Message, MessageType, basic_header
from ingest.protocol.errors import LimitExceeded, ProtocolError
from ingest.protocol.limits import MAX_BUFFERED_BYTES, MAX_CHUNK_STREAMS, MAX_MESSAGE_SIZE


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def type0(csid: int, ts: int, length: int, type_id: int, msid: int) -> bytes:
    ext = ts >= 0xFFFFFF
    head = basic_header(0, csid) + u24(0xFFFFFF if ext else ts) + u24(length)
    head += bytes((type_id,)) + struct.pack("<I", msid)
    return head + (struct.pack(">I", ts) if ext else b"")


def type1(csid: int, delta: int, length: int, type_id: int) -> bytes:
    ext = delta >= 0xFFFFFF
    head = basic_header(1, csid) + u24(0xFFFFFF if ext else delta) + u24(length)
    return head + bytes((type_id,)) + (struct.pack(">I", delta) if ext else b"")


def type2(csid: int, delta: int) -> bytes:
    ext = delta >= 0xFFFFFF
    return basic_header(2, csid) + u24(0xFFFFFF if ext else delta) + (
        struct.pack(">I", delta) if ext else b"")


def type3(csid: int, ext_ts: int | None = None) -> bytes:
    return basic_header(3, csid) + (struct.pack(">I", ext_ts) if ext_ts is not None else b"")


def read_all(data: bytes, reader: ChunkReader | None = None,
             step: int | None = None) -> list[Message]:
    """Feed ``data`` (in ``step``-sized pieces, to exercise rollback) and collect messages."""
    reader = reader or ChunkReader()
    buf = Buffer(MAX_BUFFERED_BYTES)
    out: list[Message] = []
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        buf.feed(piece)
        while (m := reader.next_message(buf)) is not None:
            out.append(m)
            if m.type_id == MessageType.SET_CHUNK_SIZE:
                reader.set_chunk_size(struct.unpack(">I", m.payload)[0])
    return out


@pytest.mark.parametrize("csid,expected", [
    (2, b"\x02"), (63, b"\x3f"), (64, b"\x00\x00"), (319, b"\x00\xff"),
    (320, b"\x01\x00\x01"), (65599, b"\x01\xff\xff"), (1000, b"\x01\xa8\x03"),
])
def test_basic_header_forms(csid: int, expected: bytes) -> None:
    assert basic_header(0, csid) == expected
    data = basic_header(0, csid) + u24(5) + u24(1) + b"\x09" + struct.pack("<I", 1) + b"x"
    [m] = read_all(data)
    assert m.chunk_stream_id == csid


def test_three_byte_chunk_stream_id_is_64_plus_byte1_plus_byte2_times_256() -> None:
    # byte1 = 0x10, byte2 = 0x02: 64 + 16 + 512 = 592 (pyrtmp gets this wrong).
    data = b"\x01\x10\x02" + u24(0) + u24(1) + b"\x08" + struct.pack("<I", 1) + b"a"
    [m] = read_all(data)
    assert m.chunk_stream_id == 592


def test_type0_fields_and_little_endian_stream_id() -> None:
    data = type0(4, 1000, 3, 8, 0x01020304) + b"abc"
    [m] = read_all(data)
    assert m == Message(4, 8, 0x01020304, 1000, b"abc")


def test_types_1_2_3_apply_deltas() -> None:
    data = (type0(6, 100, 2, 9, 1) + b"aa"
            + type1(6, 33, 3, 8) + b"bbb"  # new length and type, delta 33
            + type2(6, 40) + b"ccc"  # same length/type, delta 40
            + type3(6) + b"ddd")  # everything repeated, delta 40 again
    ms = read_all(data)
    assert [(m.timestamp, m.type_id, m.stream_id, m.payload) for m in ms] == [
        (100, 9, 1, b"aa"), (133, 8, 1, b"bbb"), (173, 8, 1, b"ccc"), (213, 8, 1, b"ddd")]


def test_type3_after_type0_reuses_its_timestamp_field_as_delta() -> None:
    data = type0(5, 20, 1, 8, 1) + b"a" + type3(5) + b"b"
    assert [m.timestamp for m in read_all(data)] == [20, 40]


def test_multi_chunk_message_with_default_chunk_size() -> None:
    payload = bytes(range(256)) * 2  # 512 bytes: 4 chunks of 128
    data = type0(6, 0, len(payload), 9, 1) + payload[:128]
    for i in range(128, 512, 128):
        data += type3(6) + payload[i:i + 128]
    for step in (None, 1, 7):
        [m] = read_all(data, step=step)
        assert m.payload == payload


def test_extended_timestamp_on_type0_and_its_type3_continuations() -> None:
    ts = 0x01000000
    payload = b"x" * 200
    data = type0(6, ts, 200, 9, 1) + payload[:128] + type3(6, ts) + payload[128:]
    [m] = read_all(data)
    assert m.timestamp == ts and m.payload == payload


def test_type3_continuation_without_the_repeated_extended_timestamp_is_tolerated() -> None:
    ts = 0x01000000
    payload = b"y" * 200
    data = type0(6, ts, 200, 9, 1) + payload[:128] + type3(6) + payload[128:]
    [m] = read_all(data)
    assert m.payload == payload


def test_extended_delta_on_type1_and_type2_and_a_new_message_type3() -> None:
    delta = 0x01000005
    data = (type0(4, 0, 1, 8, 1) + b"a" + type1(4, delta, 1, 8) + b"b"
            + type3(4, delta) + b"c" + type2(4, 10) + b"d")
    assert [m.timestamp for m in read_all(data)] == [0, delta, 2 * delta, 2 * delta + 10]


def test_timestamps_wrap_modulo_2_to_the_32() -> None:
    data = type0(4, 0xFFFFFFF0, 1, 8, 1) + b"a" + type2(4, 0x20) + b"b"
    assert [m.timestamp for m in read_all(data)] == [0xFFFFFFF0, 0x10]


def test_chunk_size_change_in_the_middle_of_a_stream() -> None:
    big = b"z" * 1000
    data = type0(6, 0, 300, 9, 1) + big[:128] + type3(6) + big[128:256] + type3(6) + big[256:300]
    data += type0(2, 0, 4, 1, 0) + struct.pack(">I", 500)
    data += type0(6, 40, 1000, 9, 1) + big[:500] + type3(6) + big[500:]
    ms = read_all(data, step=13)
    assert [len(m.payload) for m in ms] == [300, 4, 1000]


def test_interleaved_chunk_streams() -> None:
    video = b"V" * 300
    audio = b"A" * 200
    data = (type0(6, 0, 300, 9, 1) + video[:128]
            + type0(4, 0, 200, 8, 1) + audio[:128]
            + type3(6) + video[128:256]
            + type3(4) + audio[128:]
            + type3(6) + video[256:])
    ms = read_all(data)
    assert [(m.chunk_stream_id, m.payload) for m in ms] == [(4, audio), (6, video)]


def test_abort_discards_the_partial_message() -> None:
    reader = ChunkReader()
    buf = Buffer(MAX_BUFFERED_BYTES)
    buf.feed(type0(6, 0, 300, 9, 1) + b"x" * 128)
    assert reader.next_message(buf) is None
    assert reader.partial_bytes == 128
    reader.abort(6)
    assert reader.partial_bytes == 0
    buf.feed(type0(6, 5, 1, 9, 1) + b"y")
    m = reader.next_message(buf)
    assert m is not None and m.payload == b"y" and m.timestamp == 5


def test_first_chunk_of_a_stream_must_be_type0() -> None:
    with pytest.raises(ProtocolError, match="starts with a type"):
        read_all(type1(6, 0, 1, 9) + b"a")


def test_new_header_before_the_previous_message_completed() -> None:
    with pytest.raises(ProtocolError, match="before its previous"):
        read_all(type0(6, 0, 300, 9, 1) + b"x" * 128 + type2(6, 1))


def test_message_size_limit() -> None:
    with pytest.raises(LimitExceeded):
        read_all(type0(6, 0, MAX_MESSAGE_SIZE + 1, 9, 1))


def test_chunk_stream_count_limit() -> None:
    data = b"".join(type0(3 + i, 0, 1, 8, 1) + b"a" for i in range(MAX_CHUNK_STREAMS + 1))
    with pytest.raises(LimitExceeded, match="chunk streams"):
        read_all(data)


def test_partial_message_bytes_are_bounded() -> None:
    reader = ChunkReader()
    # Five nearly complete 8 MiB messages would hold 40 MiB: more than the limit.
    size = MAX_MESSAGE_SIZE - 1
    reader.set_chunk_size(size)  # each first chunk leaves one byte outstanding
    buf = Buffer(MAX_BUFFERED_BYTES + 64)
    with pytest.raises(LimitExceeded, match="partial"):
        for csid in (3, 4, 5, 6, 7):
            data = type0(csid, 0, size + 1, 9, 1) + bytes(size)
            buf.feed(data)
            assert reader.next_message(buf) is None


@pytest.mark.parametrize("size", [0, 0x80000001, 0x1000000])
def test_invalid_or_oversized_chunk_size(size: int) -> None:
    with pytest.raises(ProtocolError):
        ChunkReader().set_chunk_size(size)


def test_writer_round_trips_through_the_reader_with_compressed_headers() -> None:
    writer = ChunkWriter(chunk_size=100)
    sent = [(6, 9, 1, 0, b"k" * 250), (6, 9, 1, 33, b"p" * 250), (6, 9, 1, 66, b"q" * 250),
            (4, 8, 1, 10, b"a" * 10), (6, 9, 1, 99, b"r" * 7), (4, 8, 1, 0x2000000, b"b" * 150),
            (4, 8, 1, 0x2000010, b"c" * 150), (300, 18, 1, 5, b"meta"),
            (70000 - 4471, 20, 0, 0, b"cmd")]
    data = b"".join(writer.write(*args) for args in sent)
    reader = ChunkReader()
    reader.set_chunk_size(100)
    got = [(m.chunk_stream_id, m.type_id, m.stream_id, m.timestamp, m.payload)
           for m in read_all(data, reader, step=17)]
    assert got == sent


# --- fuzzing (hypothesis) ---------------------------------------------------------------

FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _read_guarded(data: bytes, pieces: list[int], chunk_size: int | None = None
                  ) -> tuple[list[Message], ProtocolError | None]:
    """Feed ``data`` in ``pieces``-sized slices the way the session does (Set Chunk Size
    applied as it arrives); the messages read and the ProtocolError that stopped it. Any
    other exception fails the test."""
    reader = ChunkReader()
    if chunk_size is not None:
        reader.set_chunk_size(chunk_size)
    buf = Buffer(MAX_BUFFERED_BYTES)
    out: list[Message] = []
    pos = 0
    try:
        for size in [*pieces, len(data)]:
            buf.feed(data[pos:pos + size])
            pos += size
            while (m := reader.next_message(buf)) is not None:
                out.append(m)
                assert len(m.payload) <= MAX_MESSAGE_SIZE
                if m.type_id == MessageType.SET_CHUNK_SIZE:
                    if len(m.payload) != 4:
                        raise ProtocolError("bad Set Chunk Size")
                    reader.set_chunk_size(struct.unpack(">I", m.payload)[0])
            assert reader.partial_bytes <= MAX_BUFFERED_BYTES
            if pos >= len(data):
                break
    except ProtocolError as exc:  # LimitExceeded included
        return out, exc
    return out, None


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(1, 400), max_size=8))
def test_any_bytes_give_messages_or_a_protocol_error(data: bytes, pieces: list[int]) -> None:
    _read_guarded(data, pieces)


_MESSAGES = st.lists(st.tuples(
    st.sampled_from([2, 3, 4, 6, 63, 64, 319, 320, 65599]),  # every basic header form
    st.integers(1, 255), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.binary(max_size=600)), min_size=1, max_size=12)


def _writer_stream(messages: list[tuple[int, int, int, int, bytes]],
                   chunk_size: int) -> bytes:
    writer = ChunkWriter(chunk_size=chunk_size)
    return b"".join(writer.write(csid, type_id if type_id != MessageType.SET_CHUNK_SIZE
                                 else MessageType.VIDEO, stream_id, ts, payload)
                    for csid, type_id, stream_id, ts, payload in messages)


@FUZZ
@given(_MESSAGES, st.integers(1, 1000), st.lists(st.integers(1, 300), max_size=8))
def test_writer_output_reads_back_the_same_messages(
        messages: list[tuple[int, int, int, int, bytes]], chunk_size: int,
        pieces: list[int]) -> None:
    data = _writer_stream(messages, chunk_size)
    got, error = _read_guarded(data, pieces, chunk_size)
    assert error is None
    sent = [(csid, type_id if type_id != MessageType.SET_CHUNK_SIZE else MessageType.VIDEO,
             stream_id, ts, payload) for csid, type_id, stream_id, ts, payload in messages]
    assert [(m.chunk_stream_id, m.type_id, m.stream_id, m.timestamp, m.payload)
            for m in got] == sent


@FUZZ
@given(_MESSAGES, st.integers(1, 300),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                max_size=6),
       st.lists(st.integers(1, 300), max_size=8))
def test_mutated_writer_output_gives_messages_or_a_protocol_error(
        messages: list[tuple[int, int, int, int, bytes]], chunk_size: int,
        mutations: list[tuple[int, int]], pieces: list[int]) -> None:
    data = bytearray(_writer_stream(messages, chunk_size))
    for pos, value in mutations:
        data[pos % len(data)] = value
    _read_guarded(bytes(data), pieces, chunk_size)
