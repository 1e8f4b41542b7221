"""The contract between the RTMP server and whoever decides about publishers.

:class:`ingest.server.IngestServer` calls a :class:`PublishHandler` once per publish
request; an accepted publish gets a :class:`PublishSession` that receives metadata,
packets (awaited: this is the server's backpressure) and exactly one ``on_close``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from castway.media import MediaPacket
from ingest.protocol.commands import StatusCode


@dataclass(frozen=True, slots=True)
class PublishRequest:
    app: str
    stream_key: str  # query string stripped
    query: dict[str, str] = field(default_factory=dict)
    peer: str = ""  # "host:port" of the publisher
    connection_id: str = ""
    tc_url: str | None = None
    #: The channel the publisher named (WHIP's URL): its key must be that channel's.
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a publish was refused: the onStatus code and description the publisher sees."""

    code: str
    description: str

    @classmethod
    def bad_name(cls, description: str = "Unknown stream key.") -> Rejection:
        return cls(StatusCode.PUBLISH_BAD_NAME.value, description)

    @classmethod
    def already_live(cls) -> Rejection:
        return cls(StatusCode.PUBLISH_BAD_NAME.value,
                   "Channel already live: another publisher is using this stream key.")

    @classmethod
    def unavailable(cls, reason: str) -> Rejection:
        """The node cannot take broadcasts now (draining, full)."""
        return cls(StatusCode.PUBLISH_DENIED.value, f"Node unavailable: {reason}.")


class PublishSession(Protocol):
    """One accepted publication. Calls never overlap; ``on_close`` comes exactly once."""

    async def on_metadata(self, metadata: dict[str, object]) -> None: ...
    async def on_packet(self, packet: MediaPacket) -> None: ...
    async def on_close(self, reason: str) -> None: ...


class PublishHandler(Protocol):
    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection: ...


@runtime_checkable
class TransportStatsSink(Protocol):
    """A publish session that takes the transport's own measures (SRT: RTT, loss,
    retransmits, bandwidth), keyed as they go into the broadcast's stats. Called on the
    event loop, between the session's other calls."""

    def on_transport_stats(self, stats: Mapping[str, float]) -> None: ...
