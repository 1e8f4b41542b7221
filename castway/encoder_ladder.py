"""What ladder castway asks an encoder to send itself (OBS "Multitrack Video", the
configuration request OBS makes of Twitch and Amazon IVS, ``GetClientConfiguration``):
sans-IO, the client's description in, the plan out. The HTTP side is origin.encoder_config.

The policy, in order:

- **Only a hardware encoder sends a ladder.** NVIDIA, AMD, Intel or Apple's encoder is
  named for every track, the one OBS composes on; a machine without one would spend its
  own CPU on several x264 encodes while it runs a game, so it is told to stream one track
  and castway encodes the ladder (a warning OBS shows, then it streams as usual).
- **The rungs are the platform's** (castway.rungs): the output size the streamer chose,
  then every rung of the table below it, at the rung's frame-rate cap; bit rates from the
  table (x1.5 above 30 fps). A rung castway would make anyway reads the same either way.
- **Limits, the lowest rungs go first**: at most the streamer's ``maximum_video_tracks``
  and castway's own track limit; at most the streamer's upload budget
  (``maximum_aggregate_bitrate``), where the rungs that do not fit are left to castway
  (transcoder.tracks fills them from the best track). A budget below the top track alone
  lowers that track's bit rate to the budget.
- **Keyframes every segment target** (2 s by default), so every keyframe starts a segment
  and every track is passed through (OBS aligns its encoders' keyframes itself).
- **Within the node's free capacity**: where the track limit leaves rungs to castway and
  encoding them would take more than the cores the node has free (``free_cores``, with
  ``fill_cost`` pricing them, castway.cost), the encoder is asked for tracks spread over
  the whole ladder instead of its top: the ladder viewers get is whole from top to
  bottom even if castway encodes none of the rest (it still fills what fits at publish,
  transcoder.capacity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from castway.rungs import (
    PLATFORM_RUNGS,
    PlatformRung,
    nearest_rung,
    rate_divisor,
    rung_bitrate_kbps,
)

# PCI vendor ids OBS reports for each GPU.
NVIDIA, AMD, INTEL = 0x10DE, 0x1002, 0x8086
# OBS's encoder ids for H.264 on each (obs_enum_encoder_types); OBS 31 renamed NVENC's.
NVENC_31, NVENC_30 = "obs_nvenc_h264_tex", "jim_nvenc"
ENCODER_BY_VENDOR = {AMD: "h264_texture_amf", INTEL: "obs_qsv11_v2"}
APPLE_ENCODER = "com.apple.videotoolbox.videoencoder.ave.avc"
AUDIO_ENCODER = "ffmpeg_aac"
AUDIO_BITRATE_KBPS = 160
# Video tracks besides track 0 one broadcast may bring as renditions (a DoS limit: each
# is a packager, a playlist and storage; transcoder.tracks ignores the ones past it, and
# says so). The encoder is never asked for more.
MAX_LADDER_TRACKS = 8
# Below this for the top track (after audio), a ladder is not worth asking for.
MIN_TOP_BITRATE_KBPS = 500


@dataclass(frozen=True, slots=True)
class ClientAsk:
    """What the encoder says of itself (OBS's PostData, the parts that decide)."""

    width: int  # the output size the streamer chose
    height: int
    fps: Fraction
    gpu_vendors: tuple[int, ...] = ()
    composition_gpu: int | None = None  # index into gpu_vendors
    macos: bool = False
    client_major: int | None = None  # OBS's major version
    maximum_video_tracks: int | None = None
    maximum_aggregate_bitrate_kbps: int | None = None


@dataclass(frozen=True, slots=True)
class TrackPlan:
    width: int
    height: int
    fps: Fraction
    bitrate_kbps: int


@dataclass(frozen=True, slots=True)
class EncoderPlan:
    """The answer: the encoder and its tracks (track 0 first), or none and why."""

    encoder: str | None
    tracks: tuple[TrackPlan, ...]
    keyint_s: int
    audio_bitrate_kbps: int = AUDIO_BITRATE_KBPS
    warning: str | None = None  # why there is no ladder (the streamer is told)
    left_to_castway: tuple[str, ...] = ()  # rungs not asked for: castway encodes them
    # Why the tracks are spread over the ladder rather than its top (the node could not
    # encode the rest): for the log, not the streamer.
    capacity_note: str = ""


def hardware_encoder(ask: ClientAsk) -> str | None:
    """OBS's H.264 encoder id on the GPU it composes on, or None without one."""
    if ask.macos:
        return APPLE_ENCODER
    vendors = ask.gpu_vendors
    if ask.composition_gpu is not None and 0 <= ask.composition_gpu < len(vendors):
        vendors = (vendors[ask.composition_gpu], *vendors)
    for vendor in vendors:
        if vendor == NVIDIA:
            return NVENC_30 if (ask.client_major or 31) < 31 else NVENC_31
        if vendor in ENCODER_BY_VENDOR:
            return ENCODER_BY_VENDOR[vendor]
    return None


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def spread(count: int, keep: int) -> list[int]:
    """``keep`` indices of ``count`` rungs (top first), evenly over the ladder, the top
    and the bottom included."""
    if keep >= count:
        return list(range(count))
    if keep <= 1:
        return [0]
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})


