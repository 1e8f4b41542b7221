"""The transcoding pipeline core (:class:`Pipeline`): MediaPackets in, init/part/segment
outputs out. Synchronous; the parallelism is libav's own. Used by the child process
(:mod:`transcoder.worker`) and by file mode (:mod:`transcoder.cli`).

Design: docs/transcoder.md, "Pipeline" and "Parallelism: what was measured".
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
import av.video.frame
from av.video.reformatter import VideoReformatter

from castway.encoder_ladder import MAX_LADDER_TRACKS
from castway.media import Codec, MediaKind, MediaPacket
from castway.rungs import nearest_rung
from castway.settings import X264_LOOKAHEAD_FRAMES
from transcoder.audio_tracks import AudioTrackRendition, audio_track_name
from transcoder.codecs import CodecConfigError, mp4a_codec, parse_asc, video_codec_string
from transcoder.fmp4 import AudioTrack, VideoTrack
from transcoder.ladder import SOURCE, LadderSpec, Rung, resolve_ladder
from transcoder.nal import annexb_to_avcc, avcc_record_from_annexb
from transcoder.overload import Action, Degradation, OverloadPolicy
from transcoder.packager import ContainerWriter, Output, Packager
from transcoder.segmenter import BoundaryClock, SegmentPolicy
from transcoder.tracks import (
    ALIGN_TOLERANCE_MS,
    PASSTHROUGH_CODECS,
    AlignmentCheck,
    TrackInfo,
    hybrid_rungs,
    track_names,
)

logger = logging.getLogger(__name__)

MS = Fraction(1, 1000)
_DECODERS = {Codec.H264: "h264", Codec.HEVC: "hevc", Codec.AV1: "libdav1d"}
EARLY_AUDIO_LIMIT = 512
# Video DTS moving more than this between two packets is a timestamp break.
MAX_GAP_MS = 5_000
MAX_BACKWARD_MS = 1_000
# Audio this long (media time) with not one video packet, not even a sequence header,
# makes the broadcast audio-only. Encoders that send video send its sequence header
# before or with their first audio (ffmpeg, OBS), so 3 s never mistakes a slow video
# start for a radio stream, and is well inside EARLY_AUDIO_LIMIT frames of 48 kHz AAC.
AUDIO_ONLY_AFTER_MS = 3_000
AUDIO_RENDITION = "audio"


class PipelineError(Exception):
    """The source cannot be transcoded (unsupported codec, broken configuration)."""


@dataclass(frozen=True, slots=True)
class RenditionInfo:
    """What the master playlist needs to know about one rendition."""

    name: str
    codecs: str
    width: int | None  # None: an audio-only rendition
    height: int | None
    fps: float | None
    video_bitrate_kbps: float | None
    track: int | None = None  # the publisher's track it passes through (castway.model)
    note: str = ""  # why castway encodes a track the encoder sent
    alternate_audio: bool = False  # an audio rendition, not a variant (castway.model)
    channels: int | None = None  # an audio rendition's


Ladder = tuple[RenditionInfo, ...]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    ladder: LadderSpec
    policy: SegmentPolicy
    x264_preset: str = "veryfast"
    x264_lookahead_frames: int = X264_LOOKAHEAD_FRAMES
    segment_format: str = "fmp4"  # or "mpegts"
    realtime: bool = True  # live: degrade when behind (transcoder.overload); file mode: never
    fps_hint: float | None = None
    scale_threads: int = 1
    cascade: bool = True  # smaller rungs scale from the largest rung's frames
    # The rungs of the ladder the broadcast already published (a handover from another
    # node, or a restarted child): exactly these, whatever size the source now has,
    # like after a size change here (the variant set of a live master never changes).
    # None: no ladder published yet, the source's size decides.
    keep_rungs: tuple[str, ...] | None = None
    # A successor redoing a crashed child's work from the source keyframe at this PTS
    # (transcoder.replay): audio stamped before it that arrives after it is not the
    # transcoded rungs' (their segment before had closed later, encoder delay later, and
    # took it); the passthrough, which cuts as the keyframe arrives, has it in this one.
    replay_from_pts_ms: int | None = None


@dataclass(slots=True)
class PipelineStats:
    video_packets: int = 0
    # Source frames a rung at a halved rate skipped (transcoder.overload); a stopped
    # rung's frames are not counted, it shows in ``degraded``.
    dropped_frames: int = 0
    media_ms: int = 0  # source video time processed (its cost is measured against it)
    lag_s: float = 0.0
    # Video that nothing can decode: no sequence header (configuration record) yet.
    video_without_config: int = 0
    # Segments split without a source keyframe (a GOP longer than the target allows).
    keyframe_drought_splits: int = 0
    # What overload took, rung by rung, in the order it was taken (transcoder.overload).
    degraded: tuple[Degradation, ...] = ()


def av_packet(packet: MediaPacket) -> av.Packet[Any]:
    """A MediaPacket as libav's decoders take it (millisecond timestamps)."""
    pkt = av.Packet(packet.payload)
    pkt.pts, pkt.dts, pkt.time_base = packet.pts_ms, packet.dts_ms, MS
    return pkt


def make_writer(segment_format: str) -> ContainerWriter:
    if segment_format == "mpegts":
        from transcoder.mpegts import TsWriter

        writer: ContainerWriter = TsWriter()
        return writer
    return ContainerWriter()


COMMON_FPS = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0)


def estimate_fps(dts_ms: list[int]) -> float:
    """Frame rate from the first decode timestamps, snapped to a common rate within the
    millisecond rounding error (30 fps steps 33, 33, 34); whole rates win ties."""
    if len(dts_ms) < 2 or dts_ms[-1] <= dts_ms[0]:
        return 30.0
    span = dts_ms[-1] - dts_ms[0]
    fps = 1000.0 * (len(dts_ms) - 1) / span
    tolerance = fps * (1.5 / span + 0.002)
    near = [c for c in COMMON_FPS if abs(c - fps) <= tolerance]
    if not near:
        return round(fps, 3)
    whole = [c for c in near if c == int(c)]
    return min(whole or near, key=lambda c: abs(c - fps))


