"""One transcoder process per broadcast, supervised: :class:`TranscoderSupervisor` (the
:class:`castway.media.MediaPipelineFactory`) starts a :class:`BroadcastTranscoder` (the
:class:`castway.media.BroadcastMedia` that ingest feeds) per broadcast.

Design: docs/transcoder.md, "Processes, flow control, failures" and "Replay after a crash".
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from castway.catalog.recorder import SegmentRecorder
from castway.cost import (
    AdmissionMode,
    Calibration,
    CostError,
    CostLedger,
    CpuMeter,
    VideoSource,
    choose,
    load_calibration,
    node_capacity,
    relative_error,
)
from castway.live.base import LiveState
from castway.media import Codec, MediaKind, MediaPacket
from castway.model import Broadcast, SourceInfo
from castway.settings import Settings
from castway.storage.base import Storage
from castway.storage.pool import StoragePool
from transcoder.capacity import (
    describe,
    ladder_cost,
    ladder_options,
    nominal_kbps,
    source_kbps,
    video_source,
)
from transcoder.codecs import CodecConfigError
from transcoder.journal import JournalHeader, SourceJournal, journal_path
from transcoder.ladder import SOURCE, load_ladder
from transcoder.messages import (
    Announced,
    Boundary,
    Done,
    Exited,
    Failed,
    Feed,
    Finish,
    Flushed,
    FromChild,
    Produced,
    Restart,
    RungStopped,
    SetLadder,
    Stats,
    ToChild,
)
from transcoder.nal import sps_dimensions
from transcoder.overload import LAG_LIMIT_S, Action, Degradation
from transcoder.packager import Output, SegmentOut
from transcoder.pipeline import AUDIO_RENDITION, PipelineConfig, PipelineStats
from transcoder.replay import BREAK, MAX_REPLAY_BYTES, Break, Plan, Recovery
from transcoder.segmenter import SegmentPolicy
from transcoder.sink import BroadcastSink
from transcoder.tracks import hybrid_rungs
from transcoder.worker import worker_main

logger = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_PACKETS = 900  # ~10 s of 30 fps video + 48 kHz AAC
# Queued items the writer takes at once (one thread hop, one journal write).
WRITE_BATCH = 64
EVENT_QUEUE = 64
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
FINISH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
# A broadcast fed packets that yields no part or segment for this long (at least three
# segment targets) is not silently "live": its health says so, and a log line.
NO_MEDIA_WARN_S = 6.0


class HealthWarning(StrEnum):
    """Codes in the broadcast's ``warnings`` stat (comma-separated, empty when healthy)."""

    NO_VIDEO_CONFIG = "no_video_config"  # video without a sequence header: undecodable
    NO_MEDIA = "no_media"  # packets arrive, no segment comes out
    KEYFRAME_DROUGHT = "keyframe_drought"  # segments split without a source keyframe
    TRANSCODING_FAILED = "transcoding_failed"  # given up: unsupported input, or crashes


WARNING_TEXT = {
    HealthWarning.NO_VIDEO_CONFIG: "video arrives without a sequence header: nothing "
                                   "can decode it (the encoder must send the AVC/HEVC "
                                   "configuration record first)",
    HealthWarning.NO_MEDIA: "the publisher's packets produce no media",
    HealthWarning.KEYFRAME_DROUGHT: "no source keyframe within the segment target: "
                                    "segments are split without one (the passthrough "
                                    "rendition's are not independent); the encoder's "
                                    "keyframe interval should be 2 s",
    HealthWarning.TRANSCODING_FAILED: "transcoding was given up for this broadcast "
                                      "(see the error logged before): nothing more is "
                                      "served until it ends",
}
# The child sends stats at least every second (worker.STATS_INTERVAL_S); this long
# without a word while the parent listens is a hung child (stopped, deadlocked).
HANG_TIMEOUT_S = 15.0
# Before its first word a spawned child imports PyAV and opens its codecs, on a loaded
# machine too: it gets this long.
STARTUP_TIMEOUT_S = 30.0
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL of a child being replaced
WATCHDOG_INTERVAL_S = 1.0


# Glass-to-glass (ingest -> segment available): a segment's duration plus the pipeline.
GLASS_TO_GLASS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0)