def plan_encoder_ladder(ask: ClientAsk, *, keyint_s: int, max_tracks: int,
                        rungs: tuple[PlatformRung, ...] = PLATFORM_RUNGS,
                        free_cores: float | None = None,
                        fill_cost: Callable[[Sequence[TrackPlan]], float] | None = None,
                        ) -> EncoderPlan:
    """The ladder an encoder that describes itself as ``ask`` is asked to send.
    ``free_cores`` (None: not known) and ``fill_cost`` (the cores castway would spend
    encoding the given rungs from the top track): see the module's policy."""
    if ask.width <= 0 or ask.height <= 0 or ask.fps <= 0:
        return EncoderPlan(None, (), keyint_s, warning="The output size or frame rate is "
                           "missing from the request.")
    encoder = hardware_encoder(ask)
    if encoder is None:
        return EncoderPlan(None, (), keyint_s, warning=(
            "No hardware video encoder (NVIDIA, AMD, Intel or Apple) was found, and "
            "several x264 encodes would take the CPU your stream needs. Stream without "
            "Multitrack Video: castway makes the other qualities itself."))
    fps = float(ask.fps)
    top_rung = nearest_rung(ask.height, rungs)
    tracks = [TrackPlan(_even(ask.width), _even(ask.height), ask.fps,
                        rung_bitrate_kbps(top_rung, fps))]
    aspect = ask.width / ask.height
    for rung in rungs:
        if rung.height >= ask.height:
            continue
        rate = ask.fps / rate_divisor(fps, rung.max_fps)
        tracks.append(TrackPlan(_even(rung.height * aspect), rung.height, rate,
                                rung_bitrate_kbps(rung, float(rate))))
    limit = max(1, min(max_tracks, ask.maximum_video_tracks or max_tracks))
    kept = list(range(min(limit, len(tracks))))
    note = ""
    if free_cores is not None and fill_cost is not None and len(tracks) > limit:
        cost = fill_cost(tracks[limit:])
        if cost > free_cores:
            kept = spread(len(tracks), limit)
            note = (f"encoding {', '.join(f'{t.height}p' for t in tracks[limit:])} would "
                    f"take {cost:.2f} cores, the node has {free_cores:.2f} free: the "
                    "encoder's tracks are spread over the ladder")
    left = [f"{t.height}p" for i, t in enumerate(tracks) if i not in kept]
    tracks = [tracks[i] for i in kept]
    budget = ask.maximum_aggregate_bitrate_kbps
    if budget:
        budget -= AUDIO_BITRATE_KBPS
        while len(tracks) > 1 and sum(t.bitrate_kbps for t in tracks) > budget:
            left.insert(0, f"{tracks.pop().height}p")
        if budget < MIN_TOP_BITRATE_KBPS:
            return EncoderPlan(None, (), keyint_s, warning=(
                f"An upload budget of {ask.maximum_aggregate_bitrate_kbps} kbit/s leaves "
                "no room for a ladder. Stream without Multitrack Video."))
        if tracks[0].bitrate_kbps > budget:
            top = tracks[0]
            tracks[0] = TrackPlan(top.width, top.height, top.fps, budget)
    return EncoderPlan(encoder, tuple(tracks), keyint_s, left_to_castway=tuple(left),
                       capacity_note=note)