def x264_params(lookahead_frames: int) -> str:
    """libx264's parameters for a rung, beyond its preset.

    No encoder-chosen keyframes (the source's keyframes cut the segments of every rung).
    A short rate-control lookahead and no lookahead-thread buffer: a rung's part is out
    only once x264 gives back its last frame, and the presets' lookahead (veryfast: 10
    frames, plus a sync buffer of threads + B-frames) held every rung 17 frames, 0.57 s at
    30 fps, behind the source passthrough. A player that starts on a low rung and
    switches up keeps that gap as extra latency (hls.js: 1.1 s over its target). With 5
    frames the delay is 8 frames at the same Y-PSNR to 0.03 dB (docs/transcoder.md).
    """
    return f"scenecut=0:open-gop=0:rc-lookahead={lookahead_frames}:sync-lookahead=0"


def _open_encoder(name: str, rung: Rung, config: PipelineConfig) -> Any:
    ctx: Any = av.CodecContext.create(name, "w")
    ctx.width = rung.width
    ctx.height = rung.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = MS
    ctx.framerate = Fraction(rung.fps).limit_denominator(1001)
    ctx.bit_rate = rung.video_bitrate_kbps * 1000
    ctx.gop_size = 100_000  # IDRs only where forced: at the source's boundaries
    ctx.flags |= av.codec.context.Flags.global_header
    # PyAV defaults to SLICE, which makes libx264 use sliced threads; the CLI's default
    # (frame|slice) gives x264 its faster frame threads + lookahead thread.
    ctx.thread_type = "AUTO"
    options = {"maxrate": f"{int(rung.video_bitrate_kbps * 1.5)}k",
               "bufsize": f"{rung.video_bitrate_kbps * 3}k", "forced-idr": "1"}
    if name == "libx264":
        options |= {"preset": config.x264_preset,
                    "x264-params": x264_params(config.x264_lookahead_frames)}
    else:  # NVENC's names for the same: no encoder-chosen keyframes
        options |= {"no-scenecut": "1"}
    ctx.options = options
    ctx.open()  # now: a missing device fails here, and the avcC is known up front
    return ctx


class _Encoded:
    """One encoded rendition: scaler + libx264 context + packager."""

    def __init__(self, rung: Rung, config: PipelineConfig, packager: Packager) -> None:
        self.rung = rung
        self.packager = packager
        self.config = config
        ctx: Any = None
        if config.ladder.encoder != "libx264":
            try:
                ctx = _open_encoder(config.ladder.encoder, rung, config)
            except (av.error.FFmpegError, ValueError) as exc:
                # Hardware encoders are optional: without the device, x264 does the work.
                logger.warning("encoder unavailable, using libx264",
                               extra={"encoder": config.ladder.encoder, "error": str(exc)})
        if ctx is None:
            ctx = _open_encoder("libx264", rung, config)
        self.ctx = ctx
        self.min_interval_ms = 1000.0 / rung.fps if rung.fps > 0 else 0.0
        self._next_due = -1.0e18
        self._next_due_full_rate = -1.0e18
        self._last_pts: int | None = None
        # libx264 (global header) gives its parameter sets when it opens.
        self.config_record: bytes | None = (avcc_record_from_annexb(bytes(ctx.extradata))
                                            if ctx.extradata else None)
        # One scaler per rendition: VideoFrame.reformat() caches a single SwsContext on
        # the frame, and alternating target sizes rebuilt it on every call (3x slower).
        self.scaler = VideoReformatter()

    def scale(self, frame: av.VideoFrame, threads: int) -> av.VideoFrame:
        scaled: av.VideoFrame = self.scaler.reformat(
            frame, self.rung.width, self.rung.height, "yuv420p", interpolation="BICUBIC",
            threads=threads)
        return scaled

    def wants(self, pts: int, boundary: bool, divisor: int = 1) -> bool | None:
        """Frame-rate cap: keep boundary frames, else at most ``fps / divisor`` frames a
        second. None: a frame the rung would take at its full rate but not at this one."""
        if self._last_pts is not None and pts <= self._last_pts:
            return False  # x264 refuses non-increasing PTS (a broken source's repeats)
        full_rate = pts >= self._next_due_full_rate
        if full_rate:
            # 0.9: millisecond timestamps of an equal-rate source jitter by one.
            self._next_due_full_rate = pts + self.min_interval_ms * 0.9
        if boundary or pts >= self._next_due:
            self._last_pts = pts
            self._next_due = pts + self.min_interval_ms * divisor * 0.9
            self._next_due_full_rate = pts + self.min_interval_ms * 0.9
            return True
        return None if full_rate else False

    def encode(self, frame: av.VideoFrame | None) -> list[Any]:
        packets: list[Any] = list(self.ctx.encode(frame))
        if self.config_record is None and self.ctx.extradata:
            self.config_record = avcc_record_from_annexb(bytes(self.ctx.extradata))
        return packets


# Packets of a track kept before the ladder is set up (or while the source lags behind
# it): more than any encoder's interleaving; past it the oldest go.
MAX_HELD_TRACK_PACKETS = 600