@dataclass(frozen=True, slots=True)
class TranscoderMetrics:
    restarts: Counter
    replays: Counter
    dropped_packets: Counter
    dropped_frames: Gauge
    lag: Gauge
    segments: Counter
    running: Gauge
    fps: Gauge
    glass_to_glass: Histogram
    cost_capacity: Gauge
    cost_used: Gauge
    cost_free: Gauge
    cost_error: Gauge
    degraded_rungs: Gauge
    degradation_steps: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TranscoderMetrics:
        return cls(
            restarts=Counter("castway_transcoder_restarts", "Transcoder child processes "
                             "restarted after a crash", registry=registry),
            replays=Counter("castway_transcoder_replays", "Restarted transcoders that "
                            "redid the segments in progress from a replay (the rest "
                            "went on after a discontinuity)", registry=registry),
            dropped_packets=Counter("castway_transcoder_dropped_packets", "Packets dropped "
                                    "because a transcoder's queue was full",
                                    ["kind"], registry=registry),
            dropped_frames=Gauge("castway_transcoder_dropped_frames", "Frames skipped by "
                                 "encoded renditions to catch up, summed over running "
                                 "transcoders", registry=registry),
            lag=Gauge("castway_transcoder_lag_seconds", "Largest lag behind real time of "
                      "a running transcoder", registry=registry),
            segments=Counter("castway_transcoder_segments", "Media segments published",
                             registry=registry),
            running=Gauge("castway_transcoder_running", "Transcoder processes running",
                          registry=registry),
            fps=Gauge("castway_transcoder_fps", "Source video frames per second processed, "
                      "summed over running transcoders", registry=registry),
            glass_to_glass=Histogram(
                "castway_glass_to_glass_seconds", "From the last frame of a segment "
                "arriving at ingest to the segment being available in the live state",
                buckets=GLASS_TO_GLASS_BUCKETS, registry=registry),
            cost_capacity=Gauge("castway_node_cost_capacity_cores", "Transcode capacity "
                                "of this node: calibrated cores x the utilisation target",
                                registry=registry),
            cost_used=Gauge("castway_node_cost_used_cores", "Transcode cost of the "
                            "broadcasts on this node (each at the larger of its estimate "
                            "and its measured cost)", registry=registry),
            cost_free=Gauge("castway_node_cost_free_cores", "Transcode capacity left",
                            registry=registry),
            cost_error=Gauge("castway_transcoder_cost_estimate_error", "Mean relative "
                             "error of the running broadcasts' cost estimates, (measured "
                             "- estimate) / estimate", registry=registry),
            degraded_rungs=Gauge("castway_transcoder_degraded_rungs", "Rungs of running "
                                 "broadcasts that overload has halved or stopped "
                                 "(transcoder.overload)", ["action"], registry=registry),
            degradation_steps=Counter("castway_transcoder_degradation_steps", "Overload "
                                      "steps taken: a rung halved, or stopped",
                                      ["action"], registry=registry),
        )


def parse_source(text: str) -> VideoSource:
    """``1920x1080@30`` as a source to cost."""
    try:
        size, _, rate = text.partition("@")
        width, _, height = size.lower().partition("x")
        return VideoSource(int(width), int(height), float(rate or 30))
    except ValueError as exc:
        raise CostError(f"not a WIDTHxHEIGHT@FPS source: {text!r}") from exc


def make_ledger(settings: Settings, calibration: Calibration) -> CostLedger:
    """The node's cost ledger: capacity from the calibration and the utilisation target;
    a publish reserves a passthrough (``reduce``) or the full ladder of the reference
    source (``refuse``) until its own source is known."""
    ladder = load_ladder(settings.ladder)
    if settings.admission is AdmissionMode.REFUSE:
        reserve = ladder_cost(ladder, parse_source(settings.refuse_reserve_source),
                              calibration)
    else:
        reserve = calibration.broadcast_s
    capacity = node_capacity(calibration, settings.utilisation_target)
    return CostLedger(capacity, mode=settings.admission, publish_reserve=reserve,
                      margin=calibration.cores - capacity)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU-seconds of process ``pid`` (all its threads), from
    /proc/PID/stat; None where that cannot be read (the child is gone, not Linux)."""
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its end.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (IndexError, ValueError):
        return None


def encoded_rungs(names: Iterable[str]) -> tuple[str, ...]:
    """The encoded rungs among a published ladder's rendition names."""
    return tuple(n for n in names if n not in (SOURCE, AUDIO_RENDITION))


def pipeline_config(settings: Settings, broadcast: Broadcast) -> PipelineConfig:
    fps = broadcast.source.fps if broadcast.source is not None else None
    return PipelineConfig(
        ladder=load_ladder(settings.ladder),
        policy=SegmentPolicy.from_seconds(settings.target_segment_s, settings.part_target_s),
        x264_preset=settings.x264_preset,
        x264_lookahead_frames=settings.x264_lookahead_frames,
        segment_format=settings.segment_format.value, realtime=True,
        fps_hint=fps if fps and fps > 0 else None)


