"""The ABR ladder: which renditions a broadcast gets (``CASTWAY_LADDER``: ``auto``,
``source`` or a JSON ladder file), resolved against the source by :func:`resolve_ladder`.

Design: docs/transcoder.md, "Default ladder".
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from castway.layout import valid_component
from castway.model import SOURCE_RENDITION
from castway.rungs import HIGH_FPS_FACTOR, PLATFORM_RUNGS, rung_rate

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


# castway's own ladder is the platform's rung table (castway.rungs), the one an encoder
# that sends its own ladder is asked for too.
DEFAULT_RUNGS: tuple[RungSpec, ...] = tuple(
    RungSpec(r.name, r.height, r.video_bitrate_kbps, r.max_fps) for r in PLATFORM_RUNGS)
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