class _Track:
    """One encoder-sent video track (E-RTMP multitrack, transcoder.tracks): its packets
    wait until the source has gone past them (every boundary up to them is known), then
    go to its rendition as they came -- or, once its keyframes missed a boundary, it is
    castway's own rung, encoded from the source with a decoder of its own."""

    def __init__(self, track: int) -> None:
        self.track = track
        self.codec: Codec | None = None
        self.config: bytes | None = None
        self.info: TrackInfo | None = None
        self.held: deque[MediaPacket] = deque(maxlen=MAX_HELD_TRACK_PACKETS)
        self.dts_seen: list[int] = []  # the first few, for its frame rate
        self.dts_span: tuple[int, int] | None = None  # first and last, for its bit rate
        self.bytes = 0
        self.name: str | None = None  # once it is a rendition
        self.packager: Packager | None = None
        self.align = AlignmentCheck()
        self.encoded: _Encoded | None = None  # castway encodes it (misaligned keyframes)
        self.decoder: Any = None
        self.note = ""

    def probe(self, packet: MediaPacket) -> None:
        """Size, rate and bit rate from the track's first keyframe and what came so far."""
        assert self.codec is not None
        try:
            ctx: Any = av.CodecContext.create(_DECODERS[self.codec], "r")
            ctx.extradata = self.config
            frames = list(ctx.decode(av_packet(packet))) + list(ctx.decode(None))
        except (av.error.FFmpegError, ValueError) as exc:
            logger.warning("a track's first keyframe does not decode",
                           extra={"track": self.track, "error": str(exc)})
            return
        if frames:
            self.info = TrackInfo(self.track, self.codec, frames[0].width, frames[0].height,
                                  30.0, None)

    def described(self) -> TrackInfo | None:
        """The track as the ladder is set up: its rate and bit rate from what came."""
        if self.info is None:
            return None
        span = self.dts_span[1] - self.dts_span[0] if self.dts_span else 0
        # Under a second it is mostly the first keyframe: castway's own figure for the
        # height stands in until the segments are measured.
        kbps = self.bytes * 8 / span if span >= 1000 else None
        fps = estimate_fps(self.dts_seen) if len(self.dts_seen) > 2 else None
        return replace(self.info, fps=fps or self.info.fps, bitrate_kbps=kbps)