class TranscoderSupervisor:
    """:class:`castway.media.MediaPipelineFactory` running one child per broadcast."""

    def __init__(self, settings: Settings, live: LiveState, storage: Storage,
                 registry: CollectorRegistry, *, uploader: Any = None,
                 recorder: SegmentRecorder | None = None,
                 hang_timeout_s: float = HANG_TIMEOUT_S,
                 replay_max_bytes: int = MAX_REPLAY_BYTES) -> None:
        self.settings = settings
        self.replay_max_bytes = replay_max_bytes
        self.recorder = recorder
        self.hang_timeout_s = hang_timeout_s
        self.live = live
        self.storage = storage
        self.metrics = TranscoderMetrics.create(registry)
        self.uploader = uploader
        self._owns_uploader = False  # an uploader handed in belongs to the caller
        self._registry = registry
        self.running: dict[str, BroadcastTranscoder] = {}
        self._context = multiprocessing.get_context("spawn")
        self._storage_pool = StoragePool(name="transcoder-storage")  # no uploader only
        self.calibration, calibrated = load_calibration(settings.calibration_file,
                                                        Path(settings.data_dir))
        if not calibrated:
            logger.warning("this node is not calibrated: transcode costs are estimated "
                           "with the built-in calibration (run `castway calibrate`)")
        self.ledger = make_ledger(settings, self.calibration)
        self._refresh_gauges()

    async def _put_storage(self, key: str, data: bytes, *,
                           on_durable: Callable[[], None] | None = None) -> None:
        if self.uploader is None:
            try:
                from castway.storage.uploader import Uploader
            except ImportError:
                self.uploader = False
            else:
                spool = Path(self.settings.data_dir) / "spool" / "transcoder"
                try:
                    self.uploader = Uploader(self.storage, spool, self._registry)
                except ValueError:  # its metrics already registered by another uploader
                    self.uploader = Uploader(self.storage, spool, CollectorRegistry())
                self._owns_uploader = True
        if self.uploader:
            await self.uploader.put(key, data, on_durable=on_durable)
            return
        try:
            await self._storage_pool.run(self.storage.put, key, data)
        except Exception as exc:  # storage backends raise StorageError and friends
            logger.error("storage put failed", extra={"key": key, "error": str(exc)})
            return
        if on_durable is not None:
            on_durable()

    async def start(self, broadcast: Broadcast, *,
                    handover: bool = False) -> BroadcastTranscoder:
        sink = BroadcastSink(broadcast.id, self.settings, self.live, self._put_storage,
                             on_segment_latency=self.metrics.glass_to_glass.observe,
                             recorder=self.recorder)
        if handover:
            # Another node ran this broadcast until now: its playlists go on.
            await sink.continue_from_live(broadcast.renditions)
        config = pipeline_config(self.settings, broadcast)
        if handover and broadcast.renditions:
            # Players hold the master with the rungs published so far: this node's
            # ladder has exactly those, whatever size the source comes back at.
            config = replace(config, keep_rungs=encoded_rungs(
                r.name for r in broadcast.renditions))
        transcoder = BroadcastTranscoder(broadcast, config, sink, self)
        if handover:
            # Its ladder was chosen where it started and players hold it: counted at
            # its full cost until measured here.
            source = video_source(broadcast.source)
            kept = config.ladder
            if config.keep_rungs is not None:
                kept = replace(kept, rungs=tuple(r for r in kept.rungs
                                                 if r.name in config.keep_rungs))
            self.ledger.reserve(broadcast.id, ladder_cost(
                kept, source, self.calibration,
                input_kbps=source_kbps(broadcast.source, source)))
            transcoder.ladder_decided = True
        else:
            self.ledger.reserve(broadcast.id, self.ledger.publish_reserve)
        self._refresh_gauges()
        await transcoder.start()
        self.running[broadcast.id] = transcoder
        self.metrics.running.set(len(self.running))
        return transcoder

    def _forget(self, broadcast_id: str) -> None:
        self.running.pop(broadcast_id, None)
        self.ledger.release(broadcast_id)
        self.metrics.running.set(len(self.running))
        # An ended broadcast's lag, drops and cost leave the gauges with it.
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        self.metrics.lag.set(max((t.lag_s for t in self.running.values()), default=0.0))
        self.metrics.fps.set(sum(t.fps for t in self.running.values()))
        self.metrics.dropped_frames.set(sum(t.dropped_frames for t in self.running.values()))
        for action in Action:
            self.metrics.degraded_rungs.labels(action.value).set(sum(
                1 for t in self.running.values() for d in t.degraded if d.action is action))
        self.metrics.cost_capacity.set(self.ledger.capacity)
        self.metrics.cost_used.set(self.ledger.used)
        self.metrics.cost_free.set(self.ledger.free)
        error = self.ledger.estimate_error
        self.metrics.cost_error.set(error if error is not None else 0.0)

    async def close(self) -> None:
        """Stop every running transcoder (service shutdown)."""
        for transcoder in list(self.running.values()):
            await transcoder.finish(failed=True)
        if self._owns_uploader and self.uploader:
            await self.uploader.close()
        self._storage_pool.close()


class _SendFailed(Exception):
    """A pipe send failed after ``sent`` messages had gone (to a child now dead)."""

    def __init__(self, sent: int) -> None:
        super().__init__(sent)
        self.sent = sent


def _send_all(tx: Connection, messages: Sequence[ToChild]) -> None:
    for sent, message in enumerate(messages):
        try:
            tx.send(message)
        except (OSError, ValueError) as exc:
            raise _SendFailed(sent) from exc


