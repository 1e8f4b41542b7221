"""castway's sans-IO RTMP protocol core (RTMP 1.0, AMF0, FLV tags, Enhanced RTMP)."""

from ingest.protocol.commands import CapsEx
from ingest.protocol.errors import (
    AmfError,
    FlvError,
    HandshakeError,
    LimitExceeded,
    LocalProtocolError,
    ProtocolError,
    RtmpError,
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

__all__ = [
    "AmfError", "CapsEx", "ConnectRequested", "Event", "FlvError", "HandshakeCompleted",
    "HandshakeError", "LimitExceeded", "LocalProtocolError", "MediaReceived",
    "MessageIgnored", "MetadataReceived", "ProtocolError", "PublishRequested", "RtmpError",
    "SequenceEnded", "ServerSession", "State", "StreamCreated", "StreamDeleted",
    "UnpublishRequested",
]
