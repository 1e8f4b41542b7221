"""The publisher side of RTMP, sans-IO: what castway's restreaming speaks to YouTube,
Twitch, nginx-rtmp or another castway node.

The exchange is the one ffmpeg and OBS make (RTMP 1.0 sections 5.2, 7.2.1, 7.2.2):
handshake, ``connect``, ``releaseStream`` + ``FCPublish`` (FMS's extensions, which some
services still expect), ``createStream``, ``publish`` on the new stream, then FLV tags as
audio/video messages. ``connect`` carries ``fourCcList`` only when the media needs
Enhanced RTMP (HEVC, AV1, VP9, Opus): a server that answers without those FourCCs cannot
take them, and :class:`Connected` says so before any media is sent.

``receive_data(bytes)`` in, events out, ``data_to_send()`` for what goes on the wire.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from castway.media import MediaKind
from ingest.protocol import amf0
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.buffer import Buffer
from ingest.protocol.chunk import ChunkReader, ChunkWriter, Message, MessageType
from ingest.protocol.commands import CommandName, StatusCode, parse_command
from ingest.protocol.errors import LocalProtocolError, ProtocolError, RtmpError
from ingest.protocol.handshake import ClientHandshake
from ingest.protocol.limits import (
    DEFAULT_OUT_CHUNK_SIZE,
    MAX_PREAUTH_BUFFERED_BYTES,
    MAX_PREAUTH_MESSAGE_SIZE,
)
from ingest.protocol.session import UserControlEvent

# Chunk stream ids of what we send (ffmpeg's choice: control, commands, audio, video).
_CSID_CONTROL = 2
_CSID_COMMAND = 3
_CSID_AUDIO = 4
_CSID_DATA = 5
_CSID_VIDEO = 6

_TID_CONNECT = 1.0
_TID_RELEASE = 2.0
_TID_FC_PUBLISH = 3.0
_TID_CREATE_STREAM = 4.0
_TID_PUBLISH = 5.0

#: What identifies us in ``connect`` (servers log it; some gate on "FMLE").
FLASH_VER = "FMLE/3.0 (compatible; castway)"


class ClientState(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"  # connect sent, its _result awaited
    CREATING_STREAM = "creating_stream"
    PUBLISH_REQUESTED = "publish_requested"
    PUBLISHING = "publishing"
    CLOSED = "closed"


class ClientTrigger(Enum):
    HANDSHAKE_DONE = "handshake_done"
    CONNECTED = "connected"
    STREAM_CREATED = "stream_created"
    PUBLISH_STARTED = "publish_started"
    REFUSED = "refused"
    CLOSE = "close"


#: The one transition table. Anything not in it is a protocol error.
CLIENT_TRANSITIONS: dict[tuple[ClientState, ClientTrigger], ClientState] = {
    (ClientState.HANDSHAKE, ClientTrigger.HANDSHAKE_DONE): ClientState.CONNECTING,
    (ClientState.CONNECTING, ClientTrigger.CONNECTED): ClientState.CREATING_STREAM,
    (ClientState.CREATING_STREAM, ClientTrigger.STREAM_CREATED): ClientState.PUBLISH_REQUESTED,
    (ClientState.PUBLISH_REQUESTED, ClientTrigger.PUBLISH_STARTED): ClientState.PUBLISHING,
    **{(state, ClientTrigger.REFUSED): ClientState.CLOSED for state in ClientState},
    **{(state, ClientTrigger.CLOSE): ClientState.CLOSED for state in ClientState},
}


@dataclass(frozen=True, slots=True)
class Connected:
    """``connect`` succeeded. ``fourcc_list``: the E-RTMP codecs the server announced
    (empty: a legacy server, or we offered none)."""

    fourcc_list: tuple[str, ...]

    def accepts(self, fourcc: str) -> bool:
        return fourcc in self.fourcc_list or "*" in self.fourcc_list


@dataclass(frozen=True, slots=True)
class PublishStarted:
    stream_id: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused ``connect`` or ``publish`` (the session is closed)."""

    code: str
    description: str


