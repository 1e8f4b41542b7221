"""The platform's rung table: the heights castway offers viewers, each with its bit rate at
up to 30 fps and its frame-rate cap. The transcoder builds its default ladder from it
(transcoder.ladder), and an encoder that sends its own ladder is asked for the same rungs
(castway.encoder_ladder), so a rendition reads the same whoever encoded it.

Design: docs/transcoder.md, "Default ladder" and "Encoder-sent ladders".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A high-frame-rate source keeps its rate in the 720p and 1080p rungs; the rungs below
# 720p are capped at 30 fps, as the big platforms do: their viewers are on small screens
# or thin links, where the bits buy more as resolution than as motion.
LOW_RUNG_MAX_FPS = 30.0
# Rungs above 30 fps get this much more than their 30 fps bit rate.
HIGH_FPS_FACTOR = 1.5


@dataclass(frozen=True, slots=True)
class PlatformRung:
    name: str
    height: int
    video_bitrate_kbps: int  # at up to 30 fps
    max_fps: float = 60.0


PLATFORM_RUNGS: tuple[PlatformRung, ...] = (
    PlatformRung("1080p", 1080, 5000),
    PlatformRung("720p", 720, 2800),
    PlatformRung("480p", 480, 1400, max_fps=LOW_RUNG_MAX_FPS),
    PlatformRung("360p", 360, 800, max_fps=LOW_RUNG_MAX_FPS),
    PlatformRung("160p", 160, 250, max_fps=LOW_RUNG_MAX_FPS),
)


def nearest_rung(height: int,
                 rungs: tuple[PlatformRung, ...] = PLATFORM_RUNGS) -> PlatformRung:
    """The rung of the table whose height is nearest (what a size is counted as when
    nothing says its bit rate)."""
    return min(rungs, key=lambda r: abs(r.height - height))


def rung_rate(source_fps: float, max_fps: float) -> float:
    """A rung's frame rate: the source's, or above the cap, the source's divided by the
    smallest whole number that brings it under (60 -> 30, 50 -> 25, 59.94 -> 29.97), so
    the rung keeps every n-th frame at an even pace."""
    if source_fps <= 0:
        return max_fps
    if source_fps <= max_fps:
        return source_fps
    return source_fps / rate_divisor(source_fps, max_fps)


def rate_divisor(source_fps: float, max_fps: float) -> int:
    """The whole number a source rate is divided by to come under ``max_fps``."""
    if source_fps <= max_fps or source_fps <= 0:
        return 1
    return math.ceil(source_fps / max_fps - 1e-9)


def rung_bitrate_kbps(rung: PlatformRung, fps: float) -> int:
    factor = HIGH_FPS_FACTOR if fps > 31 else 1.0
    return int(rung.video_bitrate_kbps * factor)
