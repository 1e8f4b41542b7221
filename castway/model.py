"""castway's domain model: plain frozen dataclasses, shared by every component.

Durable things (channels, key hashes, broadcast history, VODs) live in the catalog;
ephemeral things (live broadcasts, node heartbeats, the live segment window) live in
the live state. Both store exactly these types.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A random, URL-safe, sortable-enough id (time prefix + randomness)."""
    return f"{int(utcnow().timestamp()):x}{secrets.token_hex(6)}"


class BroadcastState(StrEnum):
    LIVE = "live"
    ENDED = "ended"
    FAILED = "failed"


class NodeState(StrEnum):
    """Ingest node lifecycle: starting -> active -> draining -> stopped; lost on silence."""

    STARTING = "starting"
    ACTIVE = "active"
    DRAINING = "draining"
    STOPPED = "stopped"
    LOST = "lost"


class NodeTier(StrEnum):
    """What a node of the fleet does. ``edge``: ends publishers' RTMP connections and
    relays each broadcast to a transcoding node (``castway edge``; cheap, holds its
    publishers for as long as they stream). ``transcode``: ingests and transcodes
    (``castway ingest``); behind edges, its broadcasts can move to another node."""

    EDGE = "edge"
    TRANSCODE = "transcode"


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class VodState(StrEnum):
    PENDING = "pending"  # playlists written, segments still being verified in storage
    COMPLETE = "complete"  # every segment verified in storage
    DELETED = "deleted"


# A channel name is a URL slug: /hls/{name}/master.m3u8, /watch/{name}, /chat/{name}.
CHANNEL_NAME_MAX = 64
CHANNEL_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
CHANNEL_NAME_RULE = ("lowercase letters, digits, '-' and '_', starting and ending with a "
                     f"letter or digit, at most {CHANNEL_NAME_MAX} characters")
_CHANNEL_NAME = re.compile(CHANNEL_NAME_PATTERN)


class InvalidChannelName(ValueError):
    """A name that cannot be a channel's (the catalog refuses to create it)."""


def valid_channel_name(name: str) -> bool:
    return _CHANNEL_NAME.fullmatch(name) is not None


def check_channel_name(name: str) -> str:
    """``name`` if it can name a channel, else :class:`InvalidChannelName` saying why."""
    if not isinstance(name, str):
        raise TypeError(f"a channel name is a str, not {type(name).__name__}")
    if not name:
        raise InvalidChannelName("the channel name is empty")
    if len(name) > CHANNEL_NAME_MAX:
        raise InvalidChannelName(f"the channel name is longer than {CHANNEL_NAME_MAX} "
                                 "characters")
    if not valid_channel_name(name):
        raise InvalidChannelName(f"invalid channel name {name!r}: a channel name is "
                                 f"{CHANNEL_NAME_RULE}")
    return name


@dataclass(frozen=True, slots=True)
class Channel:
    name: str  # unique; check_channel_name (the catalog enforces it on creation)
    title: str = ""
    vod_visibility: Visibility = Visibility.PUBLIC
    created_at: datetime = field(default_factory=utcnow)
    # PRIVATE: its live playlists and media need a signature (origin.access), and so do
    # its VODs, whatever ``vod_visibility`` says.
    live_visibility: Visibility = Visibility.PUBLIC

    @property
    def private_vods(self) -> bool:
        """Whether the archiver makes this channel's VODs private."""
        return Visibility.PRIVATE in (self.vod_visibility, self.live_visibility)


