"""ServerSession: a ConnectionPair pipes a tiny client encoder's bytes into the server
session and decodes what the server sends back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from castway.media import Codec, MediaKind
from ingest.protocol import amf0
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.buffer import Buffer
from ingest.protocol.chunk import ChunkReader, Message, MessageType
from ingest.protocol.commands import CapsEx
from ingest.protocol.errors import LimitExceeded, LocalProtocolError, ProtocolError, RtmpError
from ingest.protocol.handshake import HANDSHAKE_SIZE
from ingest.protocol.limits import (
    MAX_BUFFERED_BYTES,
    MAX_PREAUTH_BUFFERED_BYTES,
    MAX_PREAUTH_MESSAGE_SIZE,
)
from ingest.protocol.session import (
    ConnectRequested,
    Event,
    HandshakeCompleted,
    MediaReceived,
    MessageIgnored,
    MetadataReceived,
    PublishRequested,
    SequenceEnded,
    ServerSession,
    State,
    StreamCreated,
    StreamDeleted,
    UnpublishRequested,
)
from tests.ingest.helpers import ClientEncoder

AVC_CONFIG = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"


def state(pair: ConnectionPair) -> State:
    return pair.server.state  # a call, so mypy does not narrow across it


def code(command: list[AmfValue]) -> AmfValue:
    info = command[3]
    return info.get("code") if isinstance(info, dict) else None


class ConnectionPair:
    def __init__(self, **kwargs: int) -> None:
        self.server = ServerSession(**kwargs)  # type: ignore[arg-type]
        self.client = ClientEncoder()
        self._reader = ChunkReader()
        self._buf = Buffer(MAX_BUFFERED_BYTES)
        self._handshake_left = 1 + 2 * HANDSHAKE_SIZE
        self.received: list[Message] = []

    def send(self, data: bytes) -> list[Event]:
        events = self.server.receive_data(data)
        self.pump()
        return events

    def pump(self) -> None:
        out = self.server.data_to_send()
        if self._handshake_left:
            skip = min(self._handshake_left, len(out))
            self._handshake_left -= skip
            out = out[skip:]
        self._buf.feed(out)
        while (m := self._reader.next_message(self._buf)) is not None:
            if m.type_id == MessageType.SET_CHUNK_SIZE:
                self._reader.set_chunk_size(struct.unpack(">I", m.payload)[0])
            self.received.append(m)

    def take(self) -> list[Message]:
        got, self.received = self.received, []
        return got

    def commands(self) -> list[list[AmfValue]]:
        return [amf0.decode_all(m.payload) for m in self.take()
                if m.type_id == MessageType.COMMAND_AMF0]

    def handshake(self) -> None:
        [done] = self.send(self.client.handshake_c0c1() + self.client.c2())
        assert done == HandshakeCompleted(complex=False)

    def connect(self, extra: dict[str, AmfValue] | None = None) -> ConnectRequested:
        self.handshake()
        [event] = self.send(self.client.connect(extra=extra))
        assert isinstance(event, ConnectRequested)
        self.server.accept_connect()
        self.pump()
        return event

    def publish(self, key: str = "key?token=1") -> int:
        self.connect()
        self.take()
        [created] = self.send(self.client.command("createStream", 4.0))
        assert isinstance(created, StreamCreated)
        [req] = self.send(self.client.command("publish", 5.0, None, key, "live",
                                              stream_id=created.stream_id, csid=8))
        assert req == PublishRequested(key, "live", created.stream_id)
        self.server.accept_publish()
        self.pump()
        self.take()
        return created.stream_id


def test_connect_is_answered_with_window_bandwidth_chunk_size_and_result() -> None:
    pair = ConnectionPair(window_ack_size=5_000_000, out_chunk_size=4096)
    pair.handshake()
    [event] = pair.send(pair.client.connect(extra={"flashVer": "FMLE/3.0"}))
    assert event.app == "live" and event.tc_url == "rtmp://127.0.0.1/live"  # type: ignore[union-attr]
    assert state(pair) is State.CONNECT_PENDING
    pair.server.accept_connect()
    pair.pump()
    got = pair.take()
    assert [m.type_id for m in got] == [5, 6, 1, 4, 20]
    assert struct.unpack(">I", got[0].payload)[0] == 5_000_000
    assert got[1].payload == struct.pack(">IB", 5_000_000, 2)
    assert struct.unpack(">I", got[2].payload)[0] == 4096
    name, tid, props, info = amf0.decode_all(got[4].payload)
    assert (name, tid) == ("_result", 1.0)
    assert isinstance(info, dict) and info["code"] == "NetConnection.Connect.Success"
    assert isinstance(props, dict) and "fourCcList" not in props
    assert state(pair) is State.CONNECTED


def test_enhanced_rtmp_fourcc_list_is_reported_and_answered() -> None:
    pair = ConnectionPair()
    event = pair.connect({"fourCcList": ["hvc1", "av01"], "capsEx": 0.0})
    assert event.fourcc_list == ("hvc1", "av01")
    [(_, _, props, _)] = pair.commands()
    assert isinstance(props, dict) and "hvc1" in props["fourCcList"]  # type: ignore[operator]


def _publish_with_caps(pair: ConnectionPair, caps_ex: AmfValue) -> ConnectRequested:
    pair.handshake()
    [event] = pair.send(pair.client.connect(extra={"capsEx": caps_ex}))
    assert isinstance(event, ConnectRequested)
    pair.server.accept_connect()
    pair.pump()
    [created] = pair.send(pair.client.command("createStream", 4.0))
    assert isinstance(created, StreamCreated)
    pair.send(pair.client.command("publish", 5.0, None, "key", "live",
                                  stream_id=created.stream_id, csid=8))
    pair.server.accept_publish()
    pair.pump()
    return event


def test_caps_ex_reconnect_is_parsed_and_echoed_in_the_connect_result() -> None:
    pair = ConnectionPair()
    event = _publish_with_caps(pair, 0x01 | 0x02)
    assert event.caps_ex == CapsEx.RECONNECT | CapsEx.MULTITRACK
    assert pair.server.supports_reconnect
    [(_, _, props, _), *_] = pair.commands()
    assert isinstance(props, dict) and props["capsEx"] == float(CapsEx.RECONNECT)


@pytest.mark.parametrize("caps_ex", [None, 0.0, 2.0, "1", True, -1.0, float("nan"), 2.0**40])
def test_without_the_reconnect_bit_the_client_is_not_reconnect_capable(
        caps_ex: AmfValue) -> None:
    pair = ConnectionPair()
    _publish_with_caps(pair, caps_ex)
    assert not pair.server.supports_reconnect


def test_reconnect_request_is_an_on_status_on_stream_0() -> None:
    pair = ConnectionPair()
    _publish_with_caps(pair, 1.0)
    pair.take()
    pair.server.request_reconnect("rtmp://ingest.example.com/live", "Node draining.")
    pair.pump()
    [m] = pair.take()
    assert (m.type_id, m.stream_id) == (MessageType.COMMAND_AMF0, 0)
    # "onStatus", transaction id 0, null command object, then the info object
    assert m.payload.startswith(b"\x02\x00\x08onStatus" + b"\x00" + bytes(8) + b"\x05\x03")
    assert amf0.decode_all(m.payload) == ["onStatus", 0.0, None, {
        "level": "status", "code": "NetConnection.Connect.ReconnectRequest",
        "description": "Node draining.", "tcUrl": "rtmp://ingest.example.com/live"}]
    assert pair.server.reconnect_requested
    assert state(pair) is State.PUBLISHING  # the client closes when it has moved


def test_reconnect_request_before_connect_is_a_local_error() -> None:
    pair = ConnectionPair()
    pair.handshake()
    with pytest.raises(LocalProtocolError):
        pair.server.request_reconnect("rtmp://x/live")


def test_full_publish_flow_like_ffmpeg() -> None:
    pair = ConnectionPair()
    pair.connect()
    pair.take()
    c = pair.client
    assert pair.send(c.command("releaseStream", 2.0, None, "key")) == []
    assert pair.send(c.command("FCPublish", 3.0, None, "key")) == []
    [created] = pair.send(c.command("createStream", 4.0))
    assert created == StreamCreated(1)
    replies = pair.commands()
    assert replies[:2] == [["_result", 2.0, None, amf0.UNDEFINED]] * 1 + [
        ["_result", 3.0, None, amf0.UNDEFINED]]
    assert replies[2] == ["_result", 4.0, None, 1.0]

    [req] = pair.send(c.command("publish", 5.0, None, "key", "live", stream_id=1, csid=8))
    assert req == PublishRequested("key", "live", 1)
    pair.server.accept_publish()
    pair.pump()
    msgs = pair.take()
    assert msgs[0].type_id == MessageType.USER_CONTROL and msgs[0].payload == b"\x00\x00" + (
        b"\x00\x00\x00\x01")
    on_fc, on_status = (amf0.decode_all(m.payload) for m in msgs[1:])
    assert on_fc[0] == "onFCPublish"
    assert on_status[0] == "onStatus" and msgs[2].stream_id == 1
    assert code(on_status) == "NetStream.Publish.Start"
    assert state(pair) is State.PUBLISHING

    meta = amf0.EcmaArray(width=640.0, height=360.0, encoder="Lavf")
    [md] = pair.send(c.data(1, "@setDataFrame", "onMetaData", meta))
    assert md == MetadataReceived(1, {"width": 640.0, "height": 360.0, "encoder": "Lavf"})
    [cfg] = pair.send(c.video(1, 0, AVC_CONFIG))
    assert isinstance(cfg, MediaReceived) and cfg.packet.is_config
    [frame] = pair.send(c.video(1, 33, b"\x17\x01\x00\x00\x21" + b"x" * 1000))
    assert isinstance(frame, MediaReceived)
    assert (frame.packet.dts_ms, frame.packet.pts_ms, len(frame.packet.payload)) == (33, 66, 1000)
    [aac] = pair.send(c.audio(1, 21, b"\xaf\x01" + b"a" * 300))
    assert isinstance(aac, MediaReceived) and aac.packet.kind is MediaKind.AUDIO
    [eos] = pair.send(c.video(1, 99, b"\x17\x02\x00\x00\x00"))
    assert eos == SequenceEnded(1, MediaKind.VIDEO, Codec.H264)

    events = pair.send(c.command("FCUnpublish", 6.0, None, "key")
                       + c.command("deleteStream", 7.0, None, 1.0))
    assert events == [UnpublishRequested(1), StreamDeleted(1)]
    assert state(pair) is State.CONNECTED
    statuses = [cmd for cmd in pair.commands() if cmd[0] == "onStatus"]
    assert code(statuses[0]) == "NetStream.Unpublish.Success"


def test_pipelined_input_waits_for_each_decision() -> None:
    c = ClientEncoder()
    data = (c.handshake_c0c1() + c.c2() + c.connect() + c.command("createStream", 2.0)
            + c.command("publish", 3.0, None, "k", stream_id=1) + c.video(1, 0, AVC_CONFIG))
    session = ServerSession()
    events = session.receive_data(data)
    assert isinstance(events[-1], ConnectRequested)
    assert session.state is State.CONNECT_PENDING
    session.accept_connect()
    events = session.receive_data(b"")
    assert [type(e) for e in events] == [StreamCreated, PublishRequested]
    session.accept_publish()
    [media] = session.receive_data(b"")
    assert isinstance(media, MediaReceived) and media.packet.is_config


def test_delete_stream_alone_ends_the_publication() -> None:
    pair = ConnectionPair()
    sid = pair.publish()
    events = pair.send(pair.client.command("deleteStream", 0.0, None, float(sid)))
    assert events == [UnpublishRequested(sid), StreamDeleted(sid)]


def test_rejected_publish_sends_an_error_status() -> None:
    pair = ConnectionPair()
    pair.connect()
    pair.send(pair.client.command("createStream", 2.0))
    pair.take()
    pair.send(pair.client.command("publish", 3.0, None, "nope", stream_id=1))
    pair.server.reject_publish("NetStream.Publish.BadName", "Unknown stream key.")
    pair.pump()
    [status] = pair.commands()
    assert status[3] == {"level": "error", "code": "NetStream.Publish.BadName",
                         "description": "Unknown stream key."}
    assert state(pair) is State.CONNECTED


def test_rejected_connect_closes() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.send(pair.client.connect(app="other"))
    pair.server.reject_connect("Unknown application.")
    pair.pump()
    [error] = pair.commands()
    assert error[0] == "_error" and pair.server.state is State.CLOSED
    assert pair.server.receive_data(b"anything") == []


def test_media_before_publish_is_accepted_is_dropped() -> None:
    pair = ConnectionPair()
    pair.connect()
    pair.send(pair.client.command("createStream", 2.0))
    assert pair.send(pair.client.video(1, 0, AVC_CONFIG)) == []


def test_before_publish_a_large_message_is_refused() -> None:
    pair = ConnectionPair()
    pair.connect()
    header = pair.client.video(0, 0, bytes(MAX_PREAUTH_MESSAGE_SIZE + 1))[:12]
    with pytest.raises(LimitExceeded):
        pair.send(header)
    assert state(pair) is State.CLOSED


def test_before_publish_what_a_connection_holds_is_bounded() -> None:
    """A message under the size cap, sent while the publish decision is pending
    (input is not parsed meanwhile), piles up only to the pre-auth cap."""
    pair = ConnectionPair()
    pair.connect()
    pair.send(pair.client.command("createStream", 4.0))
    pair.send(pair.client.command("publish", 5.0, None, "k", "live", stream_id=1, csid=8))
    assert state(pair) is State.PUBLISH_PENDING
    junk = pair.client.video(1, 0, bytes(60_000))
    with pytest.raises(LimitExceeded):
        for _ in range(2 * MAX_PREAUTH_BUFFERED_BYTES // len(junk) + 1):
            pair.send(junk)
    assert state(pair) is State.CLOSED


def test_after_publish_the_full_limits_apply() -> None:
    pair = ConnectionPair()
    sid = pair.publish()
    body = b"\x27\x01\x00\x00\x00" + bytes(4 * MAX_PREAUTH_BUFFERED_BYTES)
    [event] = pair.send(pair.client.video(sid, 40, body))
    assert isinstance(event, MediaReceived) and len(event.packet.payload) > 1_000_000


def test_acknowledgement_is_sent_each_time_the_window_is_crossed() -> None:
    pair = ConnectionPair()
    pair.publish()
    c = pair.client
    pair.send(c.writer.write(2, MessageType.WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", 5000)))
    assert pair.take() == []
    sent = pair.server.bytes_received
    for ts in range(10):
        pair.send(c.audio(1, ts * 20, b"\xaf\x01" + bytes(998)))
    acks = [m for m in pair.take() if m.type_id == MessageType.ACKNOWLEDGEMENT]
    total = pair.server.bytes_received
    assert total - sent > 2 * 5000 and len(acks) >= 2
    seqs = [struct.unpack(">I", m.payload)[0] for m in acks]
    assert all(b - a >= 5000 for a, b in zip([0, *seqs], seqs, strict=False))
    assert total - seqs[-1] < 5000


def test_ping_request_gets_a_ping_response() -> None:
    pair = ConnectionPair()
    pair.connect()
    pair.take()
    pair.send(pair.client.writer.write(2, MessageType.USER_CONTROL, 0, 0,
                                       b"\x00\x06\x00\x00\x12\x34"))
    [pong] = pair.take()
    assert pong.payload == b"\x00\x07\x00\x00\x12\x34"


def test_unknown_commands_get_error_only_with_a_transaction_id() -> None:
    pair = ConnectionPair()
    pair.connect()
    pair.take()
    [ignored] = pair.send(pair.client.command("getStreamLength", 9.0, None, "x"))
    assert isinstance(ignored, MessageIgnored)
    [reply] = pair.commands()
    assert reply[:2] == ["_error", 9.0]
    pair.send(pair.client.command("someNotification", 0.0))
    assert pair.take() == []
    assert state(pair) is State.CONNECTED


def test_client_chunk_size_change_mid_stream() -> None:
    pair = ConnectionPair()
    sid = pair.publish()
    c = pair.client
    pair.send(c.video(sid, 0, AVC_CONFIG))
    pair.send(c.set_chunk_size(4096))
    [frame] = pair.send(c.video(sid, 40, b"\x27\x01\x00\x00\x00" + bytes(10000)))
    assert isinstance(frame, MediaReceived) and len(frame.packet.payload) == 10000


@pytest.mark.parametrize("name", ["amf3", "publish_before_connect", "uncreated_stream"])
def test_protocol_violations_raise_and_close(name: str) -> None:
    pair = ConnectionPair()
    pair.handshake()
    c = pair.client
    if name == "amf3":
        data = c.writer.write(3, MessageType.COMMAND_AMF3, 0, 0, b"\x00" + amf0.encode("x", 1.0))
    elif name == "publish_before_connect":
        data = c.command("publish", 1.0, None, "key", stream_id=1)
    else:
        pair.send(c.connect())
        pair.server.accept_connect()
        data = c.command("publish", 1.0, None, "key", stream_id=7)
    with pytest.raises(ProtocolError):
        pair.send(data)
    assert state(pair) is State.CLOSED


def test_api_misuse_is_a_local_error() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        pair.server.accept_publish()


def _valid_stream() -> bytes:
    c = ClientEncoder()
    return (c.handshake_c0c1() + c.c2() + c.connect() + c.command("createStream", 2.0)
            + c.command("publish", 3.0, None, "k", stream_id=1) + c.video(1, 0, AVC_CONFIG)
            + c.video(1, 40, b"\x27\x01\x00\x00\x00" + bytes(300)) + c.audio(1, 20, b"\xaf\x01ab"))


def _drive(data: bytes, pieces: list[int]) -> None:
    session = ServerSession()
    pos = 0
    try:
        for size in [*pieces, len(data)]:
            for event in session.receive_data(data[pos:pos + size]):
                if isinstance(event, ConnectRequested):
                    session.accept_connect()
                    session.receive_data(b"")
                elif isinstance(event, PublishRequested):
                    session.accept_publish()
                    session.receive_data(b"")
            pos += size
            assert session.buffered_bytes <= MAX_BUFFERED_BYTES
            session.data_to_send()
            if pos >= len(data):
                break
    except RtmpError:
        assert session.state is State.CLOSED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000), st.lists(st.integers(1, 500), max_size=10))
def test_random_bytes_raise_only_rtmp_errors(data: bytes, pieces: list[int]) -> None:
    _drive(b"\x03" + bytes(HANDSHAKE_SIZE * 2) + data, pieces)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), min_size=1, max_size=8),
       st.lists(st.integers(1, 700), max_size=10))
def test_mutated_valid_streams_raise_only_rtmp_errors(
        mutations: list[tuple[int, int]], pieces: list[int]) -> None:
    data = bytearray(_valid_stream())
    for pos, value in mutations:  # mutate the chunk stream, after the handshake
        data[1 + 2 * HANDSHAKE_SIZE + pos % (len(data) - 1 - 2 * HANDSHAKE_SIZE)] = value
    _drive(bytes(data), pieces)


# Well-formed chunks carrying ill-formed messages: every command, data and control message
# a publisher can send, with any AMF0 values and any payloads, in any order.
_AMF: st.SearchStrategy[AmfValue] = st.recursive(
    st.floats() | st.booleans() | st.text(max_size=12) | st.none()
    | st.just(amf0.UNDEFINED),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.sampled_from(["app", "tcUrl", "fourCcList",
                                                      "capsEx", "width", "x"]),
                                     inner, max_size=4)
                   | st.dictionaries(st.text(max_size=6), inner, max_size=3).map(
                       amf0.EcmaArray)),
    max_leaves=10)
_NAMES = st.sampled_from(["connect", "createStream", "releaseStream", "FCPublish",
                          "FCUnpublish", "publish", "deleteStream", "closeStream",
                          "getStreamLength", "_result", "_error", "call", "onStatus"])
_STREAM = st.integers(0, 3)


def _message(enc: ClientEncoder, data: st.DataObject) -> bytes:
    draw = data.draw
    kind = draw(st.sampled_from(["command", "data", "control", "media", "raw"]))
    if kind == "command":
        return enc.command(draw(_NAMES), draw(st.floats() | st.integers(-5, 5)),
                           draw(_AMF), *draw(st.lists(_AMF, max_size=3)),
                           stream_id=draw(_STREAM))
    if kind == "data":
        head = draw(st.sampled_from(["@setDataFrame", "onMetaData", "other"]))
        return enc.data(draw(_STREAM), head, *draw(st.lists(_AMF, max_size=3)))
    if kind == "control":
        type_id = draw(st.sampled_from([2, 3, 4, 5, 6, 22]))  # not Set Chunk Size
        return enc.writer.write(2, type_id, 0, 0, draw(st.binary(max_size=40)))
    if kind == "media":
        write = enc.video if draw(st.booleans()) else enc.audio
        return write(draw(_STREAM), draw(st.integers(0, 2**32 - 1)),
                     draw(st.binary(max_size=40)))
    return enc.writer.write(draw(st.integers(3, 40)), draw(st.integers(0, 255)),
                            draw(_STREAM), 0, draw(st.binary(max_size=40)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(st.integers(1, 500), max_size=6))
def test_any_sequence_of_messages_raises_only_rtmp_errors(data: st.DataObject,
                                                          pieces: list[int]) -> None:
    enc = ClientEncoder()
    stream = (enc.handshake_c0c1() + enc.c2() + enc.connect()
              + enc.command("createStream", 2.0)
              + enc.command("publish", 3.0, None, "k", stream_id=1))
    count = data.draw(st.integers(1, 12))
    stream += b"".join(_message(enc, data) for _ in range(count))
    _drive(stream, pieces)