class BroadcastTranscoder:
    """The :class:`castway.media.BroadcastMedia` of one broadcast."""

    def __init__(self, broadcast: Broadcast, config: PipelineConfig, sink: BroadcastSink,
                 supervisor: TranscoderSupervisor) -> None:
        self.broadcast = broadcast
        self.config = config
        self.sink = sink
        self.supervisor = supervisor
        self._queue: asyncio.Queue[MediaPacket | Break | Finish | SetLadder] = asyncio.Queue(
            QUEUE_PACKETS)
        self._configs: dict[tuple[MediaKind, int], MediaPacket] = {}
        self._skip_video: set[int] = set()  # video tracks waiting for a keyframe
        # (generation of the child that said it, message)
        self._events: asyncio.Queue[tuple[int, FromChild]] = asyncio.Queue(EVENT_QUEUE)
        self._recovery = Recovery(max_bytes=supervisor.replay_max_bytes)
        self._plan: Plan | None = None  # how the next child redoes the work in progress
        self._process: BaseProcess | None = None
        self._tx: Connection | None = None  # parent -> child
        self._generation = 0
        self._lost_generation = 0  # the last generation retired (dead or hung)
        # Since when the reader of the current child has waited for its next message
        # (None while it is busy handing one to the event loop): the hang clock.
        self._listening_since: float | None = None
        self._heard = False  # the current child has said something
        self._restart_times: deque[float] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._finishing = False
        self._done = asyncio.Event()
        self._child_ready = asyncio.Event()
        self._given_up = False
        self._fatal = False
        self.gave_up = asyncio.Event()  # set when it stops for good (tests wait on it)
        self.restarts = 0
        self.dropped_packets = 0
        self.dropped_video_packets = 0
        self.dropped_frames = 0
        self.lag_s = 0.0
        self.fps = 0.0
        # What overload took (transcoder.overload), and when each step was first seen here
        # (the child's clock is its own).
        self.degraded: tuple[Degradation, ...] = ()
        self._degraded_at: dict[tuple[str, str], float] = {}
        # The cost model (castway.cost): the ladder is chosen, with its cost, when the
        # first video packet comes (onMetaData and the sequence header are in by then).
        self.ladder_decided = False
        self.ladder_reduced = False
        self.ladder_name = ""
        self.cost_estimate: float | None = None
        self.cost_measured: float | None = None
        self.cost_transcoder: float | None = None  # the child's own part of it
        self._meter = CpuMeter()
        self._bytes_in = 0  # what the publisher sent, every track: the ingest's share
        self._dropped_at_sample = 0
        self._fps_sample: tuple[float, int] | None = None  # (monotonic, video packets)
        self.warnings: set[HealthWarning] = set()
        self._no_media_after_s = max(NO_MEDIA_WARN_S,
                                     3 * supervisor.settings.target_segment_s)
        # Since when nothing came out: the start, the last part or segment, a break.
        self._media_clock = time.monotonic()
        self._unconfigured_seen = 0
        self._drought_splits_seen = 0
        self._drought_at: float | None = None
        # Pipe sends (one at a time, by the writer) and joins of retired children (the
        # watchdog's and a stop's): a send blocked on a hung child never delays its end.
        self._threads = ThreadPoolExecutor(max_workers=3,
                                           thread_name_prefix=f"tc-{broadcast.id}")
        # The source journal (transcoder.journal): what a salvage needs if this process
        # dies. Its writes, in order, on a thread of their own.
        self._journal = SourceJournal(journal_path(Path(supervisor.settings.data_dir),
                                                   broadcast.id))
        self._journal_io = ThreadPoolExecutor(max_workers=1,
                                              thread_name_prefix=f"journal-{broadcast.id}")
        self._journal_at: int | None = None  # the boundary the journal starts at
        self._journal_closing = False
        # Per rendition: (a boundary, the media sequence number of its segment there).
        self._anchors: dict[str, tuple[int, int]] = {}

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    # --- BroadcastMedia ------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Source video frames an encoded rendition skipped under overload (a rung at a
        halved rate, transcoder.overload), or dropped here on a full queue."""
        return self.dropped_frames + self.dropped_video_packets

    async def feed(self, packet: MediaPacket) -> None:
        self._bytes_in += len(packet.payload)
        if packet.is_config:
            self._configs[packet.stream] = packet
        if self._given_up or self._finishing:
            return
        if packet.kind == MediaKind.VIDEO and packet.track == 0 and not packet.is_config \
                and not self.ladder_decided:
            # At the first frame, not the sequence header: an encoder that sends its own
            # ladder has sent every track's sequence header by then (OBS and FFmpeg send
            # them all first), and the rungs its tracks cover cost nothing here.
            await self._decide_ladder()
        if packet.kind == MediaKind.VIDEO and not packet.is_config:
            # Per video track: after a drop, nothing of that track until its next keyframe.
            if packet.track in self._skip_video and not packet.is_keyframe:
                self._drop(packet)
                return
            self._skip_video.discard(packet.track)
            if packet.is_keyframe and packet.track == 0:
                self.sink.note_keyframe_arrival()
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self._drop(packet)
            if packet.kind == MediaKind.VIDEO:
                self._skip_video.add(packet.track)

    async def _decide_ladder(self) -> None:
        """The richest ladder whose cost fits the node (castway.cost.choose), decided
        once, before the child decodes its first frame. ``refuse`` cannot refuse any
        more (the publish was accepted before the source was described): past the
        publish, it reduces like ``reduce``."""
        self.ladder_decided = True
        supervisor = self.supervisor
        info = None
        try:
            record = await supervisor.live.get_broadcast(self.broadcast.id)
            info = record.source if record is not None else None
        except Exception:  # the live state may blip: cost what we know (the worst case)
            logger.exception("source unknown when choosing the ladder",
                             extra={"broadcast_id": self.broadcast.id})
        config = self._configs.get((MediaKind.VIDEO, 0))
        if config is not None and config.codec is Codec.H264:
            # The sequence header says the size for sure (onMetaData may not say it,
            # or say it wrong); the frame rate only onMetaData says this early.
            try:
                width, height = sps_dimensions(config.payload)
                info = replace(info or SourceInfo(), width=width, height=height,
                               video_codec=config.codec.value)
            except CodecConfigError:
                pass
        elif config is not None:
            info = replace(info or SourceInfo(), video_codec=config.codec.value)
        source = video_source(info)
        ledger = supervisor.ledger
        tracks = self._track_heights()
        spec = self.config.ladder
        if tracks:
            # The encoder sent these; castway encodes the rest (a track castway takes
            # over later shows in the measured cost).
            spec = replace(spec, rungs=tuple(hybrid_rungs(spec.rungs, set(tracks.values()))))
        # What it sends, for the ingest process's share: track 0's rate, and the
        # platform's rates for its tracks.
        input_kbps = source_kbps(info, source) + sum(
            nominal_kbps(h, source.fps) for h in tracks.values())
        options = ladder_options(spec, source, supervisor.calibration,
                                 passthrough_tracks=len(tracks), input_kbps=input_kbps)
        mode = ledger.mode
        if mode is AdmissionMode.REFUSE:
            mode = AdmissionMode.REDUCE
        choice = choose(options, ledger.free_for(self.broadcast.id), mode)
        assert choice.option is not None  # only refuse refuses
        chosen = choice.option
        ledger.reserve(self.broadcast.id, chosen.cost)
        self.cost_estimate = chosen.cost
        self.ladder_reduced = choice.reduced
        self.ladder_name = ",".join([describe(chosen.ladder, source)] + [
            f"track{n}:{h}p" for n, h in sorted(tracks.items())])
        self.config = replace(self.config, ladder=chosen.ladder)  # also for a successor
        supervisor._refresh_gauges()
        logger.info("ladder chosen", extra={
            "broadcast_id": self.broadcast.id, "ladder": self.ladder_name,
            "reduced": choice.reduced, "cost": round(chosen.cost, 3),
            "source": f"{source.width}x{source.height}@{source.fps:g}",
            "node_free": round(ledger.free, 3)})
        await self._queue.put(SetLadder(chosen.ladder))

    def _track_heights(self) -> dict[int, int]:
        """The encoder's own renditions (E-RTMP multitrack) by track: their heights, from
        the H.264 sequence headers (an HEVC or AV1 track is costed as if castway made
        its rung: the worst case)."""
        heights: dict[int, int] = {}
        for (kind, track), config in list(self._configs.items()):
            if kind is MediaKind.VIDEO and track != 0 and config.codec is Codec.H264:
                try:
                    heights[track] = sps_dimensions(config.payload)[1]
                except CodecConfigError:
                    continue
        return heights

    async def discontinuity(self) -> None:
        if not self._given_up and not self._finishing:
            await self._queue.put(BREAK)

    async def finish(self, *, failed: bool = False) -> None:
        await self._close(failed=failed, end=True)

    async def hand_over(self) -> None:
        """Flush the child (the segment in progress closes as a complete segment), stop
        it, and leave the playlists open for the node that continues the broadcast."""
        await self._close(failed=False, end=False)

    async def _close(self, *, failed: bool, end: bool) -> None:
        if self._finishing:
            await self._done.wait()
            return
        self._finishing = True
        try:
            if not self._given_up and not failed:
                await self._queue.put(Finish())
                try:
                    async with asyncio.timeout(FINISH_TIMEOUT_S):
                        await self._done.wait()
                except TimeoutError:
                    logger.error("transcoder did not finish in time",
                                 extra={"broadcast_id": self.broadcast.id})
            await self._stop_child()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            # Events already read from the child still go out before the end list.
            while not self._events.empty():
                await self._handle(*self._events.get_nowait())
            if end:
                await self.sink.finish()
            else:
                await self.sink.hand_over()
            if not failed and not self._given_up:
                # Ended here, or goes on on another node: once every segment is
                # durable there is nothing left to salvage.
                self._journal_closing = True
                self._journal_remove_when_durable()
        finally:
            if self._given_up:
                # Nothing could transcode it here; a salvage would fail the same way.
                self._journal_submit(self._journal.remove)
            elif not self._journal_closing:
                self._journal_submit(self._journal.close)  # kept for the next start
            self._done.set()
            self.supervisor._forget(self.broadcast.id)
            # A cancelled task keeps its CancelledError, whose traceback holds the task's
            # frame and so this object: kept in _tasks, a cycle that waits for the cyclic
            # GC -- minutes in a busy server -- with the replay buffer and the sink.
            # Tasks still running stay referenced (asyncio holds them only weakly).
            self._tasks = [task for task in self._tasks if not task.done()]
            self._threads.shutdown(wait=False)
            self._journal_io.shutdown(wait=False)

    # --- process management --------------------------------------------------------
    async def start(self) -> None:
        self._journal_update()
        self._spawn()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._writer(), name=f"tc-writer-{self.broadcast.id}"),
                       loop.create_task(self._consumer(), name=f"tc-sink-{self.broadcast.id}"),
                       loop.create_task(self._watchdog(),
                                        name=f"tc-watchdog-{self.broadcast.id}")]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """These tasks run for the broadcast's life: one that raises has stopped the
        broadcast's media (a writer gone feeds its child nothing), and says so now, not
        at garbage collection."""
        if task.cancelled() or task.exception() is None:
            return
        logger.error("transcoder task failed: the broadcast's media has stopped",
                     exc_info=task.exception(),
                     extra={"broadcast_id": self.broadcast.id, "task": task.get_name()})

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _spawn(self) -> None:
        ctx = self.supervisor._context
        child_rx, parent_tx = ctx.Pipe(duplex=False)
        parent_rx, child_tx = ctx.Pipe(duplex=False)
        config = self.config
        if self.sink.infos:
            # A successor (a crash, a hang) serves the ladder its predecessor published,
            # whatever the source's size is now: the variant set of a live master never
            # changes.
            config = replace(config, keep_rungs=encoded_rungs(self.sink.infos))
        if self._plan is not None:
            config = replace(config, replay_from_pts_ms=self._plan.start_pts_ms)
        process = ctx.Process(target=worker_main, args=(child_rx, child_tx, config),
                              name=f"castway-transcoder-{self.broadcast.id}", daemon=True)
        process.start()
        child_rx.close()
        child_tx.close()
        self._process = process
        self._tx = parent_tx
        self._generation += 1
        self._heard = False
        self._listening_since = time.monotonic()
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._reader, args=(parent_rx, self._generation, loop),
                         name=f"tc-reader-{self.broadcast.id}", daemon=True).start()
        self._child_ready.set()
        logger.info("transcoder started", extra={"broadcast_id": self.broadcast.id,
                                                 "pid": process.pid})

    def _reader(self, rx: Connection, generation: int,
                loop: asyncio.AbstractEventLoop) -> None:
        """Thread: the child's messages onto the event loop (blocking when it is full)."""
        try:
            while True:
                if generation == self._generation:
                    self._listening_since = time.monotonic()
                try:
                    message = rx.recv()
                except (EOFError, OSError):
                    message = Exited(generation)
                if generation == self._generation:
                    self._listening_since = None
                    self._heard = True
                put = self._events.put((generation, message))
                try:
                    asyncio.run_coroutine_threadsafe(put, loop).result()
                except RuntimeError:
                    put.close()  # never scheduled: not a coroutine left unawaited
                    return  # the loop is gone
                if isinstance(message, Exited | Done):
                    return
        finally:
            rx.close()

    async def _writer(self) -> None:
        prelude_sent = 0  # the generation that has had its prelude
        previous: Connection | None = None
        while True:
            # What is queued goes in one thread hop and one journal write: per packet,
            # the hops (a future, a wake-up of the event loop) cost more than the sends.
            items = [await self._queue.get()]
            while len(items) < WRITE_BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            batch: list[tuple[int | None, ToChild]] = []
            journal: list[MediaPacket | Break] = []
            for item in items:
                if isinstance(item, Finish | SetLadder):
                    batch.append((None, item))
                    continue
                seq = self._recovery.sent(item)
                journal.append(item)
                batch.append((seq, Restart(seq) if isinstance(item, Break)
                              else Feed(item, seq)))
            if journal:
                self._journal_submit(self._journal.append_all, journal)
            while True:  # until a child has it (a replay may carry it)
                await self._child_ready.wait()
                tx = self._tx
                generation = self._generation
                if tx is None:
                    break  # stopping
                if previous is not None and previous is not tx:
                    # The pipe of a replaced child: only this task ever sent on it.
                    previous.close()
                previous = tx
                try:
                    if prelude_sent != generation:
                        prelude_sent = generation
                        replayed_until = await self._send_prelude(tx, items)
                        batch = [(seq, m) for seq, m in batch
                                 if seq is None or seq > replayed_until]
                    if batch:
                        await self._in_thread(_send_all, tx, [m for _, m in batch])
                    break
                except _SendFailed as failed:
                    # What went before the failure went to the dead child, as a single
                    # send that succeeded would have: the rest is the successor's.
                    batch = batch[failed.sent:]
                    if generation == self._generation:
                        self._child_ready.clear()
                except (OSError, ValueError):
                    # Broken pipe: the child died; the reader reports it, we restart, and
                    # these messages go to the successor (in its replay, or after it).
                    if generation == self._generation:
                        self._child_ready.clear()

    async def _send_prelude(self, tx: Connection,
                            pending: Sequence[MediaPacket | Break | Finish | SetLadder]) -> int:
        """A fresh child's first messages: the configuration records in force, then the
        replay of the work in progress if its predecessor died (the last sequence
        number replayed, -1 for none). ``pending``: what the writer is about to send."""
        plan, self._plan = self._plan, None
        if plan is None:
            # A copy: each send awaits, and a record of a kind not seen yet may come in
            # meanwhile (audio and video on separate tasks, as WHIP feeds them); that one
            # is queued and goes after.
            for config in list(self._configs.values()):
                if not any(config is p for p in pending):
                    await self._in_thread(tx.send, Feed(config, -1))
            return -1
        prelude = self._recovery.prelude(plan)
        for config in prelude.configs:
            await self._in_thread(tx.send, Feed(config, -1))
        for sent in prelude.items:
            replayed = sent.item
            message: ToChild = (Restart(sent.seq) if isinstance(replayed, Break)
                                else Feed(replayed, sent.seq))
            await self._in_thread(tx.send, message)
        return prelude.last_seq

    async def _consumer(self) -> None:
        while True:
            generation, message = await self._events.get()
            await self._handle(generation, message)

    async def _handle(self, generation: int, message: FromChild) -> None:
        if generation != self._generation and not isinstance(message, Exited):
            # A retired child's late word: its successor redoes (or the discontinuity
            # after it ends) what it was doing, as planned when it was retired.
            return
        try:
            if isinstance(message, Produced):
                self._media_clock = time.monotonic()
                await self._output(message.output)
            elif isinstance(message, Announced):
                for info in message.ladder:
                    self._anchor(info.name)
                await self.sink.on_ladder(message.ladder)
            elif isinstance(message, Boundary):
                self._recovery.boundary(message.seq, message.pts_ms)
            elif isinstance(message, Flushed):
                self._media_clock = time.monotonic()
                if message.seq >= 0:
                    self._recovery.child_break(message.seq)
                await self.sink.discontinuity()
            elif isinstance(message, RungStopped):
                await self.sink.stop_rendition(message.step.rung)
            elif isinstance(message, Stats):
                await self._stats(message.stats)
            elif isinstance(message, Done):
                self._done.set()
            elif isinstance(message, Failed):
                # Deterministic (unsupported codec, broken configuration): a restart
                # would fail the same way, so the broadcast goes on without transcoding.
                self._fatal = True
                logger.error("transcoder failed", extra={"broadcast_id": self.broadcast.id,
                                                         "error": message.error})
            else:
                await self._child_lost(message.generation, hung=False)
        except Exception:
            # A live-state hiccup must not kill the consumer (and with it the broadcast).
            logger.exception("transcoder sink failed", extra={"broadcast_id":
                                                              self.broadcast.id})

    async def _output(self, out: Output) -> None:
        name = out.rendition
        self._anchor(name)
        if not self._recovery.keep(out):
            return  # its predecessor published it
        if not isinstance(out, SegmentOut):
            await self.sink.on_output(out)
            return
        boundary = self._recovery.kept_boundary
        assert boundary is not None

        def durable() -> None:
            self._recovery.durable(name, boundary)
            self._journal_remove_when_durable()

        await self.sink.on_output(out, on_durable=durable)
        self.supervisor.metrics.segments.inc()
        # No await between these: the sink's numbering and the boundary agree.
        self._anchors[name] = (boundary + 1, self.sink.next_msn(name))
        self._journal_update()

    def _anchor(self, name: str) -> None:
        """A rendition first seen: its open segment's boundary and number, together."""
        if name not in self._anchors:
            self._recovery.rendition(name)
            boundary = self._recovery.open_boundary(name)
            assert boundary is not None
            self._anchors[name] = (boundary, self.sink.next_msn(name))

    # --- the source journal --------------------------------------------------------
    def _journal_submit(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self._journal_io.submit(fn, *args)
        except RuntimeError:
            pass  # closed: the broadcast's transcoder is gone

    def _journal_update(self) -> None:
        """Start the journal over when the oldest segment not yet durable has moved on."""
        if self._journal_closing or self._journal.failed:
            return
        boundary = self._recovery.journal_boundary
        if boundary == self._journal_at:
            return
        plan = self._recovery.journal_plan()
        if plan is None:
            return  # no keyframe there: the journal goes on from where it started
        self._journal_at = boundary
        msn = {name: number - (at - boundary) for name, (at, number) in self._anchors.items()}
        # A rendition that appears later joins the numbering of the others (the sink's
        # RenditionLog.join).
        default = max(msn.values()) if msn else max(
            (log.next_msn for log in self.sink.logs.values()), default=0)
        header = JournalHeader(self.broadcast.id, msn, default_msn=default,
                               replay_from_pts_ms=plan.start_pts_ms)
        prelude = self._recovery.prelude(plan)
        items = [*prelude.configs, *(sent.item for sent in prelude.items)]
        self._journal_submit(self._journal.rewrite, header, items)

    def _journal_remove_when_durable(self) -> None:
        if self._journal_closing and self._recovery.all_durable:
            self._journal_submit(self._journal.remove)

    def _measure(self, stats: PipelineStats) -> None:
        """The child's CPU time per second of media it processed (castway.cost)."""
        cpu = process_cpu_s(self.pid)
        if cpu is None:
            return
        if stats.dropped_frames != self._dropped_at_sample:
            # A child skipping frames to catch up spends less than the broadcast costs
            # (the machine is short, not the broadcast cheap): that stretch is no
            # measurement, the last good one stands.
            self._dropped_at_sample = stats.dropped_frames
            self._meter.reset()
            return
        measured = self._meter.sample(stats.media_ms / 1000.0, cpu)
        if measured is not None and stats.media_ms > 0:
            # The child's CPU, plus the ingest process's share of what the publisher
            # sends (castway.cost: ingest_mbit_s), as the estimate counts it.
            self.cost_transcoder = measured
            mbit_s = self._bytes_in * 8 / 1e6 / (stats.media_ms / 1000.0)
            measured += self.supervisor.calibration.ingest_mbit_s * mbit_s
            self.cost_measured = measured
            self.supervisor.ledger.measure(self.broadcast.id, measured)

    async def _stats(self, stats: PipelineStats) -> None:
        self.lag_s = stats.lag_s
        self.dropped_frames = stats.dropped_frames
        self._degradation(stats.degraded)
        self._measure(stats)
        now, frames = time.monotonic(), stats.video_packets
        if self._fps_sample is not None and now > self._fps_sample[0] \
                and frames >= self._fps_sample[1]:
            self.fps = (frames - self._fps_sample[1]) / (now - self._fps_sample[0])
        self._fps_sample = (now, frames)
        self._check_health(stats, now)
        self.supervisor._refresh_gauges()
        await self._put_stats()

    def _degradation(self, degraded: tuple[Degradation, ...]) -> None:
        # A restarted child starts with a plan of its own: what this one stopped stays
        # stopped (the sink ended those renditions), so it is kept.
        stopped = tuple(d for d in self.degraded if d.action is Action.STOPPED
                        and all(d.rung != n.rung for n in degraded))
        current = stopped + degraded
        for step in current:
            key = (step.rung, step.action.value)
            if key not in self._degraded_at:
                self._degraded_at[key] = time.time()
                self.supervisor.metrics.degradation_steps.labels(step.action.value).inc()
                logger.warning("overload: %s %s", step.rung, step.action.value,
                               extra={"broadcast_id": self.broadcast.id,
                                      "rung": step.rung, "action": step.action.value,
                                      "lag_s": round(step.lag_s, 2)})
        live_keys = {(d.rung, d.action.value) for d in current}
        self._degraded_at = {k: v for k, v in self._degraded_at.items() if k in live_keys}
        self.degraded = current

    def _degradation_stats(self) -> dict[str, float | str]:
        if not self.degraded:
            return {"degraded": "", "degraded_since": "", "degraded_reason": ""}
        first = min(self._degraded_at.values())
        worst = max(d.lag_s for d in self.degraded)
        return {
            "degraded": ",".join(f"{d.rung}:{d.action.value}" for d in self.degraded),
            "degraded_since": datetime.fromtimestamp(first, UTC).isoformat(),
            "degraded_reason": (f"transcoder {worst:.1f} s behind real time (limit "
                                f"{LAG_LIMIT_S:.1f} s): the machine is short of CPU"),
        }

    def _check_health(self, stats: PipelineStats, now: float) -> None:
        """Conditions under which the broadcast is live but serves nothing (or less than
        it should), from the child's stats: logged once when they start, shown in the
        broadcast's ``warnings`` stat while they last."""
        active: set[HealthWarning] = set()
        unconfigured = stats.video_without_config
        if unconfigured > self._unconfigured_seen:
            active.add(HealthWarning.NO_VIDEO_CONFIG)
        self._unconfigured_seen = unconfigured  # a restarted child counts from 0
        if now - self._media_clock > self._no_media_after_s:
            active.add(HealthWarning.NO_MEDIA)
        splits = stats.keyframe_drought_splits
        if splits > self._drought_splits_seen:
            self._drought_at = now
        self._drought_splits_seen = splits
        # A split comes once a segment; the warning lasts past the next one rather than
        # flapping between two stats reports.
        if self._drought_at is not None and now - self._drought_at <= self._no_media_after_s:
            active.add(HealthWarning.KEYFRAME_DROUGHT)
        fields = {"broadcast_id": self.broadcast.id, "channel": self.broadcast.channel}
        for code in sorted(active - self.warnings):
            logger.warning("broadcast health: %s", WARNING_TEXT[code],
                           extra={**fields, "warning": code.value})
        for code in sorted(self.warnings - active):
            logger.info("broadcast health: warning cleared",
                        extra={**fields, "warning": code.value})
        self.warnings = active

    async def _put_stats(self) -> None:
        current = await self.sink.live.get_stats(self.broadcast.id)
        current.update({"transcoder_lag_s": round(self.lag_s, 3),
                        "transcoder_dropped_frames": float(self.dropped_frames),
                        "transcoder_dropped_packets": float(self.dropped_packets),
                        "transcoder_restarts": float(self.restarts),
                        "ladder": self.ladder_name,
                        "ladder_reduced": 1.0 if self.ladder_reduced else 0.0,
                        "cost_estimate": round(self.cost_estimate or 0.0, 4),
                        "cost_measured": round(self.cost_measured or 0.0, 4),
                        "cost_transcoder": round(self.cost_transcoder or 0.0, 4),
                        "cost_error": (round(relative_error(self.cost_estimate,
                                                            self.cost_measured), 4)
                                       if self.cost_estimate and self.cost_measured
                                       else 0.0),
                        "warnings": ",".join(sorted(w.value for w in self.warnings)),
                        **self._degradation_stats()})
        await self.sink.live.put_stats(self.broadcast.id, current)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            since = self._listening_since
            if since is None or self._finishing or self._done.is_set():
                continue
            limit = self.supervisor.hang_timeout_s
            if not self._heard:
                limit = max(limit, STARTUP_TIMEOUT_S)
            if time.monotonic() - since > limit:
                logger.error("transcoder hung: no word from it",
                             extra={"broadcast_id": self.broadcast.id, "pid": self.pid,
                                    "silent_s": round(time.monotonic() - since, 1)})
                await self._child_lost(self._generation, hung=True)

    async def _child_lost(self, generation: int, *, hung: bool) -> None:
        """The child of ``generation`` is dead (its pipe closed) or hung: make sure it is
        gone (terminate, kill, reap) and start a new one."""
        if generation != self._generation or generation == self._lost_generation:
            return  # an older child, or this one is already being replaced
        self._lost_generation = generation
        self._listening_since = None
        self._child_ready.clear()
        process, self._process = self._process, None
        code = None
        if process is not None:
            # A child whose pipe closed is normally exiting: give it the usual time.
            code = await self._retire(process, grace_s=0.0 if hung else STOP_TIMEOUT_S)
        if self._done.is_set():
            return  # finished normally (or given up)
        if not hung:
            logger.error("transcoder exited unexpectedly",
                         extra={"broadcast_id": self.broadcast.id, "exitcode": code})
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > RESTART_WINDOW_S:
            self._restart_times.popleft()
        giving_up = len(self._restart_times) >= MAX_RESTARTS or self._fatal
        plan = None if giving_up else self._recovery.plan()
        if plan is None:
            self._recovery.abandon()
            await self.sink.child_lost()
            self._anchors.clear()
            for name in self.sink.logs:
                self._anchor(name)
            self._journal_update()
        else:
            self._recovery.start_successor(plan)
            self.supervisor.metrics.replays.inc()
            logger.info("transcoder restarting: its successor redoes the segments in "
                        "progress", extra={"broadcast_id": self.broadcast.id,
                                           "from_boundary": plan.boundary})
        self._plan = plan
        if giving_up:
            self._given_up = True
            logger.error("transcoder keeps crashing: giving up on this broadcast",
                         extra={"broadcast_id": self.broadcast.id})
            # No child, no more stats: the health says so now and stays so.
            self.warnings = {HealthWarning.TRANSCODING_FAILED}
            try:
                await self._put_stats()
            finally:
                self.gave_up.set()
                self._done.set()  # a pending finish() stops waiting for this child
            return
        self._restart_times.append(now)
        self._meter.reset()  # the successor's CPU counter starts from 0
        self._bytes_in = 0  # and its media time
        self.restarts += 1
        self.supervisor.metrics.restarts.inc()
        self._media_clock = time.monotonic()
        self._spawn()
        await self._put_stats()

    async def _stop_child(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            tx.close()
        process, self._process = self._process, None
        if process is None:
            return
        await self._retire(process, grace_s=STOP_TIMEOUT_S)

    async def _retire(self, process: BaseProcess, *, grace_s: float) -> int | None:
        """Wait ``grace_s`` for the child to exit, then SIGTERM, then SIGKILL after
        :data:`KILL_GRACE_S`; always reaped (no zombie, no orphan), and its descriptors
        closed at once rather than whenever the Process object is collected. Returns its
        exit code."""
        await self._in_thread(process.join, grace_s)
        if process.is_alive():
            process.terminate()
            await self._in_thread(process.join, KILL_GRACE_S)
        if process.is_alive():
            # SIGKILL also ends a stopped (SIGSTOP) process, which SIGTERM cannot.
            process.kill()
            await self._in_thread(process.join)
        code = process.exitcode
        process.close()  # the sentinel pipe multiprocessing keeps open until then
        return code

    def _drop(self, packet: MediaPacket) -> None:
        self.dropped_packets += 1
        if packet.kind == MediaKind.VIDEO and packet.track == 0:
            self.dropped_video_packets += 1  # the broadcast's frames (``dropped``)
        self.supervisor.metrics.dropped_packets.labels(kind=packet.kind.value).inc()

