"""Transcode cost: what a broadcast costs and what a node can do, in one unit.

**The unit is the core**: CPU-seconds spent per second of media. A broadcast that costs
0.5 keeps half a core busy for as long as it runs in real time; a node with 2 cores and a
utilisation target of 85 % has a capacity of 1.7. The CPU counted is the transcoder
child's (user + system, all its threads: libav's decoder, swscale and x264 threads
included), plus a fixed share per broadcast for what the ingest process spends on it
(RTMP, packaging hand-off, the sink).

Cost is *estimated* when the broadcast's source is known (onMetaData and the first
sequence header), from a per-node :class:`Calibration` (``castway calibrate``: a short
encode of generated video with the transcoder's own encoder settings), and *measured*
while it runs (the child's CPU time per second of media). The node counts each broadcast
at the larger of the two (:class:`CostLedger`): an estimate that turns out low is
corrected by the measurement, one that turns out high is kept, so the node never
promises more than it measured.

Everything here is pure and synchronous (no clock, no process table): the transcoder
supervisor feeds it measurements, the node agent asks it for admission.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

#: Decoding CPU relative to H.264 at the same pixel rate (libavcodec's software
#: decoders; HEVC and AV1 are not calibrated on the node, these are their usual ratios).
DECODE_FACTOR: dict[str, float] = {"h264": 1.0, "hevc": 1.6, "vp9": 1.5, "av1": 2.0}
#: A codec we know nothing about decodes like the dearest one we know.
UNKNOWN_DECODE_FACTOR = 2.0


class CostError(ValueError):
    """A calibration file or value that cannot be used."""


class AdmissionMode(StrEnum):
    """What a node does with a publish whose full ladder does not fit (docs/scheduler.md)."""

    REDUCE = "reduce"  # the richest ladder that fits, down to source passthrough
    REFUSE = "refuse"  # an RTMP error: the encoder retries and lands on another node
    SLOTS = "slots"  # before cost admission: NODE_CAPACITY broadcasts, full ladders


@dataclass(frozen=True, slots=True)
class Calibration:
    """What transcoding costs on this node, measured by ``castway calibrate``.

    Encoding one frame costs ``encode_frame_s + megapixels * encode_mpx_s`` CPU-seconds
    (a two-size fit: x264 has a per-frame cost that small rungs feel); decoding costs
    ``decode_mpx_s`` and scaling ``scale_mpx_s`` per megapixel; ``broadcast_s`` is the
    fixed CPU-seconds per second of any broadcast (passthrough packaging, audio, the
    child's loop); ``ingest_mbit_s`` the ingest process's CPU-seconds per second for each
    Mbit/s a broadcast sends (RTMP, the pipes, the sink's parts and segments), which
    ``castway calibrate`` does not measure: its default is what ``castway bench capacity``
    measured on the development machine (BENCHMARKS.md).
    """

    cores: float
    encode_frame_s: float
    encode_mpx_s: float
    decode_mpx_s: float
    scale_mpx_s: float
    broadcast_s: float
    preset: str = "veryfast"
    ingest_mbit_s: float = 0.015
    measured: str = ""  # when and how (free text, for operators)

    def __post_init__(self) -> None:
        values = (self.encode_frame_s, self.encode_mpx_s, self.decode_mpx_s,
                  self.scale_mpx_s, self.broadcast_s, self.ingest_mbit_s)
        if self.cores <= 0 or any(v < 0 for v in values):
            raise CostError("a calibration needs cores > 0 and no negative cost")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        try:
            raw = json.loads(text)
            return cls(cores=float(raw["cores"]),
                       encode_frame_s=float(raw["encode_frame_s"]),
                       encode_mpx_s=float(raw["encode_mpx_s"]),
                       decode_mpx_s=float(raw["decode_mpx_s"]),
                       scale_mpx_s=float(raw["scale_mpx_s"]),
                       broadcast_s=float(raw["broadcast_s"]),
                       preset=str(raw.get("preset", "veryfast")),
                       measured=str(raw.get("measured", "")),
                       ingest_mbit_s=float(raw.get("ingest_mbit_s", 0.015)))
        except (ValueError, KeyError, TypeError) as exc:
            raise CostError(f"not a calibration: {exc}") from exc


#: Used until the node is calibrated: measured with ``castway calibrate`` on the 2-core
#: development machine (x264 veryfast). A node that runs with it logs a warning.
DEFAULT_CALIBRATION = Calibration(cores=2.0, encode_frame_s=0.0003, encode_mpx_s=0.0087,
                                  decode_mpx_s=0.00125, scale_mpx_s=0.0023,
                                  broadcast_s=0.005, measured="built-in default")


# A node's calibration lives in DATA_DIR/calibration.json unless the settings name a file.
CALIBRATION_FILE = "calibration.json"


def calibration_path(data_dir: Path) -> Path:
    return Path(data_dir) / CALIBRATION_FILE


def load_calibration(path: Path | None, data_dir: Path) -> tuple[Calibration, bool]:
    """The node's calibration: from ``path`` (the ``calibration_file`` setting), else
    DATA_DIR/calibration.json; the built-in default when there is none (False)."""
    target = path or calibration_path(data_dir)
    try:
        return Calibration.from_json(target.read_text()), True
    except FileNotFoundError:
        if path is not None:
            raise CostError(f"calibration file {path} not found") from None
        return DEFAULT_CALIBRATION, False
    except OSError as exc:
        raise CostError(f"cannot read {target}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class VideoSource:
    width: int
    height: int
    fps: float
    codec: str = "h264"


@dataclass(frozen=True, slots=True)
class Encode:
    """One encoded rendition: its size and frame rate."""

    width: int
    height: int
    fps: float


def _mpx(width: int, height: int) -> float:
    return width * height / 1e6


def estimate(source: VideoSource, encodes: Sequence[Encode], cal: Calibration, *,
             passthrough_tracks: int = 0, input_kbps: float = 0.0) -> float:
    """The cost (cores) of transcoding ``source`` into ``encodes`` plus its passthrough
    and ``passthrough_tracks`` more renditions the encoder sent (E-RTMP multitrack).

    A passthrough-only broadcast decodes nothing (the pipeline stops decoding once the
    source size is known), so it costs ``broadcast_s`` alone; each encoder-sent track is
    packaged like one more (measured: six 1080p30 five-track broadcasts, 0.043 cores each
    in the transcoder for 6 x 0.0071 estimated, BENCHMARKS.md). ``input_kbps`` is what
    the publisher sends, all tracks: the ingest process's share (``ingest_mbit_s``).
    """
    cost = cal.broadcast_s * (1 + passthrough_tracks) + cal.ingest_mbit_s * input_kbps / 1000
    if not encodes:
        return cost
    factor = DECODE_FACTOR.get(source.codec, UNKNOWN_DECODE_FACTOR)
    cost += factor * _mpx(source.width, source.height) * source.fps * cal.decode_mpx_s
    for e in encodes:
        fps = min(e.fps, source.fps) if source.fps > 0 else e.fps
        mpx = _mpx(e.width, e.height)
        cost += fps * (cal.encode_frame_s + mpx * (cal.encode_mpx_s + cal.scale_mpx_s))
    return cost


def node_capacity(cal: Calibration, utilisation_target: float) -> float:
    """The cost a node takes on: its cores times the utilisation target."""
    if not 0.0 < utilisation_target <= 1.0:
        raise CostError("the utilisation target is a fraction in (0, 1]")
    return cal.cores * utilisation_target


@dataclass(frozen=True, slots=True)
class Option(Generic[T]):
    """A ladder the node could give a broadcast, with its estimated cost."""

    ladder: T
    cost: float


@dataclass(frozen=True, slots=True)
class Choice(Generic[T]):
    """The ladder given (None: refused), and whether it is less than the richest."""

    option: Option[T] | None
    reduced: bool = False

    @property
    def refused(self) -> bool:
        return self.option is None


def choose(options: Sequence[Option[T]], free: float, mode: AdmissionMode) -> Choice[T]:
    """The ladder a broadcast gets when ``free`` cores are left on the node.

    ``options`` run from the richest to the poorest; the last is source passthrough.
    ``reduce``: the first that fits, else the passthrough (which always goes: its cost is
    the broadcast's fixed share, kept inside the margin the utilisation target leaves).
    ``refuse``: the richest if it fits, else None. ``slots``: the richest, whatever it
    costs (what castway did before cost admission).
    """
    if not options:
        raise CostError("no ladder to choose from")
    richest = options[0]
    if mode is AdmissionMode.SLOTS or richest.cost <= free:
        return Choice(richest)
    if mode is AdmissionMode.REFUSE:
        return Choice(None)
    for option in options[1:]:
        if option.cost <= free:
            return Choice(option, reduced=True)
    return Choice(options[-1], reduced=len(options) > 1)


def admit_publish(mode: AdmissionMode, free: float, reserve: float, active: int,
                  max_broadcasts: int, margin: float = 0.0) -> str | None:
    """None to accept a publish whose source is not known yet, else why not.

    RTMP answers ``publish`` before the publisher describes its source, so the node
    admits on a reservation. ``refuse`` needs room for the full ladder of the reference
    source. ``reduce`` needs room for a passthrough, and a passthrough always fits: it may
    use the ``margin`` the utilisation target leaves below the node's cores (its cost is
    the broadcast's fixed share, a hundredth of a core), never past the cores themselves.
    ``slots`` counts broadcasts only. Every mode keeps ``max_broadcasts`` as a ceiling.
    """
    if active >= max_broadcasts:
        return f"ingest node is full ({active}/{max_broadcasts} broadcasts)"
    room = free + margin if mode is AdmissionMode.REDUCE else free
    if mode is AdmissionMode.SLOTS or room >= reserve:
        return None
    return (f"ingest node is full (transcode capacity: {max(free, 0.0):.2f} of the "
            f"{reserve:.2f} cores a broadcast needs are free)")


@dataclass(slots=True)
class _Entry:
    estimate: float
    measured: float | None = None


@dataclass(slots=True)
class CostLedger:
    """The cost of every broadcast on one node, against its capacity.

    A broadcast is counted at ``max(estimate, measured)``; before its source is known it
    holds a reservation (its estimate until then).
    """

    capacity: float
    mode: AdmissionMode = AdmissionMode.REDUCE
    #: what a publish must find free to be admitted before its source is known
    publish_reserve: float = 0.0
    #: the node's cores beyond its capacity (what the utilisation target leaves): room
    #: for passthroughs only, which ``reduce`` always admits
    margin: float = 0.0
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def reserve(self, broadcast_id: str, cost: float) -> None:
        """Count ``broadcast_id`` at ``cost`` (a new estimate replaces the old one; a
        measurement already taken stays)."""
        entry = self._entries.get(broadcast_id)
        if entry is None:
            self._entries[broadcast_id] = _Entry(cost)
        else:
            entry.estimate = cost

    def measure(self, broadcast_id: str, cost: float) -> None:
        entry = self._entries.get(broadcast_id)
        if entry is not None:
            entry.measured = cost

    def release(self, broadcast_id: str) -> None:
        self._entries.pop(broadcast_id, None)

    def cost_of(self, broadcast_id: str) -> float:
        entry = self._entries.get(broadcast_id)
        if entry is None:
            return 0.0
        return max(entry.estimate, entry.measured or 0.0)

    def free_for(self, broadcast_id: str) -> float:
        """Free cost as seen by ``broadcast_id`` deciding its ladder (its own
        reservation given back)."""
        return self.free + self.cost_of(broadcast_id)

    @property
    def used(self) -> float:
        return sum(self.cost_of(b) for b in self._entries)

    @property
    def costs(self) -> tuple[float, ...]:
        """Each broadcast's cost, as :attr:`used` counts it (3 decimals: a heartbeat's)."""
        return tuple(round(self.cost_of(b), 3) for b in self._entries)

    @property
    def free(self) -> float:
        return self.capacity - self.used

    @property
    def estimate_error(self) -> float | None:
        """Mean relative error of the estimates that have a measurement,
        (measured - estimate) / estimate: positive when estimates run low."""
        errors = [(e.measured - e.estimate) / e.estimate for e in self._entries.values()
                  if e.measured is not None and e.estimate > 0]
        return sum(errors) / len(errors) if errors else None

    def admission(self, active: int, max_broadcasts: int) -> str | None:
        return admit_publish(self.mode, self.free, self.publish_reserve, active,
                             max_broadcasts, self.margin)


def relative_error(estimated: float, measured: float) -> float:
    """(measured - estimated) / estimated; 0 when nothing was estimated."""
    return (measured - estimated) / estimated if estimated > 0 else 0.0


@dataclass(slots=True)
class CpuMeter:
    """A broadcast's measured cost: CPU-seconds per media-second over a sliding window
    of (media seconds, CPU seconds) samples, skipping the child's start-up (imports,
    encoder set-up) by starting after ``warmup_media_s``."""

    window_media_s: float = 20.0
    warmup_media_s: float = 4.0
    min_span_media_s: float = 5.0
    _samples: list[tuple[float, float]] = field(default_factory=list)

    def reset(self) -> None:
        """A new child (a restart): its CPU counter starts again."""
        self._samples.clear()

    def sample(self, media_s: float, cpu_s: float) -> float | None:
        """Add a sample; the cost over the window once it spans enough media."""
        if media_s < self.warmup_media_s:
            return None
        if self._samples and (media_s < self._samples[-1][0] or cpu_s < self._samples[-1][1]):
            self._samples.clear()  # a counter went back: a new child or a new clock
        self._samples.append((media_s, cpu_s))
        while len(self._samples) > 2 and media_s - self._samples[1][0] >= self.window_media_s:
            self._samples.pop(0)
        first_media, first_cpu = self._samples[0]
        span = media_s - first_media
        if span < self.min_span_media_s:
            return None
        return (cpu_s - first_cpu) / span
