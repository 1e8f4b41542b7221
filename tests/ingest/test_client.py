"""ingest.protocol.client: castway's publisher session against castway's own server
session (a ConnectionPair), and the FLV tags it sends read back as the same packets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from castway.media import Codec, MediaKind, MediaPacket
from ingest.protocol.client import (
    ClientState,
    Connected,
    PublisherSession,
    PublishStarted,
    Refused,
)
from ingest.protocol.commands import CapsEx
from ingest.protocol.errors import FlvError
from ingest.protocol.flv import Multitrack, MultitrackType, parse_audio, parse_video, tag_body
from ingest.protocol.session import (
    ConnectRequested,
    Event,
    MediaReceived,
    PublishRequested,
    ServerSession,
)


class Pair:
    """Pipes each side's bytes into the other; the server accepts or refuses publish."""

    def __init__(self, client: PublisherSession, *, accept_publish: bool = True) -> None:
        self.client, self.server = client, ServerSession()
        self.accept_publish = accept_publish
        self.client_events: list[object] = []
        self.server_events: list[Event] = []

    def run(self) -> None:
        for _ in range(20):
            moved = False
            if data := self.client.data_to_send():
                moved = True
                for event in self.server.receive_data(data):
                    self.server_events.append(event)
                    if isinstance(event, ConnectRequested):
                        self.server.accept_connect()
                        self.server_events += self.server.receive_data(b"")
                    elif isinstance(event, PublishRequested):
                        if self.accept_publish:
                            self.server.accept_publish()
                        else:
                            self.server.reject_publish("NetStream.Publish.BadName",
                                                       "unknown key")
                        self.server_events += self.server.receive_data(b"")
            if data := self.server.data_to_send():
                moved = True
                self.client_events += self.client.receive_data(data)
            if not moved:
                return


def publisher(**kwargs: object) -> PublisherSession:
    return PublisherSession(tc_url="rtmp://127.0.0.1/live", app="live", stream_name="key",
                            **kwargs)  # type: ignore[arg-type]


def test_a_publisher_connects_creates_a_stream_and_publishes_its_key() -> None:
    pair = Pair(publisher())
    pair.run()
    assert pair.client.state is ClientState.PUBLISHING
    assert isinstance(pair.client_events[-1], PublishStarted)
    requested = [e for e in pair.server_events if isinstance(e, PublishRequested)]
    assert [r.stream_key for r in requested] == ["key"]
    # H.264/AAC only: a legacy connect, no E-RTMP fields a legacy server might trip on.
    connect = next(e for e in pair.server_events if isinstance(e, ConnectRequested))
    assert "fourCcList" not in connect.params


def test_a_refused_publish_is_an_event_and_closes_the_session() -> None:
    pair = Pair(publisher(), accept_publish=False)
    pair.run()
    assert pair.client.state is ClientState.CLOSED
    refused = [e for e in pair.client_events if isinstance(e, Refused)]
    assert refused and refused[0].code == "NetStream.Publish.BadName"


def test_an_enhanced_rtmp_publisher_learns_what_the_server_takes() -> None:
    pair = Pair(publisher(fourcc_list=("hvc1",)))
    pair.run()
    connected = next(e for e in pair.client_events if isinstance(e, Connected))
    assert connected.accepts("hvc1") and connected.accepts("av01")
    assert not Connected(()).accepts("hvc1")  # a legacy server announces nothing


PACKETS = [
    MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0, b"\x01\x64\x00\x1f"),
    MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 40, 120, b"\x00\x00\x00\x01\x65"),
    MediaPacket(MediaKind.VIDEO, Codec.H264, False, False, 80, 80, b"\x00\x00\x00\x01\x41"),
    MediaPacket(MediaKind.VIDEO, Codec.HEVC, True, True, 0, 0, b"\x01\x02"),
    MediaPacket(MediaKind.VIDEO, Codec.HEVC, True, False, 40, 80, b"\x00\x00\x00\x01\x26"),
    MediaPacket(MediaKind.VIDEO, Codec.AV1, False, False, 40, 40, b"\x12\x00"),
    MediaPacket(MediaKind.AUDIO, Codec.AAC, True, True, 0, 0, b"\x11\x90"),
    MediaPacket(MediaKind.AUDIO, Codec.AAC, True, False, 23, 23, b"\x21\x10"),
    MediaPacket(MediaKind.AUDIO, Codec.OPUS, True, False, 20, 20, b"\xfc"),
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: f"{p.codec}-{p.is_config}")
def test_a_tag_body_parses_back_to_the_same_packet(packet: MediaPacket) -> None:
    parse = parse_video if packet.kind is MediaKind.VIDEO else parse_audio
    assert parse(packet.dts_ms, tag_body(packet)) == packet


OTHER_TRACKS = [replace(p, track=t) for p, t in zip(PACKETS, (1, 2, 3, 1, 255, 4, 1, 1, 2),
                                                   strict=True)]


@pytest.mark.parametrize("packet", OTHER_TRACKS, ids=lambda p: f"{p.codec}-{p.is_config}")
def test_another_tracks_packet_goes_as_a_one_track_multitrack_message(
        packet: MediaPacket) -> None:
    parse = parse_video if packet.kind is MediaKind.VIDEO else parse_audio
    parsed = parse(packet.dts_ms, tag_body(packet))
    assert isinstance(parsed, Multitrack)
    assert parsed.multitrack_type is MultitrackType.ONE_TRACK
    [track] = parsed.tracks
    assert isinstance(track.tag, MediaPacket)
    assert replace(track.tag, track=track.track_id) == packet


def test_a_track_id_past_a_byte_is_refused() -> None:
    with pytest.raises(FlvError):
        tag_body(replace(PACKETS[1], track=256))


def test_a_relay_announces_that_it_honours_reconnect_requests() -> None:
    pair = Pair(publisher(caps_ex=int(CapsEx.RECONNECT)))
    pair.run()
    connect = next(e for e in pair.server_events if isinstance(e, ConnectRequested))
    assert connect.params["capsEx"] == float(CapsEx.RECONNECT)
    assert pair.server.supports_reconnect


def test_media_sent_arrives_at_the_server_as_the_same_packets() -> None:
    pair = Pair(publisher(fourcc_list=("hvc1",)))
    pair.run()
    for packet in PACKETS[3:5]:
        pair.client.send_media(packet.kind, packet.dts_ms, tag_body(packet))
    received = [e.packet for e in pair.server.receive_data(pair.client.data_to_send())
                if isinstance(e, MediaReceived)]
    assert received == PACKETS[3:5]
