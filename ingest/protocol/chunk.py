"""The RTMP chunk stream (RTMP 1.0 section 5.3): chunks in, messages out, and back.

Basic headers of 1, 2 and 3 bytes (chunk stream ids 2..63, 64..319, 64..65599; the
3-byte form is 64 + byte1 + byte2 * 256), message headers of type 0 (absolute
timestamp, length, type id, little-endian message stream id), 1 (delta, length, type),
2 (delta) and 3 (none), and the extended timestamp (section 5.3.1.3) that follows
whenever the 24-bit field is 0xFFFFFF -- also on type 3 chunks of such a message.

A type 3 chunk that starts a new message reuses the previous header of its chunk
stream, timestamp delta included (for a type 0 predecessor the "delta" is its timestamp
field, as ffmpeg and librtmp both read and write it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ingest.protocol.buffer import Buffer, NeedMoreData
from ingest.protocol.errors import LimitExceeded, ProtocolError
from ingest.protocol.limits import (
    DEFAULT_OUT_CHUNK_SIZE,
    MAX_BUFFERED_BYTES,
    MAX_CHUNK_SIZE,
    MAX_CHUNK_STREAMS,
    MAX_MESSAGE_SIZE,
)

DEFAULT_CHUNK_SIZE = 128  # RTMP 1.0 5.4.1: until a Set Chunk Size says otherwise
EXTENDED_TIMESTAMP = 0xFFFFFF
TIMESTAMP_MASK = 0xFFFFFFFF


class MessageType(IntEnum):
    """RTMP message type ids (RTMP 1.0 sections 5.4, 6.2 and 7.1)."""

    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class ChunkFormat(IntEnum):
    """The fmt field of the basic header: which message header follows (5.3.1.2)."""

    FULL = 0  # 11 bytes: timestamp, length, type id, stream id
    SAME_STREAM = 1  # 7 bytes: timestamp delta, length, type id
    TIMESTAMP_ONLY = 2  # 3 bytes: timestamp delta
    CONTINUATION = 3  # 0 bytes


@dataclass(frozen=True, slots=True)
class Message:
    """One reassembled RTMP message."""

    chunk_stream_id: int
    type_id: int
    stream_id: int
    timestamp: int  # milliseconds, modulo 2**32
    payload: bytes


class _InStream:
    """Reader state of one chunk stream: its last header and any partial message."""

    __slots__ = ("timestamp", "ts_field", "extended", "length", "type_id", "stream_id",
                 "partial", "started")

    def __init__(self) -> None:
        self.timestamp = 0
        self.ts_field = 0  # last timestamp field (delta, or absolute after type 0)
        self.extended = False  # last header carried an extended timestamp
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.partial: bytearray | None = None
        self.started = False  # a type 0 header was seen


def _u24(b: bytes) -> int:
    return (b[0] << 16) | (b[1] << 8) | b[2]


class ChunkReader:
    """Reassembles messages from chunks held in a :class:`Buffer`."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _InStream] = {}
        self._partial_bytes = 0
        #: The message size and partial-message limits in force (a server session
        #: lowers them until the peer is authenticated).
        self.max_message_size = MAX_MESSAGE_SIZE
        self.max_partial_bytes = MAX_BUFFERED_BYTES

    @property
    def partial_bytes(self) -> int:
        """Bytes held in partially reassembled messages."""
        return self._partial_bytes

    def set_chunk_size(self, size: int) -> None:
        """Apply the peer's Set Chunk Size (5.4.1)."""
        if size & 0x80000000 or size < 1:
            raise ProtocolError(f"invalid chunk size {size}")
        if size > MAX_CHUNK_SIZE:
            raise LimitExceeded(f"chunk size {size} exceeds {MAX_CHUNK_SIZE}")
        self.chunk_size = size

    def abort(self, chunk_stream_id: int) -> None:
        """Discard the partial message of a chunk stream (Abort Message, 5.4.2)."""
        st = self._streams.get(chunk_stream_id)
        if st is not None and st.partial is not None:
            self._partial_bytes -= len(st.partial)
            st.partial = None

    def next_message(self, buf: Buffer) -> Message | None:
        """Read chunks until one message completes; None when the buffer runs dry."""
        while True:
            try:
                message = self._read_chunk(buf)
            except NeedMoreData:
                buf.rollback()
                return None
            buf.commit()
            if message is not None:
                return message

    def _read_chunk(self, buf: Buffer) -> Message | None:
        b0 = buf.consume(1)[0]
        fmt = ChunkFormat(b0 >> 6)
        csid = b0 & 0x3F
        if csid == 0:
            csid = 64 + buf.consume(1)[0]
        elif csid == 1:
            b = buf.consume(2)
            csid = 64 + b[0] + b[1] * 256

        st = self._streams.get(csid)
        if st is None:
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise LimitExceeded(f"more than {MAX_CHUNK_STREAMS} chunk streams")
            st = _InStream()
        if fmt is not ChunkFormat.FULL and not st.started:
            raise ProtocolError(f"chunk stream {csid} starts with a type {fmt} header")
        if fmt is not ChunkFormat.CONTINUATION and st.partial is not None:
            raise ProtocolError(f"new message header on chunk stream {csid} "
                                "before its previous message completed")

        # Parse into locals; state changes only once the whole chunk is in the buffer.
        ts_field = st.ts_field
        extended = st.extended
        length, type_id, stream_id = st.length, st.type_id, st.stream_id
        if fmt is not ChunkFormat.CONTINUATION:
            header = buf.consume((11, 7, 3)[fmt])
            ts_field = _u24(header[0:3])
            if fmt <= ChunkFormat.SAME_STREAM:
                length = _u24(header[3:6])
                type_id = header[6]
            if fmt is ChunkFormat.FULL:
                (stream_id,) = struct.unpack("<I", header[7:11])
            extended = ts_field == EXTENDED_TIMESTAMP
            if extended:
                (ts_field,) = struct.unpack(">I", buf.consume(4))
        elif extended:
            if st.partial is None:
                (ts_field,) = struct.unpack(">I", buf.consume(4))
            else:
                # Continuation of a message with an extended timestamp: the spec (and
                # librtmp, ffmpeg) repeat it here; a few old encoders do not, so only
                # skip the four bytes when they match.
                if struct.unpack(">I", buf.peek(4))[0] == ts_field:
                    buf.consume(4)

        if st.partial is None:
            if length > self.max_message_size:
                raise LimitExceeded(f"message of {length} bytes exceeds "
                                    f"{self.max_message_size}")
            have = 0
        else:
            have = len(st.partial)
        take = min(self.chunk_size, length - have)
        if self._partial_bytes + take > self.max_partial_bytes:
            raise LimitExceeded(f"partial messages exceed {self.max_partial_bytes} bytes")
        data = buf.consume(take)

        # The chunk is complete: commit it to the stream state.
        self._streams[csid] = st
        if st.partial is None:
            if fmt is ChunkFormat.FULL:
                timestamp = ts_field
            else:
                timestamp = (st.timestamp + ts_field) & TIMESTAMP_MASK
            st.timestamp = timestamp
            st.started = True
            st.partial = bytearray()
        st.ts_field, st.extended = ts_field, extended
        st.length, st.type_id, st.stream_id = length, type_id, stream_id
        st.partial += data
        self._partial_bytes += take
        if len(st.partial) < length:
            return None
        payload = bytes(st.partial)
        self._partial_bytes -= len(st.partial)
        st.partial = None
        return Message(csid, type_id, stream_id, st.timestamp, payload)


