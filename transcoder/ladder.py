"""The ABR ladder: which renditions a broadcast gets (``CASTWAY_LADDER``: ``auto``,
``source`` or a JSON ladder file), resolved against the source by :func:`resolve_ladder`.

Design: docs/transcoder.md, "Default ladder".
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from castway.layout import valid_component
from castway.model import SOURCE_RENDITION

SOURCE = SOURCE_RENDITION
ENCODERS = ("libx264", "h264_nvenc")


class LadderError(ValueError):
    """A ladder setting or ladder file is invalid."""


@dataclass(frozen=True, slots=True)
class RungSpec:
    """One rung as configured: a height, its bitrate at up to 30 fps, its frame-rate cap."""

    name: str
    height: int
    video_bitrate_kbps: int
    max_fps: float = 60.0


@dataclass(frozen=True, slots=True)
class LadderSpec:
    rungs: tuple[RungSpec, ...]
    source: bool = True  # include the passthrough rendition
    encoder: str = "libx264"  # or "h264_nvenc": used when it opens, else libx264


@dataclass(frozen=True, slots=True)
class Rung:
    """One encoded rendition, resolved against the actual source."""

    name: str
    width: int
    height: int
    fps: float
    video_bitrate_kbps: int


# Bitrates at 30 fps; frame rates above 30 get HIGH_FPS_FACTOR more. A high-frame-rate
# source keeps its rate in the 720p and 1080p rungs; the rungs below 720p are capped at
# 30 fps, as the big platforms do: their viewers are on small screens or thin links,
# where the bits buy more as resolution than as motion, and at half the encoding CPU.
LOW_RUNG_MAX_FPS = 30.0
DEFAULT_RUNGS: tuple[RungSpec, ...] = (
    RungSpec("1080p", 1080, 5000),
    RungSpec("720p", 720, 2800),
    RungSpec("480p", 480, 1400, max_fps=LOW_RUNG_MAX_FPS),
    RungSpec("360p", 360, 800, max_fps=LOW_RUNG_MAX_FPS),
    RungSpec("160p", 160, 250, max_fps=LOW_RUNG_MAX_FPS),
)
HIGH_FPS_FACTOR = 1.5
DEFAULT_LADDER = LadderSpec(DEFAULT_RUNGS, source=True)
SOURCE_ONLY = LadderSpec((), source=True)


def load_ladder(setting: str) -> LadderSpec:
    """The ladder named by the ``ladder`` setting."""
    if setting == "auto":
        return DEFAULT_LADDER
    if setting == SOURCE:
        return SOURCE_ONLY
    path = Path(setting)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LadderError(f"cannot read ladder file {setting!r}: {exc}") from exc
    return parse_ladder(raw)


def parse_ladder(raw: object) -> LadderSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("rungs", []), list):
        raise LadderError("a ladder is an object with a 'rungs' list")
    rungs: list[RungSpec] = []
    names: set[str] = set()
    for item in raw.get("rungs", []):
        if not isinstance(item, dict):
            raise LadderError("each rung is an object")
        try:
            height = int(item["height"])
            bitrate = int(item["video_bitrate_kbps"])
            max_fps = float(item.get("max_fps", 60.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise LadderError(f"rung {item!r}: needs integer height and "
                              f"video_bitrate_kbps") from exc
        name = str(item.get("name", f"{height}p"))
        if height < 16 or height % 2 or bitrate <= 0 or max_fps <= 0:
            raise LadderError(f"rung {name!r}: height must be even and >= 16, bitrate "
                              f"and max_fps positive")
        if name in names or name == SOURCE:
            raise LadderError(f"rung name {name!r} is reserved or repeated")
        if not valid_component(name):  # it names URLs and storage keys (castway.layout)
            raise LadderError(f"rung name {name!r}: 1 to 64 of A-Z a-z 0-9 '_' '-'")
        names.add(name)
        rungs.append(RungSpec(name, height, bitrate, max_fps))
    source = raw.get("source", True)
    if not isinstance(source, bool):
        raise LadderError("'source' is true or false")
    if not rungs and not source:
        raise LadderError("a ladder needs at least one rendition")
    encoder = raw.get("encoder", "libx264")
    if encoder not in ENCODERS:
        raise LadderError(f"'encoder' is one of {', '.join(ENCODERS)}")
    return LadderSpec(tuple(sorted(rungs, key=lambda r: -r.height)), source, encoder)


def rung_rate(source_fps: float, max_fps: float) -> float:
    """A rung's frame rate: the source's, or above the cap, the source's divided by the
    smallest whole number that brings it under (60 -> 30, 50 -> 25, 59.94 -> 29.97), so
    the rung keeps every n-th frame at an even pace."""
    if source_fps <= 0:
        return max_fps
    if source_fps <= max_fps:
        return source_fps
    return source_fps / math.ceil(source_fps / max_fps - 1e-9)


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def resolve_ladder(spec: LadderSpec, width: int, height: int, fps: float,
                   keep: Collection[str] = ()) -> list[Rung]:
    """The encoded rungs for a ``width`` x ``height`` source at ``fps``.

    Rungs at or above the source height are dropped (they would upscale or duplicate
    the passthrough), except those named in ``keep``: a broadcast whose source changes
    size keeps every variant it has published, since players hold the master they
    loaded and a variant that stops would stall them. A ladder without passthrough
    keeps one rung at the source size instead, so it never ends up empty.
    """
    out: list[Rung] = []
    aspect = width / height if height else 16 / 9
    for r in spec.rungs:
        if r.height >= height and r.name not in keep:
            continue
        rung_fps = rung_rate(fps, r.max_fps)
        factor = HIGH_FPS_FACTOR if rung_fps > 31 else 1.0
        out.append(Rung(r.name, _even(r.height * aspect), r.height, rung_fps,
                        int(r.video_bitrate_kbps * factor)))
    if not spec.source and not out and spec.rungs:
        top = spec.rungs[0]
        rung_fps = rung_rate(fps, top.max_fps)
        out.append(Rung(top.name, _even(width), _even(height), rung_fps,
                        top.video_bitrate_kbps))
    return out