@dataclass(frozen=True, slots=True)
class StreamKey:
    """A channel's publish credential. Only ``key_hash`` is stored; the key is shown once."""

    channel: str
    key_hash: str  # castway.keys.hash_stream_key(key)
    created_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the publisher sends, from onMetaData and the codec configuration records."""

    video_codec: str | None = None  # "h264", "hevc", "av1", "vp9"
    audio_codec: str | None = None  # "aac", "mp3", "opus"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_bitrate_kbps: float | None = None
    audio_bitrate_kbps: float | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    encoder: str | None = None


SOURCE_RENDITION = "source"  # the passthrough rendition's name


@dataclass(frozen=True, slots=True)
class Rendition:
    """One rung of the ABR ladder as published in the master playlist."""

    name: str  # "source", "720p", ...
    width: int | None
    height: int | None
    fps: float | None
    video_bitrate_kbps: float | None  # None for passthrough: measured instead
    codecs: str = ""  # RFC 6381 CODECS, e.g. 'avc1.64001f,mp4a.40.2'
    bandwidth_bps: int | None = None  # measured peak
    average_bandwidth_bps: int | None = None
    # The publisher's track this rendition passes through (0: the source; 1, 2, ...: an
    # encoder-sent rendition, E-RTMP multitrack); None: castway encodes it.
    track: int | None = None
    # Why castway encodes a rendition the encoder sent (its keyframes did not line up).
    note: str = ""
    # An audio rendition (EXT-X-MEDIA TYPE=AUDIO), not a variant: a broadcast whose
    # encoder sends audio tracks besides its own (E-RTMP multitrack audio) has one per
    # track, its own (track 0) the default, and its variants are video only.
    alternate_audio: bool = False
    channels: int | None = None  # an audio rendition's (EXT-X-MEDIA CHANNELS)


@dataclass(frozen=True, slots=True)
class Broadcast:
    id: str
    channel: str
    node_id: str
    state: BroadcastState = BroadcastState.LIVE
    started_at: datetime = field(default_factory=utcnow)
    ended_at: datetime | None = None
    source: SourceInfo | None = None
    renditions: tuple[Rendition, ...] = ()
    segment_format: str = "fmp4"


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    image_version: str
    address: str  # host:port of its RTMP listener
    state: NodeState = NodeState.STARTING
    capacity: int = 8
    active_broadcasts: int = 0
    heartbeat_at: datetime = field(default_factory=utcnow)
    cpu: float = 0.0  # 0..1 of the node's cores
    # live broadcasts whose publisher announced E-RTMP v2 reconnect support (capsEx bit
    # 0x01): a draining node can move them with NetConnection.Connect.ReconnectRequest
    reconnectable: int = 0
    # Transcode cost (castway.cost), in cores: what the node may use (calibrated cores x
    # the utilisation target), what its broadcasts use (each at the larger of its
    # estimate and its measured cost), and how far the estimates were off.
    cost_capacity: float = 0.0
    cost_used: float = 0.0
    cost_error: float | None = None
    # each live broadcast's cost (cores, as counted in cost_used): the mix the
    # scheduler costs the publishes it expects on (scheduler.policy.publish_demand)
    broadcast_costs: tuple[float, ...] = ()
    tier: NodeTier = NodeTier.TRANSCODE
    # False while the scheduler holds this active node out of rotation (closed): an
    # edge relays there only when no open node has room.
    routable: bool = True

    @property
    def free_slots(self) -> int:
        return max(0, self.capacity - self.active_broadcasts)

    @property
    def cost_free(self) -> float:
        return max(0.0, self.cost_capacity - self.cost_used)


@dataclass(frozen=True, slots=True)
class Part:
    """An LL-HLS partial segment (RFC 8216bis 4.4.4.9, EXT-X-PART)."""

    msn: int  # media sequence number of the parent segment
    index: int  # part index within the segment, from 0
    duration_s: float
    independent: bool  # starts with an IDR
    key: str  # storage / live-window key of its bytes


@dataclass(frozen=True, slots=True)
class Segment:
    """A complete media segment of one rendition (RFC 8216bis 4.4.4.1, EXTINF)."""

    msn: int  # media sequence number, continuous across reconnects and restarts
    duration_s: float
    key: str  # storage / live-window key of its bytes
    start_pts_s: float  # presentation time of its first sample, seconds
    program_date_time: datetime  # EXT-X-PROGRAM-DATE-TIME of its first sample
    discontinuity: bool = False  # EXT-X-DISCONTINUITY before this segment
    discontinuity_seq: int = 0  # EXT-X-DISCONTINUITY-SEQUENCE counter value at it
    init_key: str | None = None  # EXT-X-MAP (fMP4) in force for this segment
    size: int = 0
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True, slots=True)
class Vod:
    """A broadcast's VOD (``id == broadcast_id``), or a clip of one: its own id (its
    playlists, under ``broadcasts/{id}/``) over a sub-range of ``broadcast_id``'s
    segments (never copied)."""

    id: str  # the broadcast id, or a clip's own id
    broadcast_id: str  # whose segments it plays
    channel: str
    visibility: Visibility
    state: VodState
    duration_s: float
    created_at: datetime = field(default_factory=utcnow)
    mp4_key: str | None = None
    mp4_progress: float | None = None  # 0..1 while exporting

    @property
    def is_clip(self) -> bool:
        return self.id != self.broadcast_id