class _OutStream:
    __slots__ = ("timestamp", "ts_field", "length", "type_id", "stream_id")

    def __init__(self, timestamp: int, ts_field: int, length: int, type_id: int,
                 stream_id: int) -> None:
        self.timestamp = timestamp
        self.ts_field = ts_field
        self.length = length
        self.type_id = type_id
        self.stream_id = stream_id


def basic_header(fmt: int, csid: int) -> bytes:
    """The 1-, 2- or 3-byte basic header of a chunk (5.3.1.1)."""
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        rest = csid - 64
        return bytes(((fmt << 6) | 1, rest & 0xFF, rest >> 8))
    raise ValueError(f"chunk stream id {csid} out of range 2..65599")


class ChunkWriter:
    """Splits messages into chunks, compressing headers against the previous message on
    the same chunk stream (types 1, 2, 3) the way ffmpeg's writer does."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}

    def write(self, csid: int, type_id: int, stream_id: int, timestamp: int,
              payload: bytes) -> bytes:
        timestamp &= TIMESTAMP_MASK
        prev = self._streams.get(csid)
        length = len(payload)
        if prev is None or prev.stream_id != stream_id or timestamp < prev.timestamp:
            fmt, ts_field = ChunkFormat.FULL, timestamp
        else:
            ts_field = timestamp - prev.timestamp
            if prev.length != length or prev.type_id != type_id:
                fmt = ChunkFormat.SAME_STREAM
            elif ts_field == prev.ts_field:
                fmt = ChunkFormat.CONTINUATION
            else:
                fmt = ChunkFormat.TIMESTAMP_ONLY
        self._streams[csid] = _OutStream(timestamp, ts_field, length, type_id, stream_id)

        extended = ts_field >= EXTENDED_TIMESTAMP
        ext = struct.pack(">I", ts_field) if extended else b""
        field = EXTENDED_TIMESTAMP if extended else ts_field
        out = bytearray(basic_header(fmt, csid))
        if fmt is not ChunkFormat.CONTINUATION:
            out += field.to_bytes(3, "big")
            if fmt <= ChunkFormat.SAME_STREAM:
                out += length.to_bytes(3, "big") + bytes((type_id,))
            if fmt is ChunkFormat.FULL:
                out += struct.pack("<I", stream_id)
        out += ext
        out += payload[:self.chunk_size]
        continuation = basic_header(ChunkFormat.CONTINUATION, csid) + ext
        for pos in range(self.chunk_size, length, self.chunk_size):
            out += continuation
            out += payload[pos:pos + self.chunk_size]
        return bytes(out)


__all__ = ["ChunkFormat", "ChunkReader", "ChunkWriter", "DEFAULT_CHUNK_SIZE",
           "DEFAULT_OUT_CHUNK_SIZE", "Message", "MessageType", "basic_header"]
