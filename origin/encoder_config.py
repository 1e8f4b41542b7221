"""POST /api/v1/encoder-configuration: the configuration request OBS's Multitrack Video
makes before it goes live (the ``GetClientConfiguration`` schema of Twitch and Amazon
IVS). OBS sends its GPUs, its output size and frame rate, its limits and the stream key;
castway answers with the encoders to run (one per track, the platform's rungs,
castway.encoder_ladder) and where to publish. The stream key authenticates the request:
an unknown one gets an error status OBS shows the streamer.

OBS reads this URL from its service's ``multitrack_video_configuration_url`` setting or
its ``--config-url`` command-line option (docs/ingest.md, "OBS Multitrack Video").
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from castway.cost import (
    DEFAULT_CALIBRATION,
    Calibration,
    CostError,
    Encode,
    VideoSource,
    estimate,
    load_calibration,
)
from castway.encoder_ladder import (
    AUDIO_ENCODER,
    MAX_LADDER_TRACKS,
    ClientAsk,
    EncoderPlan,
    TrackPlan,
    plan_encoder_ladder,
)
from castway.keys import hash_stream_key
from castway.model import NodeState
from origin.context import Ctx, OriginContext

logger = logging.getLogger(__name__)

# Tracks OBS is asked for at most: castway's limit on encoder-sent tracks besides track 0,
# plus track 0.
MAX_REQUESTED_TRACKS = 1 + MAX_LADDER_TRACKS
SERVICE = "castway"


class _Lenient(BaseModel):
    # OBS adds fields between schema versions: what castway does not read, it ignores.
    model_config = ConfigDict(extra="ignore")


class Framerate(_Lenient):
    numerator: int = Field(ge=0)
    denominator: int = Field(1, ge=1)


class ClientInfo(_Lenient):
    name: str = ""
    version: str = ""
    supported_codecs: list[str] = []


class GpuInfo(_Lenient):
    model: str = ""
    vendor_id: int = 0


class SystemInfo(_Lenient):
    name: str = ""


class Capabilities(_Lenient):
    gpu: list[GpuInfo] | None = None
    system: SystemInfo | None = None


class Canvas(_Lenient):
    """One of OBS's canvases (OBS 32, schema 2025-01-25): the main one first, then an
    extra (vertical) one if the streamer has it."""

    width: int = Field(ge=0, le=16384)  # the output size
    height: int = Field(ge=0, le=16384)
    framerate: Framerate


class Preferences(_Lenient):
    # OBS 30.2-31 send the output size and rate here; OBS 32 sends ``canvases`` instead.
    width: int | None = Field(None, ge=0, le=16384)
    height: int | None = Field(None, ge=0, le=16384)
    framerate: Framerate | None = None
    canvases: list[Canvas] | None = Field(None, max_length=8)
    # The streamer enabled OBS's "VOD track" (a second audio mix, Twitch's VOD audio):
    # OBS then needs its audio configuration too, or refuses to go live.
    vod_track_audio: bool = False
    maximum_video_tracks: int | None = Field(None, ge=1)
    # OBS's "Maximum Streaming Bandwidth", kbit/s (IVS calls it maximum_streaming_bandwidth).
    maximum_aggregate_bitrate: int | None = Field(None, ge=0)
    maximum_streaming_bandwidth: int | None = Field(None, ge=0)
    composition_gpu_index: int | None = None


class ConfigRequest(_Lenient):
    service: str = ""
    schema_version: str = ""
    authentication: str = Field(max_length=512, description="The stream key.")
    client: ClientInfo = ClientInfo()
    capabilities: Capabilities = Capabilities()
    preferences: Preferences


class Meta(BaseModel):
    service: str
    schema_version: str
    config_id: str


class Status(BaseModel):
    result: Literal["success", "warning", "error"]
    html_en_us: str | None = None


class IngestEndpoint(BaseModel):
    protocol: str
    url_template: str


class VideoEncoderConfiguration(BaseModel):
    type: str
    width: int
    height: int
    framerate: Framerate
    canvas_index: int = 0  # OBS 32: the canvas it encodes (0: the main one)
    gpu_scale_type: str = "OBS_SCALE_BICUBIC"
    settings: dict[str, Any]


class AudioEncoderConfiguration(BaseModel):
    codec: str
    track_id: int
    channels: int
    settings: dict[str, Any]


class AudioConfigurations(BaseModel):
    live: list[AudioEncoderConfiguration]
    # The VOD track's encoder, when OBS asked for one (preferences.vod_track_audio).
    vod: list[AudioEncoderConfiguration] | None = None


class ConfigResponse(BaseModel):
    meta: Meta
    status: Status
    ingest_endpoints: list[IngestEndpoint]
    encoder_configurations: list[VideoEncoderConfiguration]
    audio_configurations: AudioConfigurations


router = APIRouter(tags=["encoders"])


def _major(version: str) -> int | None:
    found = re.match(r"\s*(\d+)", version)
    return int(found.group(1)) if found else None


def client_ask(body: ConfigRequest) -> ClientAsk:
    prefs = body.preferences
    gpus = body.capabilities.gpu or []
    system = (body.capabilities.system.name if body.capabilities.system else "").lower()
    width, height, framerate = prefs.width, prefs.height, prefs.framerate
    if (width is None or height is None or framerate is None) and prefs.canvases:
        main = prefs.canvases[0]  # the ladder is the main canvas's
        width, height, framerate = main.width, main.height, main.framerate
    fps = (Fraction(framerate.numerator, framerate.denominator)
           if framerate is not None and framerate.numerator else Fraction(0))
    return ClientAsk(width or 0, height or 0, fps, tuple(g.vendor_id for g in gpus),
                     prefs.composition_gpu_index, system in ("macos", "mac os x", "darwin"),
                     _major(body.client.version), prefs.maximum_video_tracks,
                     prefs.maximum_aggregate_bitrate or prefs.maximum_streaming_bandwidth)


def _response(body: ConfigRequest, plan: EncoderPlan, endpoints: list[IngestEndpoint],
              status: Status) -> ConfigResponse:
    video = [VideoEncoderConfiguration(
        type=plan.encoder or "", width=t.width, height=t.height,
        framerate=Framerate(numerator=t.fps.numerator, denominator=t.fps.denominator),
        settings={"bitrate": t.bitrate_kbps, "rate_control": "CBR",
                  "keyint_sec": plan.keyint_s, "profile": "high"})
        for t in plan.tracks]
    audio = AudioEncoderConfiguration(codec=AUDIO_ENCODER, track_id=0, channels=2,
                                      settings={"bitrate": plan.audio_bitrate_kbps})
    # OBS sends the VOD track as the broadcast's next audio track: castway makes it an
    # audio rendition of its own, audio-t1 (transcoder.audio_tracks).
    vod = ([AudioEncoderConfiguration(codec=AUDIO_ENCODER, track_id=1, channels=2,
                                      settings={"bitrate": plan.audio_bitrate_kbps})]
           if body.preferences.vod_track_audio else None)
    return ConfigResponse(
        meta=Meta(service=SERVICE, schema_version=body.schema_version or "2024-06-04",
                  config_id=str(uuid.uuid4())),
        status=status, ingest_endpoints=endpoints, encoder_configurations=video,
        audio_configurations=AudioConfigurations(live=[audio], vod=vod))


@router.post("/api/v1/encoder-configuration", response_model=ConfigResponse,
             response_model_exclude_none=True,
             summary="OBS Multitrack Video: the ladder to send (GetClientConfiguration)")
async def encoder_configuration(body: ConfigRequest, ctx: Ctx) -> ConfigResponse:
    settings = ctx.settings
    endpoints = [IngestEndpoint(protocol="RTMP",
                                url_template=f"{settings.effective_public_rtmp_url}/"
                                             "{stream_key}")]
    if settings.effective_public_rtmps_url:
        endpoints.insert(0, IngestEndpoint(
            protocol="RTMPS", url_template=f"{settings.effective_public_rtmps_url}/"
                                           "{stream_key}"))
    keyint_s = max(1, round(settings.target_segment_s))
    channel = await asyncio.to_thread(ctx.catalog.channel_for_key_hash,
                                      hash_stream_key(body.authentication))
    if channel is None:
        logger.info("encoder configuration refused: unknown stream key",
                    extra={"client": body.client.name})
        return _response(body, EncoderPlan(None, (), keyint_s), [], Status(
            result="error", html_en_us="castway does not know this stream key. Copy it "
            "again from your channel's page."))
    ask = client_ask(body)
    free = await free_cores(ctx)
    calibration = await asyncio.to_thread(_calibration, ctx) if free is not None else None

    def fill_cost(rungs: Sequence[TrackPlan]) -> float:
        # What castway would spend encoding ``rungs`` from the top track, beyond the
        # packaging it does anyway (castway.cost.estimate).
        assert calibration is not None
        source = VideoSource(ask.width, ask.height, float(ask.fps))
        return estimate(source, [Encode(r.width, r.height, float(r.fps)) for r in rungs],
                        calibration) - estimate(source, [], calibration)
    plan = plan_encoder_ladder(ask, keyint_s=keyint_s, max_tracks=MAX_REQUESTED_TRACKS,
                               free_cores=free, fill_cost=fill_cost)
    logger.info("encoder configuration", extra={
        "channel": channel, "client": f"{body.client.name} {body.client.version}",
        "encoder": plan.encoder, "tracks": [f"{t.width}x{t.height}@{float(t.fps):g}"
                                            for t in plan.tracks],
        "left_to_castway": list(plan.left_to_castway), "warning": plan.warning,
        "free_cores": free, "capacity": plan.capacity_note})
    if plan.warning is not None:
        return _response(body, plan, endpoints,
                         Status(result="warning", html_en_us=plan.warning))
    return _response(body, plan, endpoints, Status(result="success"))


async def free_cores(ctx: OriginContext) -> float | None:
    """The most transcode capacity (cores, castway.cost) any active node has free: where
    a publisher would best land. None when no node reports its capacity (a fleet before
    cost admission, or none up): the ladder is then planned without it."""
    nodes = await ctx.live.list_nodes()
    free = [n.cost_free for n in nodes if n.state is NodeState.ACTIVE and n.cost_capacity > 0]
    return max(free) if free else None


def _calibration(ctx: OriginContext) -> Calibration:
    """The nodes' calibration, as a node of these settings loads it; the built-in default
    if it cannot be read (the endpoint still answers)."""
    try:
        return load_calibration(ctx.settings.calibration_file, ctx.settings.data_dir)[0]
    except CostError as exc:
        logger.warning("encoder configuration: calibration unreadable, default used",
                       extra={"error": str(exc)})
        return DEFAULT_CALIBRATION
