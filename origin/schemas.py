"""Control API schemas: separate Create / Update / Public models per resource."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from castway.events.archive import MAX_CLIP_S
from castway.model import (
    CHANNEL_NAME_MAX,
    CHANNEL_NAME_PATTERN,
    CHANNEL_NAME_RULE,
    Broadcast,
    BroadcastState,
    Channel,
    Node,
    NodeState,
    Rendition,
    SourceInfo,
    Visibility,
    Vod,
    VodState,
)
from castway.stream_health import describe, split_codes
from origin.access import MAX_GRANT_S, MIN_GRANT_S
from origin.humanize import vod_title

ChannelName = Annotated[str, Field(pattern=CHANNEL_NAME_PATTERN, min_length=1,
                                   max_length=CHANNEL_NAME_MAX,
                                   description=f"URL slug: {CHANNEL_NAME_RULE}")]
Title = Annotated[str, Field(max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelCreate(_Strict):
    name: ChannelName
    title: Title = ""
    vod_visibility: Visibility = Visibility.PUBLIC
    live_visibility: Visibility = Field(
        Visibility.PUBLIC, description="private: live playlists and media (and the VODs) "
        "need a signature: POST /api/v1/channels/{name}/grant.")
    create_key: bool = Field(True, description="Also create a stream key (shown once).")


class ChannelUpdate(_Strict):
    title: Title | None = None
    vod_visibility: Visibility | None = None
    live_visibility: Visibility | None = None


class ChannelPublic(BaseModel):
    name: str
    title: str
    vod_visibility: Visibility
    live_visibility: Visibility
    created_at: datetime
    live_broadcast_id: str | None = None
    watch_url: str
    hls_url: str

    @classmethod
    def of(cls, channel: Channel, *, base_url: str,
           live_broadcast_id: str | None = None) -> ChannelPublic:
        return cls(name=channel.name, title=channel.title,
                   vod_visibility=channel.vod_visibility,
                   live_visibility=channel.live_visibility, created_at=channel.created_at,
                   live_broadcast_id=live_broadcast_id,
                   watch_url=f"{base_url}/watch/{channel.name}",
                   hls_url=f"{base_url}/hls/{channel.name}/master.m3u8")


class StreamKeyCreated(BaseModel):
    """The only time a stream key is shown: it is stored as a hash."""

    channel: str
    stream_key: str
    key_id: str = Field(description="The key's public id: what the publish "
                        "authorization callback names it by.")
    rtmp_url: str
    rtmps_url: str | None = Field(None, description="The RTMPS (TLS) URL when the "
                                  "server takes RTMPS: the stream key travels encrypted.")
    revoked: int = 0


class ChannelCreated(BaseModel):
    channel: ChannelPublic
    stream_key: StreamKeyCreated | None = None


class KeysRevoked(BaseModel):
    channel: str
    revoked: int


class RenditionPublic(BaseModel):
    name: str
    width: int | None
    height: int | None
    fps: float | None
    video_bitrate_kbps: float | None
    codecs: str
    bandwidth_bps: int | None
    track: int | None = Field(None, description=(
        "The publisher's track this rendition passes through unchanged: 0 for the "
        "source, 1, 2, ... for renditions an E-RTMP multitrack encoder (OBS Multitrack "
        "Video) sent. null: castway encodes it."))
    note: str = Field("", description=(
        "Why castway encodes a rendition the encoder sent, e.g. its keyframes did not "
        "line up with the source's segment boundaries."))
    alternate_audio: bool = Field(False, description=(
        "An audio rendition of the master (EXT-X-MEDIA), not a variant: a broadcast whose "
        "encoder sends audio tracks besides its own (E-RTMP multitrack audio) has one per "
        "track, its own (track 0) the default, and video-only variants."))
    channels: int | None = Field(None, description="An audio rendition's channel count.")

    @classmethod
    def of(cls, r: Rendition) -> RenditionPublic:
        return cls(name=r.name, width=r.width, height=r.height, fps=r.fps,
                   video_bitrate_kbps=r.video_bitrate_kbps, codecs=r.codecs,
                   bandwidth_bps=r.bandwidth_bps, track=r.track, note=r.note,
                   alternate_audio=r.alternate_audio, channels=r.channels)


class SourcePublic(BaseModel):
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    video_bitrate_kbps: float | None
    encoder: str | None

    @classmethod
    def of(cls, s: SourceInfo) -> SourcePublic:
        return cls(video_codec=s.video_codec, audio_codec=s.audio_codec, width=s.width,
                   height=s.height, fps=s.fps, video_bitrate_kbps=s.video_bitrate_kbps,
                   encoder=s.encoder)


class HealthWarningPublic(BaseModel):
    code: str = Field(description="Stable code, e.g. long_keyframe_interval.")
    message: str = Field(description="What is wrong, for the streamer.")
    advice: str = Field(description="What to change in the encoder (OBS named).")


def _number(stats: dict[str, float | str], key: str) -> float | None:
    value = stats.get(key)
    return float(value) if isinstance(value, int | float) else None


class BroadcastHealth(BaseModel):
    """The live stream as it arrives and as it is transcoded, for the streamer.
    ``status`` is ``warning`` while any warning lasts."""

    status: Literal["good", "warning", "unknown"]
    bitrate_kbps: float | None = Field(description="Received, audio and video, over the "
                                                   "last second.")
    fps: float | None = Field(description="Frame rate from the stream's timestamps.")
    keyframe_interval_s: float | None = Field(
        description="The longest of the last keyframe interval and the one open now; "
                    "2 s is right for castway.")
    bitrate_variation: float | None = Field(
        description="Standard deviation / mean of the recent bitrate samples (CBR: "
                    "below 0.1).")
    audio: bool | None = Field(description="The stream carries audio.")
    warnings: list[HealthWarningPublic]

    @classmethod
    def of(cls, stats: dict[str, float | str]) -> BroadcastHealth:
        codes = dict.fromkeys(split_codes(stats.get("source_warnings"))
                              + split_codes(stats.get("warnings")))
        warnings = [HealthWarningPublic(code=c, message=describe(c).message,
                                        advice=describe(c).advice) for c in codes]
        audio = _number(stats, "audio")
        status: Literal["good", "warning", "unknown"] = (
            "warning" if warnings else "good" if stats else "unknown")
        return cls(status=status, bitrate_kbps=_number(stats, "bitrate_kbps"),
                   fps=_number(stats, "source_fps") or _number(stats, "fps"),
                   keyframe_interval_s=_number(stats, "keyframe_interval_s"),
                   bitrate_variation=_number(stats, "bitrate_variation"),
                   audio=None if audio is None else audio > 0, warnings=warnings)


class BroadcastPublic(BaseModel):
    id: str
    channel: str
    node_id: str
    state: BroadcastState
    started_at: datetime
    ended_at: datetime | None
    source: SourcePublic | None
    renditions: list[RenditionPublic]
    stats: dict[str, float | str] = Field(
        default_factory=dict, description="Raw counters from ingest and the transcoder "
                                          "(names may change; ``health`` is the typed view).")
    health: BroadcastHealth

    @classmethod
    def of(cls, b: Broadcast, stats: dict[str, float | str] | None = None) -> BroadcastPublic:
        return cls(id=b.id, channel=b.channel, node_id=b.node_id, state=b.state,
                   started_at=b.started_at, ended_at=b.ended_at,
                   source=SourcePublic.of(b.source) if b.source else None,
                   renditions=[RenditionPublic.of(r) for r in b.renditions],
                   stats=stats or {}, health=BroadcastHealth.of(stats or {}))


class StopRequested(BaseModel):
    broadcast_id: str
    requested: bool = True


class VodUpdate(_Strict):
    visibility: Visibility


class VodPublic(BaseModel):
    id: str
    broadcast_id: str
    channel: str
    visibility: Visibility
    state: VodState
    duration_s: float
    created_at: datetime
    title: str = Field(description='Readable: "mychan, 4 Dec 13:14 UTC, 1 min 35 s" '
                                   "(channel, start, duration).")
    mp4_progress: float | None
    mp4_url: str | None = Field(None, description="The exported MP4, once ready (a private "
                                "VOD's needs a grant's signature, like its playlists).")
    clip: bool = Field(False, description="A clip: its own playlists over a range of "
                       "broadcast_id's segments.")
    watch_url: str
    hls_url: str

    @classmethod
    def of(cls, v: Vod, *, base_url: str) -> VodPublic:
        return cls(id=v.id, broadcast_id=v.broadcast_id, channel=v.channel, title=vod_title(v),
                   visibility=v.visibility, state=v.state, duration_s=v.duration_s,
                   created_at=v.created_at, mp4_progress=v.mp4_progress,
                   mp4_url=f"{base_url}/vod/{v.id}/export.mp4" if v.mp4_key else None,
                   clip=v.is_clip, watch_url=f"{base_url}/watch/vod/{v.id}",
                   hls_url=f"{base_url}/vod/{v.id}/master.m3u8")


class VodGrantCreate(_Strict):
    ttl_s: int = Field(3600, ge=MIN_GRANT_S, le=MAX_GRANT_S,
                       description="How long the signature is valid, seconds.")


class VodGrantPublic(BaseModel):
    """Signed access to a private VOD (CloudFront-compatible custom policy over
    ``/vod/{id}/*``): open ``watch_url`` in a browser (it sets the cookies), or send
    ``cookies`` (path ``cookie_path``) with every playlist and segment request."""

    vod_id: str
    expires: int
    watch_url: str
    master_url: str
    cookies: dict[str, str]
    cookie_path: str


class ChannelGrantPublic(BaseModel):
    """Signed access to a private channel's live broadcast (CloudFront-compatible custom
    policy over ``/hls/{channel}/*``): open ``watch_url`` in a browser (it sets the
    cookies), or send ``cookies`` (path ``cookie_path``) with every playlist and media
    request. Its VODs need VOD grants."""

    channel: str
    expires: int
    watch_url: str
    master_url: str
    cookies: dict[str, str]
    cookie_path: str


class ClipCreate(_Strict):
    """The last ``last_s`` seconds (of a live broadcast, or of an ended one's VOD), or
    ``start_s`` to ``end_s`` from the broadcast's start. Cut at segment boundaries."""

    last_s: float | None = Field(None, gt=0, le=MAX_CLIP_S)
    start_s: float | None = Field(None, ge=0)
    end_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_range(self) -> ClipCreate:
        if (self.last_s is None) == (self.start_s is None and self.end_s is None):
            raise ValueError("give last_s, or start_s and end_s")
        if self.last_s is None and (self.end_s is None
                                    or self.end_s <= (self.start_s or 0.0)
                                    or self.end_s - (self.start_s or 0.0) > MAX_CLIP_S):
            raise ValueError(f"need start_s < end_s, at most {MAX_CLIP_S:g} s apart")
        return self


class VodDeleted(BaseModel):
    id: str
    objects_deleted: int


class NodePublic(BaseModel):
    id: str
    image_version: str
    address: str
    state: NodeState
    capacity: int
    active_broadcasts: int
    free_slots: int
    heartbeat_at: datetime
    cpu: float
    cost_capacity: float = Field(description="Transcode capacity in cores (calibrated "
                                 "cores x the utilisation target)")
    cost_used: float = Field(description="Cores its broadcasts cost (the larger of each "
                             "one's estimate and measured cost)")
    cost_free: float
    cost_error: float | None = Field(description="Mean relative error of its broadcasts' "
                                     "cost estimates, (measured - estimate) / estimate")

    @classmethod
    def of(cls, n: Node) -> NodePublic:
        return cls(id=n.id, image_version=n.image_version, address=n.address, state=n.state,
                   capacity=n.capacity, active_broadcasts=n.active_broadcasts,
                   free_slots=n.free_slots, heartbeat_at=n.heartbeat_at, cpu=n.cpu,
                   cost_capacity=round(n.cost_capacity, 3), cost_used=round(n.cost_used, 3),
                   cost_free=round(n.cost_free, 3),
                   cost_error=None if n.cost_error is None else round(n.cost_error, 3))


class ErrorBody(BaseModel):
    detail: str