@dataclass(frozen=True, slots=True)
class ReconnectRequested:
    """E-RTMP v2: the server asks us to reconnect (to ``tc_url``, or the same URL)."""

    tc_url: str | None


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Any other onStatus (e.g. ``NetStream.Unpublish.Success``)."""

    code: str
    level: str
    description: str


ClientEvent = Connected | PublishStarted | Refused | ReconnectRequested | StatusReceived


def _info(value: AmfValue) -> dict[str, AmfValue]:
    return value if isinstance(value, dict) else {}


def _text(info: dict[str, AmfValue], key: str) -> str:
    value = info.get(key)
    return value if isinstance(value, str) else ""


class PublisherSession:
    """One publishing connection, client side.

    ``tc_url`` is the URL without the stream name (``rtmp://host[:port]/app``),
    ``stream_name`` the key; ``fourcc_list`` the E-RTMP codecs to offer (empty for
    H.264/AAC, which go as legacy FLV tags every server takes); ``caps_ex`` the E-RTMP v2
    capabilities announced in ``connect`` (an edge's relay announces Reconnect: it
    follows a draining node's reconnect request)."""

    def __init__(self, *, tc_url: str, app: str, stream_name: str,
                 fourcc_list: tuple[str, ...] = (), caps_ex: int = 0,
                 chunk_size: int = DEFAULT_OUT_CHUNK_SIZE,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.state = ClientState.HANDSHAKE
        self.tc_url = tc_url
        self.app = app
        self.stream_name = stream_name
        self.fourcc_list = fourcc_list
        self.caps_ex = caps_ex
        self._chunk_size = chunk_size
        # A server says little to a publisher: the pre-authentication limits suffice.
        self._buf = Buffer(MAX_PREAUTH_BUFFERED_BYTES)
        self._reader = ChunkReader()
        self._reader.max_message_size = MAX_PREAUTH_MESSAGE_SIZE
        self._reader.max_partial_bytes = MAX_PREAUTH_BUFFERED_BYTES
        self._writer = ChunkWriter()
        self._handshake = ClientHandshake(random_bytes)
        self._out = bytearray(self._handshake.start())
        self._stream_id = 0
        self._ack_window = 0  # the server's Window Acknowledgement Size, once announced
        self._last_ack = 0
        self.bytes_received = 0
        #: Media and metadata bytes queued for the wire (the bitrate's numerator).
        self.media_bytes_sent = 0

    @property
    def closed(self) -> bool:
        return self.state is ClientState.CLOSED

    def _transition(self, trigger: ClientTrigger) -> None:
        nxt = CLIENT_TRANSITIONS.get((self.state, trigger))
        if nxt is None:
            raise ProtocolError(f"{trigger.value} is not allowed in state {self.state.value}")
        self.state = nxt

    # --- I/O boundary ----------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Process the server's bytes; the events they complete. Raises
        :class:`RtmpError` (and the session is closed) when the server misbehaves."""
        if self.state is ClientState.CLOSED:
            return []
        events: list[ClientEvent] = []
        try:
            self.bytes_received += len(data)
            self._buf.feed(data)
            if self.state is ClientState.HANDSHAKE:
                self._out += self._handshake.step(self._buf)
                if not self._handshake.done:
                    return events
                self._transition(ClientTrigger.HANDSHAKE_DONE)
                self._send_connect()
            while not self.closed:
                message = self._reader.next_message(self._buf)
                if message is None:
                    break
                self._handle(message, events)
            self._maybe_ack()
        except RtmpError:
            self.state = ClientState.CLOSED
            raise
        return events

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- the application's side ------------------------------------------------------
    def send_media(self, kind: MediaKind, timestamp: int, body: bytes) -> None:
        """One FLV tag body as an audio or video message of the published stream."""
        if self.state is not ClientState.PUBLISHING:
            raise LocalProtocolError(f"media in state {self.state.value}")
        if kind is MediaKind.VIDEO:
            self._send(_CSID_VIDEO, MessageType.VIDEO, self._stream_id, body, timestamp)
        else:
            self._send(_CSID_AUDIO, MessageType.AUDIO, self._stream_id, body, timestamp)
        self.media_bytes_sent += len(body)

    def send_metadata(self, metadata: dict[str, AmfValue]) -> None:
        """``@setDataFrame onMetaData`` (what FMLE and OBS send after publish)."""
        if self.state is not ClientState.PUBLISHING:
            raise LocalProtocolError(f"metadata in state {self.state.value}")
        body = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(metadata))
        self._send(_CSID_DATA, MessageType.DATA_AMF0, self._stream_id, body)
        self.media_bytes_sent += len(body)

    def unpublish(self) -> None:
        """End the publication politely (FCUnpublish, deleteStream); then close."""
        if self.state is ClientState.PUBLISHING:
            self._command(CommandName.FC_UNPUBLISH, 0.0, None, self.stream_name)
            self._command(CommandName.DELETE_STREAM, 0.0, None, float(self._stream_id))
        self.state = ClientState.CLOSED

    def close(self) -> None:
        self.state = ClientState.CLOSED

    # --- sending ---------------------------------------------------------------------
    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes,
              timestamp: int = 0) -> None:
        self._out += self._writer.write(csid, type_id, stream_id, timestamp, payload)

    def _command(self, name: str, tid: float, obj: AmfValue, *args: AmfValue,
                 stream_id: int = 0) -> None:
        self._send(_CSID_COMMAND, MessageType.COMMAND_AMF0, stream_id,
                   amf0.encode(name, tid, obj, *args))

    def _send_connect(self) -> None:
        # Our chunk size first: media messages then go in few chunks.
        self._send(_CSID_CONTROL, MessageType.SET_CHUNK_SIZE, 0,
                   struct.pack(">I", self._chunk_size))
        self._writer.chunk_size = self._chunk_size
        params: dict[str, AmfValue] = {"app": self.app, "type": "nonprivate",
                                       "flashVer": FLASH_VER, "tcUrl": self.tc_url}
        if self.fourcc_list:
            params["fourCcList"] = list(self.fourcc_list)
        if self.caps_ex:
            params["capsEx"] = float(self.caps_ex)
        self._command(CommandName.CONNECT, _TID_CONNECT, params)

    def _maybe_ack(self) -> None:
        # RTMP 1.0 5.4.3: acknowledge each window's worth the server sent.
        if self._ack_window and self.bytes_received - self._last_ack >= self._ack_window:
            self._last_ack = self.bytes_received
            self._send(_CSID_CONTROL, MessageType.ACKNOWLEDGEMENT, 0,
                       struct.pack(">I", self.bytes_received & 0xFFFFFFFF))

    # --- receiving -------------------------------------------------------------------
    @staticmethod
    def _u32(m: Message, what: str) -> int:
        if len(m.payload) < 4:
            raise ProtocolError(f"{what} shorter than 4 bytes")
        value: int = struct.unpack(">I", m.payload[:4])[0]
        return value

    def _handle(self, m: Message, events: list[ClientEvent]) -> None:
        t = m.type_id
        if t == MessageType.SET_CHUNK_SIZE:
            self._reader.set_chunk_size(self._u32(m, "Set Chunk Size"))
        elif t == MessageType.ABORT:
            self._reader.abort(self._u32(m, "Abort"))
        elif t == MessageType.WINDOW_ACK_SIZE:
            self._ack_window = self._u32(m, "Window Acknowledgement Size")
        elif t == MessageType.USER_CONTROL:
            if len(m.payload) >= 6 and struct.unpack(">H", m.payload[:2])[0] \
                    == UserControlEvent.PING_REQUEST:
                self._send(_CSID_CONTROL, MessageType.USER_CONTROL, 0,
                           struct.pack(">H", UserControlEvent.PING_RESPONSE)
                           + m.payload[2:6])
        elif t == MessageType.COMMAND_AMF0:
            self._handle_command(m, events)
        # Acknowledgements, Set Peer Bandwidth, data messages: nothing for a publisher.

    def _handle_command(self, m: Message, events: list[ClientEvent]) -> None:
        cmd = parse_command(m.payload)
        if cmd.name == CommandName.RESULT:
            if cmd.transaction_id == _TID_CONNECT and self.state is ClientState.CONNECTING:
                self._transition(ClientTrigger.CONNECTED)
                props = _info(cmd.command_object)
                raw = props.get("fourCcList")
                offered = tuple(f for f in raw if isinstance(f, str)) \
                    if isinstance(raw, list) else ()
                events.append(Connected(offered))
                self._command(CommandName.RELEASE_STREAM, _TID_RELEASE, None,
                              self.stream_name)
                self._command(CommandName.FC_PUBLISH, _TID_FC_PUBLISH, None,
                              self.stream_name)
                self._command(CommandName.CREATE_STREAM, _TID_CREATE_STREAM, None)
            elif (cmd.transaction_id == _TID_CREATE_STREAM
                  and self.state is ClientState.CREATING_STREAM):
                number = cmd.arg_number(0)
                if number is None or not 0 < number < 2**32:
                    raise ProtocolError(f"createStream answered {cmd.args!r}")
                self._transition(ClientTrigger.STREAM_CREATED)
                self._stream_id = int(number)
                self._command(CommandName.PUBLISH, _TID_PUBLISH, None, self.stream_name,
                              "live", stream_id=self._stream_id)
            return  # releaseStream's and FCPublish's answers say nothing we need
        if cmd.name == CommandName.ERROR:
            info = _info(cmd.args[0] if cmd.args else None)
            if cmd.transaction_id in (_TID_CONNECT, _TID_CREATE_STREAM, _TID_PUBLISH):
                self._transition(ClientTrigger.REFUSED)
                events.append(Refused(_text(info, "code") or "_error",
                                      _text(info, "description")))
            return  # a refused releaseStream/FCPublish is harmless (nginx-rtmp has none)
        if cmd.name == "onStatus":
            info = _info(cmd.args[0] if cmd.args else None)
            code, level = _text(info, "code"), _text(info, "level")
            if code == StatusCode.CONNECT_RECONNECT_REQUEST:
                url = info.get("tcUrl")
                events.append(ReconnectRequested(url if isinstance(url, str) else None))
            elif code == StatusCode.PUBLISH_START and self.state is ClientState.PUBLISH_REQUESTED:
                self._transition(ClientTrigger.PUBLISH_STARTED)
                events.append(PublishStarted(self._stream_id))
            elif level == "error" and self.state is not ClientState.PUBLISHING:
                self._transition(ClientTrigger.REFUSED)
                events.append(Refused(code, _text(info, "description")))
            else:
                events.append(StatusReceived(code, level, _text(info, "description")))
        # onBWDone, onFCPublish, _checkbw and the like: nothing to do.


__all__ = ["CLIENT_TRANSITIONS", "ClientEvent", "ClientState", "Connected",
           "PublishStarted", "PublisherSession", "ReconnectRequested", "Refused",
           "StatusReceived"]
