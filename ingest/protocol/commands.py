"""NetConnection / NetStream commands (RTMP 1.0 section 7.2) and their replies, AMF0.

A command message is: name (string), transaction id (number), command object (object
or null), then optional arguments. The names we act on are :class:`CommandName`;
replies are built by the ``*_reply`` helpers as message bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag, StrEnum

from ingest.protocol import amf0
from ingest.protocol.amf0 import UNDEFINED, AmfValue, EcmaArray
from ingest.protocol.errors import AmfError, ProtocolError


class CommandName(StrEnum):
    """Commands a publisher sends (RTMP 1.0 7.2.1, 7.2.2; FMS's FC* extensions)."""

    CONNECT = "connect"
    CREATE_STREAM = "createStream"
    RELEASE_STREAM = "releaseStream"
    FC_PUBLISH = "FCPublish"
    FC_UNPUBLISH = "FCUnpublish"
    PUBLISH = "publish"
    DELETE_STREAM = "deleteStream"
    CLOSE_STREAM = "closeStream"
    GET_STREAM_LENGTH = "getStreamLength"
    RESULT = "_result"
    ERROR = "_error"
    CALL = "call"


class StatusCode(StrEnum):
    """onStatus info codes we send."""

    CONNECT_SUCCESS = "NetConnection.Connect.Success"
    CONNECT_REJECTED = "NetConnection.Connect.Rejected"
    PUBLISH_START = "NetStream.Publish.Start"
    PUBLISH_BAD_NAME = "NetStream.Publish.BadName"
    PUBLISH_DENIED = "NetStream.Publish.Denied"
    UNPUBLISH_SUCCESS = "NetStream.Unpublish.Success"
    #: E-RTMP v2 "Reconnect Request": the server asks the client to reconnect.
    CONNECT_RECONNECT_REQUEST = "NetConnection.Connect.ReconnectRequest"


class CapsEx(IntFlag):
    """E-RTMP v2 ``capsEx`` bits of the connect command object (and its _result)."""

    RECONNECT = 0x01
    MULTITRACK = 0x02
    MODEX = 0x04
    TIMESTAMP_NANO_OFFSET = 0x08


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    transaction_id: float
    command_object: AmfValue
    args: tuple[AmfValue, ...]

    def arg_str(self, index: int) -> str | None:
        """Argument ``index`` if it is a string."""
        value = self.args[index] if index < len(self.args) else None
        return value if isinstance(value, str) else None

    def arg_number(self, index: int) -> float | None:
        if index < len(self.args):
            value = self.args[index]
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return None


def parse_command(payload: bytes) -> Command:
    """Decode an AMF0 command message body."""
    values = amf0.decode_all(payload)
    if len(values) < 2 or not isinstance(values[0], str):
        raise ProtocolError("command message without a name and transaction id")
    tid = values[1]
    if isinstance(tid, bool) or not isinstance(tid, int | float):
        raise ProtocolError(f"command {values[0]!r}: transaction id is not a number")
    obj = values[2] if len(values) > 2 else None
    return Command(values[0], float(tid), obj, tuple(values[3:]))


def parse_data(payload: bytes) -> tuple[str, tuple[AmfValue, ...]]:
    """Decode an AMF0 data message body: handler name and values."""
    values = amf0.decode_all(payload)
    if not values or not isinstance(values[0], str):
        raise AmfError("data message without a handler name")
    return values[0], tuple(values[1:])


def result(transaction_id: float, command_object: AmfValue,
           *args: AmfValue) -> bytes:
    return amf0.encode(CommandName.RESULT.value, transaction_id, command_object, *args)


def error(transaction_id: float, code: str, description: str) -> bytes:
    return amf0.encode(CommandName.ERROR.value, transaction_id, None,
                       {"level": "error", "code": code, "description": description})


def connect_result(transaction_id: float, *, fourcc_list: list[AmfValue] | None = None,
                   caps_ex: float | None = None) -> bytes:
    """_result of connect (RTMP 1.0 7.2.1.1), with E-RTMP capabilities when asked."""
    info: dict[str, AmfValue] = {
        "level": "status", "code": StatusCode.CONNECT_SUCCESS.value,
        "description": "Connection succeeded.", "objectEncoding": 0.0}
    props: dict[str, AmfValue] = {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0,
                                  "mode": 1.0}
    if fourcc_list is not None:
        props["fourCcList"] = fourcc_list
    if caps_ex is not None:
        props["capsEx"] = caps_ex
    return result(transaction_id, props, info)


def connect_rejected(transaction_id: float, description: str) -> bytes:
    return error(transaction_id, StatusCode.CONNECT_REJECTED.value, description)


def on_status(code: str, description: str, *, level: str = "status",
              details: str | None = None) -> bytes:
    info: dict[str, AmfValue] = {"level": level, "code": code, "description": description}
    if details is not None:
        info["details"] = details
    return amf0.encode("onStatus", 0.0, None, info)


def reconnect_request(tc_url: str | None, description: str) -> bytes:
    """E-RTMP v2 onStatus NetConnection.Connect.ReconnectRequest (stream 0, transaction
    id 0, null command object); ``tc_url``: where to reconnect (absent: the same URL)."""
    info: dict[str, AmfValue] = {"level": "status",
                                 "code": StatusCode.CONNECT_RECONNECT_REQUEST.value,
                                 "description": description}
    if tc_url is not None:
        info["tcUrl"] = tc_url
    return amf0.encode("onStatus", 0.0, None, info)


def on_fc_publish(stream_name: str) -> bytes:
    return amf0.encode("onFCPublish", 0.0, None,
                       {"code": StatusCode.PUBLISH_START.value, "description": stream_name})


def plain_result(transaction_id: float) -> bytes:
    """_result with no information (releaseStream, FCPublish, FCUnpublish...)."""
    return result(transaction_id, None, UNDEFINED)


def metadata_dict(values: tuple[AmfValue, ...]) -> dict[str, AmfValue] | None:
    """The onMetaData object of a data message's values, as a plain dict."""
    for value in values:
        if isinstance(value, dict):
            return dict(value) if isinstance(value, EcmaArray) else value
    return None
