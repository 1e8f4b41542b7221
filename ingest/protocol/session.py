"""The server side of an RTMP publishing connection, sans-IO.

Feed received bytes to :meth:`ServerSession.receive_data`; it returns events. Answer
the ones that need a decision (:class:`ConnectRequested`, :class:`PublishRequested`)
with ``accept_*`` / ``reject_*``; send whatever :meth:`ServerSession.data_to_send`
returns. No sockets, no clock, no asyncio here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum, IntEnum

from castway.media import Codec, MediaKind, MediaPacket
from ingest.protocol import commands
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.buffer import Buffer
from ingest.protocol.chunk import ChunkReader, ChunkWriter, Message, MessageType
from ingest.protocol.commands import CapsEx, Command, CommandName, StatusCode
from ingest.protocol.errors import LimitExceeded, LocalProtocolError, ProtocolError, RtmpError
from ingest.protocol.flv import (
    Ignored,
    Multitrack,
    SequenceEnd,
    TrackTag,
    parse_audio,
    parse_video,
)
from ingest.protocol.handshake import ServerHandshake
from ingest.protocol.limits import (
    DEFAULT_OUT_CHUNK_SIZE,
    DEFAULT_WINDOW_ACK_SIZE,
    MAX_BUFFERED_BYTES,
    MAX_MESSAGE_SIZE,
    MAX_PREAUTH_BUFFERED_BYTES,
    MAX_PREAUTH_MESSAGE_SIZE,
)

#: Message streams one connection may create (publishers use one).
MAX_MESSAGE_STREAMS = 8

#: E-RTMP codecs we accept, advertised in connect's _result when the client asks.
SUPPORTED_FOURCCS: list[AmfValue] = ["avc1", "hvc1", "av01", "vp09", "mp4a", ".mp3", "Opus"]

# Chunk stream ids of what we send.
_CSID_CONTROL = 2
_CSID_COMMAND = 3
_CSID_STREAM = 5


class State(Enum):
    AWAIT_HANDSHAKE = "await_handshake"
    AWAIT_CONNECT = "await_connect"
    CONNECT_PENDING = "connect_pending"  # the application decides
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish_pending"  # the application decides
    PUBLISHING = "publishing"
    CLOSED = "closed"


class Trigger(Enum):
    HANDSHAKE_DONE = "handshake_done"
    CONNECT = "connect"
    CONNECT_ACCEPTED = "connect_accepted"
    CONNECT_REJECTED = "connect_rejected"
    PUBLISH = "publish"
    PUBLISH_ACCEPTED = "publish_accepted"
    PUBLISH_REJECTED = "publish_rejected"
    UNPUBLISH = "unpublish"
    CLOSE = "close"


#: The one transition table. Anything not in it is a protocol error.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.AWAIT_HANDSHAKE, Trigger.HANDSHAKE_DONE): State.AWAIT_CONNECT,
    (State.AWAIT_CONNECT, Trigger.CONNECT): State.CONNECT_PENDING,
    (State.CONNECT_PENDING, Trigger.CONNECT_ACCEPTED): State.CONNECTED,
    (State.CONNECT_PENDING, Trigger.CONNECT_REJECTED): State.CLOSED,
    (State.CONNECTED, Trigger.PUBLISH): State.PUBLISH_PENDING,
    (State.PUBLISH_PENDING, Trigger.PUBLISH_ACCEPTED): State.PUBLISHING,
    (State.PUBLISH_PENDING, Trigger.PUBLISH_REJECTED): State.CONNECTED,
    (State.PUBLISHING, Trigger.UNPUBLISH): State.CONNECTED,
    **{(state, Trigger.CLOSE): State.CLOSED for state in State},
}


#: States in which input is not parsed until the application decides.
_PAUSED = frozenset({State.CONNECT_PENDING, State.PUBLISH_PENDING, State.CLOSED})


class UserControlEvent(IntEnum):
    """User Control Message event types (RTMP 1.0 section 7.1.7)."""

    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class PeerBandwidthLimit(IntEnum):
    """Limit type of Set Peer Bandwidth (RTMP 1.0 5.4.5)."""

    HARD = 0
    SOFT = 1
    DYNAMIC = 2


# --- events ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    complex: bool  # the digest handshake was used


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    app: str
    tc_url: str | None
    params: dict[str, AmfValue]  # the whole connect command object
    fourcc_list: tuple[str, ...] = ()  # E-RTMP codecs the client offers
    caps_ex: CapsEx = CapsEx(0)  # E-RTMP v2 capabilities the client announces


@dataclass(frozen=True, slots=True)
class StreamCreated:
    stream_id: int


@dataclass(frozen=True, slots=True)
class PublishRequested:
    stream_key: str  # as sent, query string included
    publish_type: str  # "live", "record", "append"
    stream_id: int


@dataclass(frozen=True, slots=True)
class MetadataReceived:
    stream_id: int
    metadata: dict[str, AmfValue]


@dataclass(frozen=True, slots=True)
class MediaReceived:
    stream_id: int
    packet: MediaPacket


@dataclass(frozen=True, slots=True)
class SequenceEnded:
    stream_id: int
    kind: MediaKind
    codec: Codec


@dataclass(frozen=True, slots=True)
class UnpublishRequested:
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamDeleted:
    stream_id: int


@dataclass(frozen=True, slots=True)
class MessageIgnored:
    """A well-formed message we do not act on (unknown command, unsupported codec)."""

    reason: str


Event = (HandshakeCompleted | ConnectRequested | StreamCreated | PublishRequested
         | MetadataReceived | MediaReceived | SequenceEnded | UnpublishRequested
         | StreamDeleted | MessageIgnored)


class ServerSession:
    """One publisher connection, server side."""

    def __init__(self, *, window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE,
                 out_chunk_size: int = DEFAULT_OUT_CHUNK_SIZE,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.state = State.AWAIT_HANDSHAKE
        self._buf = Buffer(MAX_PREAUTH_BUFFERED_BYTES)
        self._handshake = ServerHandshake(random_bytes)
        self._reader = ChunkReader()
        self._reader.max_message_size = MAX_PREAUTH_MESSAGE_SIZE
        self._reader.max_partial_bytes = MAX_PREAUTH_BUFFERED_BYTES
        #: A publish of this connection was accepted once: the full limits apply.
        self.authenticated = False
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._window_ack_size = window_ack_size
        self._out_chunk_size = out_chunk_size
        self._ack_window = DEFAULT_WINDOW_ACK_SIZE  # until the peer announces its own
        self._last_ack = 0
        self.bytes_received = 0
        self._connect_tid = 0.0
        self._offered_fourccs = False
        self._offered_caps_ex = False
        #: E-RTMP v2 capabilities the client announced in ``connect`` (capsEx).
        self.caps_ex = CapsEx(0)
        self.reconnect_requested = False
        self._streams: set[int] = set()
        self._next_stream_id = 1
        self._publish_stream = 0
        self._publish_key = ""
        self._fc_published: set[str] = set()

    # --- state ---------------------------------------------------------------------
    def _transition(self, trigger: Trigger) -> None:
        nxt = TRANSITIONS.get((self.state, trigger))
        if nxt is None:
            raise ProtocolError(f"{trigger.value} is not allowed in state {self.state.value}")
        self.state = nxt

    def _local_transition(self, trigger: Trigger) -> None:
        nxt = TRANSITIONS.get((self.state, trigger))
        if nxt is None:
            raise LocalProtocolError(f"{trigger.value} in state {self.state.value}")
        self.state = nxt

    @property
    def publishing_stream_id(self) -> int | None:
        return self._publish_stream if self.state is State.PUBLISHING else None

    @property
    def supports_reconnect(self) -> bool:
        """The client announced E-RTMP v2 Reconnect Request support (capsEx 0x01)."""
        return CapsEx.RECONNECT in self.caps_ex

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) + self._reader.partial_bytes

    # --- I/O boundary ----------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """Process received bytes; returns the events they complete. Raises
        :class:`RtmpError` (and the session is closed) when the peer misbehaves.

        After a :class:`ConnectRequested` or :class:`PublishRequested` nothing more is
        parsed until the matching ``accept_*``/``reject_*``; then call
        ``receive_data(b"")`` to process what was buffered meanwhile."""
        if self.state is State.CLOSED:
            return []
        events: list[Event] = []
        try:
            self.bytes_received += len(data)
            self._buf.feed(data)
            if self.state is State.AWAIT_HANDSHAKE:
                self._out += self._handshake.step(self._buf)
                if not self._handshake.done:
                    return events
                self._transition(Trigger.HANDSHAKE_DONE)
                result = self._handshake.result
                events.append(HandshakeCompleted(complex=bool(result and result.complex)))
            # Stop at a decision the application must make (connect, publish): later
            # messages wait in the buffer until it has, and come with receive_data(b"").
            while self.state not in _PAUSED:
                message = self._reader.next_message(self._buf)
                if message is None:
                    break
                self._handle(message, events)
            if not self.authenticated and self.buffered_bytes > MAX_PREAUTH_BUFFERED_BYTES:
                raise LimitExceeded(f"more than {MAX_PREAUTH_BUFFERED_BYTES} bytes held "
                                    "before a publish was accepted")
            self._maybe_ack()
        except RtmpError:
            self.state = State.CLOSED
            raise
        return events

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes,
              timestamp: int = 0) -> None:
        self._out += self._writer.write(csid, type_id, stream_id, timestamp, payload)

    def _send_control(self, type_id: MessageType, payload: bytes) -> None:
        self._send(_CSID_CONTROL, type_id, 0, payload)

    def _send_user_control(self, event: UserControlEvent, data: bytes) -> None:
        self._send_control(MessageType.USER_CONTROL, struct.pack(">H", event) + data)

    def _maybe_ack(self) -> None:
        # RTMP 1.0 5.4.3: acknowledge each time another window's worth has arrived.
        if self.bytes_received - self._last_ack >= self._ack_window:
            self._last_ack = self.bytes_received
            self._send_control(MessageType.ACKNOWLEDGEMENT,
                               struct.pack(">I", self.bytes_received & 0xFFFFFFFF))

    # --- the application's decisions -------------------------------------------------
    def accept_connect(self) -> None:
        self._local_transition(Trigger.CONNECT_ACCEPTED)
        self._send_control(MessageType.WINDOW_ACK_SIZE,
                           struct.pack(">I", self._window_ack_size))
        self._send_control(MessageType.SET_PEER_BANDWIDTH,
                           struct.pack(">IB", self._window_ack_size,
                                       PeerBandwidthLimit.DYNAMIC))
        self._send_control(MessageType.SET_CHUNK_SIZE, struct.pack(">I", self._out_chunk_size))
        self._writer.chunk_size = self._out_chunk_size
        self._send_user_control(UserControlEvent.STREAM_BEGIN, struct.pack(">I", 0))
        self._send(_CSID_COMMAND, MessageType.COMMAND_AMF0, 0, commands.connect_result(
            self._connect_tid,
            fourcc_list=list(SUPPORTED_FOURCCS) if self._offered_fourccs else None,
            caps_ex=float(CapsEx.RECONNECT) if self._offered_caps_ex else None))

    def reject_connect(self, description: str) -> None:
        self._local_transition(Trigger.CONNECT_REJECTED)
        self._send(_CSID_COMMAND, MessageType.COMMAND_AMF0, 0,
                   commands.connect_rejected(self._connect_tid, description))

    def accept_publish(self) -> None:
        self._local_transition(Trigger.PUBLISH_ACCEPTED)
        if not self.authenticated:
            self.authenticated = True
            self._buf.max_size = MAX_BUFFERED_BYTES
            self._reader.max_message_size = MAX_MESSAGE_SIZE
            self._reader.max_partial_bytes = MAX_BUFFERED_BYTES
        sid = self._publish_stream
        self._send_user_control(UserControlEvent.STREAM_BEGIN, struct.pack(">I", sid))
        if self._publish_key in self._fc_published:
            self._send(_CSID_COMMAND, MessageType.COMMAND_AMF0, 0,
                       commands.on_fc_publish(self._publish_key))
        self._send(_CSID_STREAM, MessageType.COMMAND_AMF0, sid, commands.on_status(
            StatusCode.PUBLISH_START, f"{self._publish_key} is now published.",
            details=self._publish_key))

    def reject_publish(self, code: str, description: str) -> None:
        self._local_transition(Trigger.PUBLISH_REJECTED)
        self._send(_CSID_STREAM, MessageType.COMMAND_AMF0, self._publish_stream,
                   commands.on_status(code, description, level="error"))

    def request_reconnect(self, tc_url: str | None,
                          description: str = "The server is going away; reconnect.") -> None:
        """E-RTMP v2 Reconnect Request: queue the onStatus
        ``NetConnection.Connect.ReconnectRequest`` telling the client to reconnect to
        ``tc_url`` (None: to the URL it used). Only once the connect was accepted; a
        client that did not announce the capability (:attr:`supports_reconnect`) would
        ignore it, so callers check that first."""
        if self.state not in (State.CONNECTED, State.PUBLISH_PENDING, State.PUBLISHING):
            raise LocalProtocolError(f"reconnect request in state {self.state.value}")
        self._send(_CSID_COMMAND, MessageType.COMMAND_AMF0, 0,
                   commands.reconnect_request(tc_url, description))
        self.reconnect_requested = True

    def close(self) -> None:
        """The application closes the connection; further input is ignored."""
        self.state = State.CLOSED

    def ping(self, timestamp: int) -> None:
        """Send a PingRequest (the peer answers with a PingResponse)."""
        self._send_user_control(UserControlEvent.PING_REQUEST,
                                struct.pack(">I", timestamp & 0xFFFFFFFF))

    # --- message handling ------------------------------------------------------------
    def _handle(self, m: Message, events: list[Event]) -> None:
        t = m.type_id
        if t == MessageType.SET_CHUNK_SIZE:
            self._reader.set_chunk_size(self._u32(m, "Set Chunk Size"))
        elif t == MessageType.ABORT:
            self._reader.abort(self._u32(m, "Abort"))
        elif t == MessageType.WINDOW_ACK_SIZE:
            size = self._u32(m, "Window Acknowledgement Size")
            if size > 0:
                self._ack_window = size
        elif t in (MessageType.ACKNOWLEDGEMENT, MessageType.SET_PEER_BANDWIDTH):
            pass  # we send too little for either to matter
        elif t == MessageType.USER_CONTROL:
            self._handle_user_control(m)
        elif t == MessageType.COMMAND_AMF0:
            self._handle_command(m, commands.parse_command(m.payload), events)
        elif t == MessageType.DATA_AMF0:
            self._handle_data(m, events)
        elif t in (MessageType.AUDIO, MessageType.VIDEO):
            self._handle_media(m.stream_id, t, m.timestamp, m.payload, events)
        elif t == MessageType.AGGREGATE:
            self._handle_aggregate(m, events)
        elif t in (MessageType.COMMAND_AMF3, MessageType.DATA_AMF3,
                   MessageType.SHARED_OBJECT_AMF3):
            raise ProtocolError(f"AMF3 message (type {t}) is not supported")
        else:
            events.append(MessageIgnored(f"message type {t}"))

    @staticmethod
    def _u32(m: Message, what: str) -> int:
        if len(m.payload) < 4:
            raise ProtocolError(f"{what} message of {len(m.payload)} bytes")
        return int(struct.unpack(">I", m.payload[:4])[0])

    def _handle_user_control(self, m: Message) -> None:
        if len(m.payload) < 2:
            raise ProtocolError("user control message without an event type")
        (event,) = struct.unpack(">H", m.payload[:2])
        if event == UserControlEvent.PING_REQUEST:
            self._send_user_control(UserControlEvent.PING_RESPONSE, m.payload[2:6])

    def _reply(self, tid: float, body: bytes) -> None:
        if tid:
            self._send(_CSID_COMMAND, MessageType.COMMAND_AMF0, 0, body)

    def _handle_command(self, m: Message, cmd: Command, events: list[Event]) -> None:
        name = cmd.name
        if name == CommandName.CONNECT:
            self._transition(Trigger.CONNECT)
            params = cmd.command_object if isinstance(cmd.command_object, dict) else {}
            app = params.get("app")
            tc_url = params.get("tcUrl")
            raw_fourccs = params.get("fourCcList")
            fourccs = tuple(f for f in raw_fourccs if isinstance(f, str)) \
                if isinstance(raw_fourccs, list) else ()
            self._offered_fourccs = isinstance(raw_fourccs, list)
            raw_caps = params.get("capsEx")
            self._offered_caps_ex = raw_caps is not None
            self.caps_ex = CapsEx(int(raw_caps) & 0xFFFFFFFF) \
                if isinstance(raw_caps, float | int) and not isinstance(raw_caps, bool) \
                and raw_caps == raw_caps \
                and 0 <= raw_caps < 2**32 else CapsEx(0)
            self._connect_tid = cmd.transaction_id
            events.append(ConnectRequested(
                app=app.strip("/") if isinstance(app, str) else "",
                tc_url=tc_url if isinstance(tc_url, str) else None,
                params=dict(params), fourcc_list=fourccs, caps_ex=self.caps_ex))
            return
        if self.state in (State.AWAIT_HANDSHAKE, State.AWAIT_CONNECT):
            raise ProtocolError(f"command {name!r} before connect")
        if name == CommandName.CREATE_STREAM:
            if len(self._streams) >= MAX_MESSAGE_STREAMS:
                raise LimitExceeded(f"more than {MAX_MESSAGE_STREAMS} message streams")
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(sid)
            self._reply(cmd.transaction_id, commands.result(cmd.transaction_id, None,
                                                            float(sid)))
            events.append(StreamCreated(sid))
        elif name in (CommandName.RELEASE_STREAM, CommandName.FC_PUBLISH):
            if name == CommandName.FC_PUBLISH and (key := cmd.arg_str(0)):
                self._fc_published.add(key)
            self._reply(cmd.transaction_id, commands.plain_result(cmd.transaction_id))
        elif name == CommandName.PUBLISH:
            self._handle_publish(m, cmd, events)
        elif name == CommandName.FC_UNPUBLISH:
            self._reply(cmd.transaction_id, commands.plain_result(cmd.transaction_id))
            if self.state is State.PUBLISHING:
                self._unpublish(events)
        elif name == CommandName.CLOSE_STREAM:
            if self.state is State.PUBLISHING and m.stream_id == self._publish_stream:
                self._unpublish(events)
        elif name == CommandName.DELETE_STREAM:
            number = cmd.arg_number(0)
            sid = int(number) if number is not None and 0 <= number < 2**32 else m.stream_id
            if self.state is State.PUBLISHING and sid == self._publish_stream:
                self._unpublish(events)
            if sid in self._streams:
                self._streams.discard(sid)
                events.append(StreamDeleted(sid))
        elif name in (CommandName.RESULT, CommandName.ERROR):
            pass  # answers to nothing we asked; harmless
        else:
            if cmd.transaction_id:
                self._reply(cmd.transaction_id, commands.error(
                    cmd.transaction_id, "NetConnection.Call.Failed",
                    f"Method not found ({name})."))
            events.append(MessageIgnored(f"unknown command {name!r}"))

    def _handle_publish(self, m: Message, cmd: Command, events: list[Event]) -> None:
        key = cmd.arg_str(0)
        if m.stream_id not in self._streams:
            raise ProtocolError(f"publish on stream {m.stream_id}, which was not created")
        if not key:
            self._send(_CSID_STREAM, MessageType.COMMAND_AMF0, m.stream_id,
                       commands.on_status(StatusCode.PUBLISH_BAD_NAME, "No stream key.",
                                          level="error"))
            events.append(MessageIgnored("publish without a stream name"))
            return
        self._transition(Trigger.PUBLISH)
        self._publish_stream = m.stream_id
        self._publish_key = key
        events.append(PublishRequested(stream_key=key,
                                       publish_type=cmd.arg_str(1) or "live",
                                       stream_id=m.stream_id))

    def _unpublish(self, events: list[Event]) -> None:
        self._transition(Trigger.UNPUBLISH)
        self._send(_CSID_STREAM, MessageType.COMMAND_AMF0, self._publish_stream,
                   commands.on_status(StatusCode.UNPUBLISH_SUCCESS,
                                      f"{self._publish_key} is now unpublished."))
        events.append(UnpublishRequested(self._publish_stream))

    def _handle_data(self, m: Message, events: list[Event]) -> None:
        handler, values = commands.parse_data(m.payload)
        if handler == "@setDataFrame" and values and isinstance(values[0], str):
            handler, values = values[0], values[1:]
        if handler != "onMetaData":
            events.append(MessageIgnored(f"data message {handler!r}"))
            return
        if self.publishing_stream_id != m.stream_id:
            return
        metadata = commands.metadata_dict(values)
        if metadata is not None:
            events.append(MetadataReceived(m.stream_id, metadata))

    def _handle_media(self, stream_id: int, type_id: int, timestamp: int, body: bytes,
                      events: list[Event]) -> None:
        if self.publishing_stream_id != stream_id:
            return  # not (yet) publishing there: drop, as other servers do
        if type_id == MessageType.VIDEO:
            tag = parse_video(timestamp, body)
        else:
            tag = parse_audio(timestamp, body)
        if isinstance(tag, Multitrack):
            # Track 0 is the broadcast (OBS and FFmpeg send it as plain packets, and so
            # may a ManyTracks message); the others are the encoder's own renditions,
            # handed on with their track id (transcoder.tracks decides what to make of
            # them).
            for track in tag.tracks:
                if track.track_id == 0:
                    self._emit_tag(stream_id, track.tag, events)
                elif isinstance(track.tag, MediaPacket):
                    events.append(MediaReceived(stream_id,
                                                replace(track.tag, track=track.track_id)))
                elif isinstance(track.tag, Ignored):
                    events.append(MessageIgnored(
                        f"E-RTMP {tag.kind.value} track {track.track_id}: {track.tag.reason}"))
                # A sequence end on another track ends nothing: the broadcast is track 0.
            return
        self._emit_tag(stream_id, tag, events)

    @staticmethod
    def _emit_tag(stream_id: int, tag: TrackTag, events: list[Event]) -> None:
        if isinstance(tag, MediaPacket):
            events.append(MediaReceived(stream_id, tag))
        elif isinstance(tag, SequenceEnd):
            events.append(SequenceEnded(stream_id, tag.kind, tag.codec))
        elif isinstance(tag, Ignored):
            events.append(MessageIgnored(tag.reason))

    def _handle_aggregate(self, m: Message, events: list[Event]) -> None:
        """Aggregate message (RTMP 1.0 7.1.6): FLV-style sub-messages whose timestamps
        are offsets from the first one's."""
        data = m.payload
        pos = 0
        first_ts: int | None = None
        while pos + 11 <= len(data):
            type_id = data[pos]
            size = int.from_bytes(data[pos + 1:pos + 4], "big")
            ts = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
            body = data[pos + 11:pos + 11 + size]
            if len(body) < size:
                raise ProtocolError("truncated aggregate message")
            if first_ts is None:
                first_ts = ts
            timestamp = (m.timestamp + ts - first_ts) & 0xFFFFFFFF
            if type_id in (MessageType.AUDIO, MessageType.VIDEO):
                self._handle_media(m.stream_id, type_id, timestamp, body, events)
            elif type_id == MessageType.DATA_AMF0:
                self._handle_data(Message(m.chunk_stream_id, type_id, m.stream_id,
                                          timestamp, body), events)
            pos += 11 + size + 4  # + back pointer