class Pipeline:
    def __init__(self, config: PipelineConfig, emit: Callable[[Output], None],
                 on_ladder: Callable[[Ladder], None] | None = None, *,
                 on_discontinuity: Callable[[], None] | None = None,
                 on_boundary: Callable[[int], None] | None = None,
                 on_rung_stopped: Callable[[Degradation], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        # Called once a rung has stopped under overload, after its last output: its
        # playlist ends there and the master no longer lists it (transcoder.overload).
        self.on_rung_stopped = on_rung_stopped or (lambda _step: None)
        # Called with the PTS of every segment boundary, as the source packet that makes
        # it comes in (before any output of the new segment): the supervisor's record of
        # where each segment began, for a successor to redo it (transcoder.replay).
        self.on_boundary = on_boundary or (lambda _pts: None)
        # Called after a break has been flushed (publisher reconnect, or new codec
        # parameters mid-stream): the next segments need EXT-X-DISCONTINUITY.
        self.on_discontinuity = on_discontinuity or (lambda: None)
        self._clock = clock
        self.emit = emit
        # Called with the whole ladder at once, once every rendition's CODECS is known
        # (and again, the same names, after a size change): the master playlist is
        # never rendered from part of the ladder.
        self.on_ladder = on_ladder or (lambda _ladder: None)
        self._ladder_due = False
        self.stats = PipelineStats()
        self.clock = BoundaryClock(config.policy)
        self._parts = config.segment_format == "fmp4"
        self._video_codec: Codec | None = None
        self._video_config: bytes | None = None
        self._audio_asc: bytes | None = None
        self._decoder: Any = None
        self._source: Packager | None = None
        self._encoded: list[_Encoded] | None = None
        self._dims: tuple[int, int] | None = None
        self._dts_seen: list[int] = []
        self._wall0: float | None = None
        self._media0: int | None = None
        # Made with the first ladder, kept across breaks: a rung stopped stays stopped.
        self._overload: OverloadPolicy | None = None
        self._audio_transcoder: Any = None
        self._last_video_dts: int | None = None
        self._video_seen = False
        # The rungs of the first ladder this broadcast published (or of the one handed
        # over): every later ladder has exactly these (None: not resolved yet).
        self._rung_names: frozenset[str] | None = (None if config.keep_rungs is None
                                                   else frozenset(config.keep_rungs))
        self._first_audio_pts: int | None = None
        # The one rendition of an audio-only broadcast (no video within
        # AUDIO_ONLY_AFTER_MS of audio); it stays audio-only to its end.
        self._audio_only: Packager | None = None
        self._video_ignored = 0
        # Audio that arrives before the renditions exist (ahead of the first video packet,
        # while the decoder fills up), replayed to each rendition when it is created.
        self._early_audio: list[tuple[int, bytes]] | None = []
        self._rung_audio_from = config.replay_from_pts_ms
        # Encoder-sent video tracks (transcoder.tracks), by track id.
        self._tracks: dict[int, _Track] = {}
        # AAC tracks as audio renditions (transcoder.audio_tracks), by track id: the
        # encoder-sent ones, and track 0 once the ladder has audio renditions.
        self._audio_tracks: dict[int, AudioTrackRendition] = {}
        # Whether this ladder has audio renditions (track 0's among them), the variants
        # video only: decided where the ladder is set up, kept across breaks.
        self._demuxed = False
        self._tracks_told: set[str] = set()
        self._source_pts_max: int | None = None
        # The source's packets since its last boundary, and recent audio: what a track
        # that castway takes over needs to be encoded from that boundary on.
        self._gop: list[MediaPacket] = []
        self._recent_audio: deque[tuple[int, bytes]] = deque(maxlen=EARLY_AUDIO_LIMIT)

    # --- input ----------------------------------------------------------------------
    def push(self, packet: MediaPacket) -> None:
        if packet.track != 0:
            self._push_track(packet)
        elif packet.kind == MediaKind.VIDEO:
            self._push_video(packet)
        else:
            self._push_audio(packet)

    def set_ladder(self, ladder: LadderSpec) -> None:
        """The ladder the node chose for this broadcast (transcoder.capacity); it takes
        effect where the renditions are set up, so it is given before the first decoded
        frame (a successor child has it in its config already)."""
        if self._encoded is None:
            self.config = replace(self.config, ladder=ladder)

    def discontinuity(self) -> None:
        """Timestamps restart (publisher reconnected): close everything open, start over
        at the next keyframe with fresh codec state."""
        self._drain_all()
        if self._overload is not None and self._overload.pending_stops:
            # A break is a boundary: a stop still waiting for one is made here, its
            # segment closed with everything else's.
            for name in self._overload.stops_at_boundary(self._clock()):
                self.on_rung_stopped(self._overload.degraded[name])
        self.clock.discontinuity()
        self._decoder = None
        self._encoded = None
        self._source = None
        self._dims = None
        self._dts_seen = []
        self._wall0 = None
        self._early_audio = []
        self._last_video_dts = None
        self._first_audio_pts = None
        self._rung_audio_from = None
        for track in self._tracks.values():
            track.packager = track.encoded = track.decoder = None
            track.name = None
            track.align = AlignmentCheck()
            track.held.clear()
        for audio in self._audio_tracks.values():
            audio.stop()
        self._source_pts_max = None
        self._gop = []
        self.on_discontinuity()

    def finish(self) -> None:
        self._drain_all()

    # --- video ----------------------------------------------------------------------
    def _push_video(self, packet: MediaPacket) -> None:
        self._video_seen = True
        if self._audio_only is not None:
            # Players hold the audio-only master; a video variant appearing later would
            # reach none of them, so the broadcast stays what it started as.
            if self._video_ignored == 0:
                logger.warning("video after an audio-only start is ignored")
            self._video_ignored += 1
            return
        if packet.is_config:
            if packet.codec not in _DECODERS:
                raise PipelineError(f"unsupported video codec {packet.codec}")
            if self._video_config is not None and self._video_config != packet.payload:
                self.discontinuity()  # new parameters mid-stream: fresh init segments
            self._video_codec = packet.codec
            self._video_config = packet.payload
            return
        if self._video_config is None or self._video_codec is None:
            # No configuration yet: nothing can decode this. Counted, so the supervisor
            # can say so in the broadcast's health rather than run on into nothing.
            self.stats.video_without_config += 1
            return
        last = self._last_video_dts
        if last is not None and not (last - MAX_BACKWARD_MS <= packet.dts_ms
                                     <= last + MAX_GAP_MS):
            # The publisher's clock jumped without a reconnect: a break like one.
            logger.warning("video timestamps jumped: discontinuity",
                           extra={"from_ms": last, "to_ms": packet.dts_ms})
            self.discontinuity()
        elif last is not None and packet.dts_ms > last:
            self.stats.media_ms += packet.dts_ms - last
        self._last_video_dts = packet.dts_ms
        self.stats.video_packets += 1
        self._track_lag(packet.dts_ms)
        if len(self._dts_seen) < 8:
            self._dts_seen.append(packet.dts_ms)
        boundary = self._clock_says(packet.pts_ms, packet.is_keyframe)
        self.stats.keyframe_drought_splits = self.clock.drought_splits
        source = self._ensure_source()
        if source is not None:
            for out in source.on_video(packet.dts_ms, packet.pts_ms, packet.payload,
                                       packet.is_keyframe, boundary):
                self._emit(out)
        if self._tracks or self._audio_tracks:
            if boundary:
                self._gop = []
            self._gop.append(packet)
            if self._source_pts_max is None or packet.pts_ms > self._source_pts_max:
                self._source_pts_max = packet.pts_ms
            self._release_tracks()
            for track in self._tracks.values():
                if track.encoded is not None:
                    self._track_decode(track, packet)
        if self._encoded == [] and self._dims is not None:
            self._close_decoder()  # passthrough only, dimensions known: no more decoding
            return
        self._decode(packet)

    def _clock_says(self, pts_ms: int, keyframe: bool) -> bool:
        boundary = self.clock.on_source_video(pts_ms, keyframe)
        if boundary:
            self.on_boundary(pts_ms)
        return boundary

    def _ensure_source(self) -> Packager | None:
        if not self.config.ladder.source:
            return None
        if self._source is None:
            self._source = Packager(SOURCE, self.config.policy,
                                    make_writer(self.config.segment_format), parts=self._parts)
            # Audio that came ahead of the first video packet belongs to it too.
            for pts, data in self._early_audio or []:
                self._source.on_audio(pts, data)
        return self._source

    def _decoder_ctx(self) -> Any:
        if self._decoder is None:
            self._decoder = self._new_source_decoder()
        return self._decoder

    def _new_source_decoder(self) -> Any:
        """A decoder of the source (track 0) as it is configured now."""
        assert self._video_codec is not None  # checked by the caller
        try:
            ctx: Any = av.CodecContext.create(_DECODERS[self._video_codec], "r")
        except Exception as exc:  # libav raises its own hierarchy
            raise PipelineError(f"no decoder for {self._video_codec}: {exc}") from exc
        ctx.extradata = self._video_config
        ctx.thread_type = "AUTO"
        return ctx

    def _close_decoder(self) -> None:
        """Drain and drop the decoder. A frame-threaded libav decoder freed with frames
        still in flight can hang in its destructor, so it is always drained first."""
        if self._decoder is not None:
            self._decode(None)
            self._decoder = None

    def _decode(self, packet: MediaPacket | None) -> None:
        ctx = self._decoder_ctx()
        pkt = None if packet is None else av_packet(packet)
        try:
            frames = ctx.decode(pkt)
        except av.error.FFmpegError as exc:
            logger.warning("video decode error", extra={"error": str(exc)})
            return
        for frame in frames:
            self._on_frame(frame)

    def _source_fps(self) -> float:
        if self.config.fps_hint:
            return self.config.fps_hint
        return estimate_fps(self._dts_seen)

    def _on_frame(self, frame: av.VideoFrame) -> None:
        if self._dims is None:
            self._dims = (frame.width, frame.height)
            self._setup_outputs(frame.width, frame.height)
        if not self._encoded or frame.pts is None:
            return
        pts = int(frame.pts)
        boundary = self.clock.is_boundary(pts)
        if boundary and self._overload is not None and self._overload.pending_stops:
            for name in self._overload.stops_at_boundary(self._clock()):
                self._stop_rung(name, pts)
        # Cascade: the largest rung scales from the source, the smaller ones from its
        # output (a third of the source's pixels at 1080p -> 720p), which cut the scaling
        # CPU by about half with no visible difference (docs/transcoder.md).
        base: av.VideoFrame | None = None
        skipped = False
        for enc in self._encoded:
            divisor = self._overload.fps_divisor(enc.rung.name) if self._overload else 1
            wanted = enc.wants(pts, boundary, divisor)
            if not wanted:
                skipped = skipped or wanted is None
                continue
            scaled = enc.scale(base if base is not None and self.config.cascade else frame,
                               self.config.scale_threads)
            if base is None:
                base = scaled
            self._encode_frame(enc, scaled, pts, boundary)
        if skipped:
            self.stats.dropped_frames += 1

    def _encode_frame(self, enc: _Encoded, scaled: av.VideoFrame, pts: int,
                      boundary: bool) -> None:
        """A frame scaled for ``enc``, an IDR at a segment boundary."""
        scaled.pts = pts
        scaled.time_base = MS
        scaled.pict_type = (av.video.frame.PictureType.I if boundary
                            else av.video.frame.PictureType.NONE)
        self._encode(enc, scaled)

    def _stop_rung(self, name: str, boundary_pts: int) -> None:
        """Overload: the rung's last segment ends just before the segment that starts at
        ``boundary_pts``; its encoder is drained into it first."""
        enc = next((e for e in self._encoded or [] if e.rung.name == name), None)
        assert self._overload is not None
        step = self._overload.degraded[name]
        if enc is None:
            return
        self._encode(enc, None)
        for out in enc.packager.end_at(boundary_pts):
            self._emit(out)
        self._encoded = [e for e in self._encoded or [] if e is not enc]
        self.on_rung_stopped(step)

    def _encode(self, enc: _Encoded, frame: av.VideoFrame | None) -> None:
        for pkt in enc.encode(frame):
            if pkt.pts is None or pkt.dts is None:
                continue
            if not enc.packager.ready:
                self._set_encoded_tracks(enc)
            pts = int(pkt.pts)
            keyframe = bool(pkt.is_keyframe)
            data = annexb_to_avcc(bytes(pkt), drop_parameter_sets=True)
            for out in enc.packager.on_video(int(pkt.dts), pts, data, keyframe,
                                             keyframe and self.clock.is_boundary(pts)):
                self._emit(out)

    def _set_encoded_tracks(self, enc: _Encoded) -> None:
        record = enc.config_record
        if record is None:
            raise PipelineError(f"encoder of {enc.rung.name} gave no parameter sets")
        enc.packager.set_tracks(VideoTrack("h264", record, enc.rung.width, enc.rung.height),
                                self._variant_audio())
        self._announce_ladder()

    def _announce_ladder(self) -> None:
        """The whole ladder, once every encoder has given its parameter sets (libx264
        does when it opens; a hardware encoder may wait for its first frame)."""
        if not self._ladder_due or self._dims is None:
            return
        encoded = self._encoded or []
        taken_over = [t.encoded for t in self._track_renditions() if t.encoded is not None]
        if any(enc.config_record is None for enc in encoded + taken_over):
            return
        self._ladder_due = False
        ladder: list[RenditionInfo] = []
        if self._source is not None and self._video_codec is not None:
            assert self._video_config is not None
            width, height = self._dims
            try:
                codecs = self._codecs(self._video_codec.value, self._video_config)
            except CodecConfigError as exc:
                raise PipelineError(str(exc)) from exc
            ladder.append(RenditionInfo(SOURCE, codecs, width, height, self._source_fps(),
                                        None, track=0))
        rungs: list[RenditionInfo] = []
        for enc in encoded:
            assert enc.config_record is not None
            rungs.append(RenditionInfo(enc.rung.name, self._codecs("h264", enc.config_record),
                                       enc.rung.width, enc.rung.height, enc.rung.fps,
                                       float(enc.rung.video_bitrate_kbps)))
        rungs += [self._track_info(t) for t in self._track_renditions()]
        rungs.sort(key=lambda r: -(r.height or 0))
        alternates = [RenditionInfo(a.name, a.codecs, None, None, None, None, a.track,
                                    alternate_audio=True, channels=a.channels)
                      for a in self._audio_renditions()]
        self.on_ladder(tuple(ladder + rungs + alternates))

    def _track_info(self, track: _Track) -> RenditionInfo:
        assert track.info is not None and track.name is not None
        if track.encoded is not None:
            enc = track.encoded
            assert enc.config_record is not None
            return RenditionInfo(track.name, self._codecs("h264", enc.config_record),
                                 enc.rung.width, enc.rung.height, enc.rung.fps,
                                 float(enc.rung.video_bitrate_kbps), None, track.note)
        assert track.codec is not None and track.config is not None
        try:
            codecs = self._codecs(track.codec.value, track.config)
        except CodecConfigError as exc:
            raise PipelineError(f"track {track.track}: {exc}") from exc
        info = track.info
        # No nominal bit rate: like the source's, its BANDWIDTH is measured on its parts
        # (the sink has it before the first master).
        return RenditionInfo(track.name, codecs, info.width, info.height, info.fps, None,
                             track.track)

    def _setup_outputs(self, width: int, height: int) -> None:
        fps = self._source_fps()
        frozen = self._rung_names
        rungs = resolve_ladder(self.config.ladder, width, height, fps, keep=frozen or ())
        if frozen is not None:
            # A rung this size would bring in is left out: players hold the master
            # they loaded, and a variant added to it later would reach none of them.
            rungs = [r for r in rungs if r.name in frozen]
        self._demuxed = self._alternate_audio_wanted()
        if self._tracks:
            rungs = self._setup_tracks(rungs)  # the encoder's own renditions first
        if self._demuxed:
            self._setup_audio_tracks()
        if frozen is None:
            self._rung_names = frozenset(r.name for r in rungs) | {
                t.name for t in self._track_renditions() if t.name} | {
                a.name for a in self._audio_renditions()}
        if self._overload is None:
            self._overload = OverloadPolicy(rungs)
        else:
            rungs = [r for r in rungs if not self._overload.stopped(r.name)]
        writer_format = self.config.segment_format
        self._encoded = [_Encoded(r, self.config,
                                  Packager(r.name, self.config.policy, make_writer(writer_format),
                                           parts=self._parts))
                         for r in rungs]
        for enc in self._encoded:
            for pts, data in self._early_audio or []:
                if self._rung_takes_audio(pts):
                    enc.packager.on_audio(pts, data)
        self._early_audio = None
        for enc in self._encoded:
            if enc.config_record is not None:
                enc.packager.set_tracks(VideoTrack("h264", enc.config_record, enc.rung.width,
                                                   enc.rung.height), self._variant_audio())
        if self._source is not None and self._video_codec is not None:
            assert self._video_config is not None
            self._source.set_tracks(VideoTrack(self._video_codec.value, self._video_config,
                                               width, height), self._variant_audio())
        self._ladder_due = True
        self._announce_ladder()
        logger.info("ladder resolved", extra={"source": f"{width}x{height}@{fps}",
                                              "rungs": [r.name for r in rungs]})

    def _codecs(self, video_codec: str, record: bytes) -> str:
        codecs = video_codec_string(video_codec, record)
        if self._audio_asc is not None and not self._demuxed:
            codecs += "," + mp4a_codec(self._audio_asc)
        return codecs

    def _variant_audio(self) -> AudioTrack | None:
        """The audio a variant carries: the broadcast's, unless it has audio renditions
        of its own (then variants are video only, transcoder.audio_tracks)."""
        return None if self._demuxed else self._audio_track()

    def _audio_track(self) -> AudioTrack | None:
        if self._audio_asc is None:
            return None
        cfg = parse_asc(self._audio_asc)
        return AudioTrack(self._audio_asc, cfg.sample_rate, cfg.channels)

    # --- encoder-sent tracks (transcoder.tracks) ---------------------------------------
    def _tell_once(self, message: str, **fields: object) -> None:
        if message not in self._tracks_told:
            self._tracks_told.add(message)
            logger.warning(message, extra=dict(fields))

    def _new_track_refused(self, kind: str, track: int, taken: int) -> bool:
        """Whether a track first seen now cannot be a rendition (and the log says why):
        players hold the master they loaded, so a rendition added later reaches none, and
        each track is a packager, a playlist and storage (a DoS limit)."""
        if self._dims is not None:
            self._tell_once(f"{kind} track {track} came after the ladder was published: "
                            "ignored", track=track)
            return True
        if taken >= MAX_LADDER_TRACKS:
            self._tell_once(f"{kind} track {track} ignored: at most {MAX_LADDER_TRACKS} "
                            f"encoder-sent {kind} tracks are taken", track=track)
            return True
        return False

    def _push_track(self, packet: MediaPacket) -> None:
        if packet.kind != MediaKind.VIDEO:
            self._push_audio_track(packet)
            return
        track = self._tracks.get(packet.track)
        if track is None:
            if self._new_track_refused("video", packet.track, len(self._tracks)):
                return
            track = self._tracks[packet.track] = _Track(packet.track)
        if packet.is_config:
            if packet.codec not in PASSTHROUGH_CODECS:
                self._tell_once(f"video track {packet.track} ignored: {packet.codec} cannot "
                                "be packaged as it came", track=packet.track)
                return
            if track.config is not None and track.config != packet.payload \
                    and track.name is not None:
                self.discontinuity()  # new parameters: fresh init segments, as on track 0
            track.codec, track.config = packet.codec, packet.payload
            return
        if track.config is None:
            return
        if len(track.dts_seen) < 8:
            track.dts_seen.append(packet.dts_ms)
        if track.dts_span is None:
            track.dts_span = (packet.dts_ms, packet.dts_ms)
        elif packet.dts_ms > track.dts_span[1]:
            # The bytes after the first packet, over the time they took.
            track.bytes += len(packet.payload)
            track.dts_span = (track.dts_span[0], packet.dts_ms)
        if track.info is None and packet.is_keyframe and self._dims is None:
            track.probe(packet)
        track.held.append(packet)
        self._release_tracks()

    def _release_tracks(self) -> None:
        """Hand each track's packets on once the source has gone past them."""
        upto = self._source_pts_max
        if upto is not None:
            for audio in self._audio_tracks.values():
                self._release_audio(audio, upto)
        for track in self._tracks.values():
            if track.packager is None or upto is None:
                continue
            while track.held and track.held[0].pts_ms <= upto:
                self._track_packet(track, track.held.popleft())

    def _track_packet(self, track: _Track, packet: MediaPacket) -> None:
        if track.packager is None or track.encoded is not None:
            return  # stopped, or castway encodes this one now, from the source
        pts = packet.pts_ms
        boundaries = self.clock.boundaries_in(track.align.horizon(pts), pts + ALIGN_TOLERANCE_MS)
        verdict = track.align.check(pts, packet.is_keyframe, boundaries)
        if verdict is False:
            self._take_over(track, boundaries[0])
            return
        for out in track.packager.on_video(packet.dts_ms, pts, packet.payload,
                                           packet.is_keyframe, verdict is True):
            self._emit(out)

    def _take_over(self, track: _Track, boundary_pts: int) -> None:
        """The track missed the boundary at ``boundary_pts``: its passthrough ends there,
        and from there castway encodes the rendition from the source (at the track's size
        and rate), starting with the source packets since that boundary."""
        assert track.packager is not None and track.info is not None and track.name
        for out in track.packager.end_at(boundary_pts):
            self._emit(out)
        why = (f"track {track.track}'s keyframes are not on the source's segment "
               f"boundaries (none at {boundary_pts} ms)")
        can_encode = (self._video_codec is not None and track.codec is Codec.H264
                      and self._gop and self._gop[0].pts_ms == boundary_pts)
        if not can_encode:
            # An HEVC or AV1 rendition cannot turn H.264 without a break in every
            # playlist; it ends instead, as a rung overload stops does.
            logger.warning("encoder-sent rendition stopped: " + why,
                           extra={"rendition": track.name})
            track.packager = None
            self.on_rung_stopped(Degradation(track.name, Action.STOPPED, self._clock(), 0.0))
            return
        info = track.described() or track.info
        rung = Rung(track.name, info.width, info.height, info.fps,
                    int(info.bitrate_kbps or nearest_rung(info.height).video_bitrate_kbps))
        track.note = why + ": encoded by castway from there"
        logger.warning("encoder-sent rendition taken over", extra={
            "rendition": track.name, "why": why})
        packager = Packager(track.name, self.config.policy,
                            make_writer(self.config.segment_format), parts=self._parts)
        for pts, data in self._recent_audio:
            if pts >= boundary_pts:
                packager.on_audio(pts, data)
        track.packager = packager
        track.encoded = _Encoded(rung, self.config, packager)
        track.held.clear()
        self._ladder_due = True  # its CODECS are x264's now
        for packet in self._gop:
            self._track_decode(track, packet)

    def _track_decode(self, track: _Track, packet: MediaPacket | None) -> None:
        enc = track.encoded
        assert enc is not None
        if track.decoder is None:
            track.decoder = self._new_source_decoder()
        pkt = None if packet is None else av_packet(packet)
        try:
            frames = track.decoder.decode(pkt)
        except av.error.FFmpegError as exc:
            logger.warning("video decode error", extra={"error": str(exc)})
            return
        for frame in frames:
            if frame.pts is None:
                continue
            pts = int(frame.pts)
            boundary = self.clock.is_boundary(pts)
            if enc.wants(pts, boundary):
                self._encode_frame(enc, enc.scale(frame, self.config.scale_threads), pts,
                                   boundary)

    def _setup_tracks(self, rungs: list[Rung]) -> list[Rung]:
        """The tracks that are renditions (those described by now), and the rungs left
        for castway to encode."""
        described = [info for t in self._tracks.values() if (info := t.described())]
        frozen = self._rung_names
        names = track_names(described, {SOURCE, AUDIO_RENDITION})
        if frozen is not None:
            # A successor or a new timeline: exactly the renditions published before.
            described = [i for i in described if names[i.track] in frozen]
        for info in described:
            track = self._tracks[info.track]
            track.name = names[info.track]
            track.info = info
            track.packager = Packager(track.name, self.config.policy,
                                      make_writer(self.config.segment_format),
                                      parts=self._parts)
            assert track.codec is not None and track.config is not None
            track.packager.set_tracks(VideoTrack(track.codec.value, track.config,
                                                 info.width, info.height), self._variant_audio())
            for pts, data in self._early_audio or []:
                track.packager.on_audio(pts, data)
        for track in self._tracks.values():
            if track.packager is None:
                self._tell_once(f"video track {track.track} is not a rendition: no keyframe "
                                "of it had come when the ladder was set up", track=track.track)
        taken = {n for n in names.values()}
        covered = {info.height for info in described}
        return [r for r in hybrid_rungs(rungs, covered) if r.name not in taken]

    def _track_renditions(self) -> list[_Track]:
        return [t for t in self._tracks.values() if t.packager is not None and t.name]

    # --- audio renditions (transcoder.audio_tracks) -------------------------------------
    def _push_audio_track(self, packet: MediaPacket) -> None:
        audio = self._audio_tracks.get(packet.track)
        if audio is None:
            if packet.codec != Codec.AAC:
                self._tell_once(f"audio track {packet.track} ignored: {packet.codec} is "
                                "packaged only as AAC", track=packet.track)
                return
            if self.config.segment_format != "fmp4":
                self._tell_once(f"audio track {packet.track} ignored: alternative audio "
                                "needs fMP4 segments (CASTWAY_SEGMENT_FORMAT=fmp4)",
                                track=packet.track)
                return
            if self._new_track_refused("audio", packet.track, len(self._audio_tracks)):
                return
            audio = self._audio_tracks[packet.track] = AudioTrackRendition(packet.track)
        if packet.is_config:
            try:
                audio.configure(packet.payload)
            except CodecConfigError as exc:
                self._tell_once(f"audio track {packet.track}: bad AudioSpecificConfig",
                                track=packet.track, error=str(exc))
            return
        self._hold_audio(audio, packet.pts_ms, packet.payload)

    def _hold_audio(self, audio: AudioTrackRendition, pts_ms: int, data: bytes) -> None:
        """An audio rendition's frame: held, then packaged with all the source has gone
        past (transcoder.audio_tracks)."""
        audio.hold(pts_ms, data)
        if self._source_pts_max is not None:
            self._release_audio(audio, self._source_pts_max)

    def _release_audio(self, audio: AudioTrackRendition, upto_pts_ms: int | None) -> None:
        for out in audio.release(upto_pts_ms, self.clock):
            self._emit(out)

    def _alternate_audio_wanted(self) -> bool:
        """Whether this ladder has audio renditions (the variants then carry none): when
        an encoder-sent AAC track can be one, or, for a successor or a new timeline,
        when the ladder published before had them."""
        frozen = self._rung_names
        if frozen is not None:
            return audio_track_name(0) in frozen and self._audio_asc is not None
        if self._audio_asc is None:
            if any(a.asc is not None for a in self._audio_tracks.values()):
                self._tell_once("audio tracks ignored: the broadcast has no audio of its "
                                "own (track 0) to offer them beside")
            return False
        wanted = False
        for audio in self._audio_tracks.values():
            if audio.asc is None:
                continue
            if not audio.held:
                # A rendition that may never have a segment would hold the master back
                # (origin.hls: the master waits for every rendition's first segment).
                self._tell_once(f"audio track {audio.track} is not a rendition: no frame "
                                "of it had come when the ladder was set up",
                                track=audio.track)
                continue
            wanted = True
        return wanted

    def _setup_audio_tracks(self) -> None:
        """The broadcast's audio (track 0) and each encoder-sent AAC track with frames
        are audio renditions from here; the variants are video only."""
        assert self._audio_asc is not None
        main = self._audio_tracks.get(0)
        if main is None:
            main = self._audio_tracks[0] = AudioTrackRendition(0)
        main.configure(self._audio_asc)
        for pts, data in self._early_audio or []:
            main.hold(pts, data)
        frozen = self._rung_names
        for audio in self._audio_tracks.values():
            if audio.asc is None or not (audio.name in frozen if frozen is not None
                                         else audio.held):
                continue
            audio.start(self.config.policy, make_writer("fmp4"), parts=self._parts)

    def _audio_renditions(self) -> list[AudioTrackRendition]:
        return [a for a in self._audio_tracks.values() if a.packager is not None]

    # --- audio ----------------------------------------------------------------------
    def _push_audio(self, packet: MediaPacket) -> None:
        if packet.codec != Codec.AAC:
            self._push_other_audio(packet)
            return
        if packet.is_config:
            try:
                parse_asc(packet.payload)
            except CodecConfigError as exc:
                logger.warning("bad AudioSpecificConfig", extra={"error": str(exc)})
                return
            self._audio_asc = packet.payload
            return
        if self._audio_asc is None:
            return
        self._audio_out(packet.pts_ms, packet.payload)

    def _audio_out(self, pts_ms: int, data: bytes) -> None:
        if self._audio_only is not None:
            boundary = self._clock_says(pts_ms, True)
            for out in self._audio_only.on_audio_sample(pts_ms, data, boundary):
                self._emit(out)
            return
        if not self._video_seen:
            if self._first_audio_pts is None:
                self._first_audio_pts = pts_ms
            elif pts_ms - self._first_audio_pts >= AUDIO_ONLY_AFTER_MS:
                self._start_audio_only()
                if self._audio_only is not None:
                    self._audio_out(pts_ms, data)
                    return
        if self._encoded is None and self._early_audio is not None:
            if len(self._early_audio) < EARLY_AUDIO_LIMIT:
                self._early_audio.append((pts_ms, data))
        elif self._demuxed:
            # The variants carry no audio (their writers would drop it): track 0's goes
            # to its own rendition only.
            self._hold_audio(self._audio_tracks[0], pts_ms, data)
            return
        if self._source is not None:
            self._source.on_audio(pts_ms, data)
        if self._tracks:
            self._recent_audio.append((pts_ms, data))
            for track in self._track_renditions():
                # A passthrough cuts as its keyframe comes, like the source; a track
                # castway took over is given what its boundary needs when it is.
                assert track.packager is not None
                track.packager.on_audio(pts_ms, data)
        if self._rung_takes_audio(pts_ms):
            for enc in self._encoded or []:
                enc.packager.on_audio(pts_ms, data)

    def _rung_takes_audio(self, pts_ms: int) -> bool:
        return self._rung_audio_from is None or pts_ms >= self._rung_audio_from

    def _start_audio_only(self) -> None:
        """No video: one AAC rendition, cut on its own frames at the segment target
        (every AAC frame is a sync sample, so every part is independent)."""
        if self._audio_asc is None:
            return
        if self.config.segment_format != "fmp4":
            raise PipelineError("an audio-only broadcast needs fMP4 segments "
                                "(CASTWAY_SEGMENT_FORMAT=fmp4); MPEG-TS carries its "
                                "clock on the video stream")
        packager = Packager(AUDIO_RENDITION, self.config.policy, make_writer("fmp4"),
                            parts=self._parts, audio_only=True)
        packager.set_tracks(None, self._audio_track())
        self._audio_only = packager
        early, self._early_audio = self._early_audio or [], None
        self.on_ladder((RenditionInfo(AUDIO_RENDITION, mp4a_codec(self._audio_asc),
                                      None, None, None, None),))
        logger.warning("no video: audio-only broadcast",
                       extra={"after_ms": AUDIO_ONLY_AFTER_MS})
        for pts, data in early:
            self._audio_out(pts, data)

    def _push_other_audio(self, packet: MediaPacket) -> None:
        from transcoder.audio import AudioTranscoder

        if self._audio_transcoder is None:
            self._audio_transcoder = AudioTranscoder(packet.codec)
            self._audio_asc = self._audio_transcoder.asc
        if packet.is_config:
            self._audio_transcoder.configure(packet.payload)
            return
        for pts, data in self._audio_transcoder.push(packet.pts_ms, packet.payload):
            self._audio_out(pts, data)

    # --- plumbing -------------------------------------------------------------------
    def _packagers(self) -> list[Packager]:
        if self._audio_only is not None:
            return [self._audio_only]
        out = [self._source] if self._source is not None else []
        tracks = [t.packager for t in self._track_renditions() if t.packager is not None]
        audio = [a.packager for a in self._audio_renditions() if a.packager is not None]
        return out + [e.packager for e in self._encoded or []] + tracks + audio

    def _emit(self, out: Output) -> None:
        self.emit(out)

    def _drain_all(self) -> None:
        self._close_decoder()
        for enc in self._encoded or []:
            self._encode(enc, None)
        for track in self._track_renditions():
            # The source has ended (or broken off): what is held is all there is.
            while track.held and track.packager is not None and track.encoded is None:
                self._track_packet(track, track.held.popleft())
            if track.encoded is not None:
                self._track_decode(track, None)
                self._encode(track.encoded, None)
        for audio in self._audio_tracks.values():
            self._release_audio(audio, None)  # the source has ended: all of it
        for packager in self._packagers():
            for out in packager.flush():
                self._emit(out)

    def _track_lag(self, media_ms: int) -> None:
        if not self.config.realtime:
            return
        now = self._clock()
        if self._wall0 is None or self._media0 is None:
            self._wall0, self._media0 = now, media_ms
            return
        lag = (now - self._wall0) - (media_ms - self._media0) / 1000.0
        self.stats.lag_s = max(0.0, lag)
        if self._overload is None:
            return
        step = self._overload.observe(lag, now)
        if step is None:
            return
        self.stats.degraded = tuple(self._overload.degraded.values())
        # Each step is logged by the supervisor, with the broadcast it belongs to, when
        # these stats reach it; a rate coming back only here.
        if step.rung not in self._overload.degraded:
            logger.info("overload: rung back to its full frame rate",
                        extra={"rung": step.rung, "lag_s": round(lag, 2)})
