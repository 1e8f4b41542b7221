from __future__ import annotations

import json
from pathlib import Path

import pytest

from transcoder.ladder import (
    DEFAULT_LADDER,
    SOURCE_ONLY,
    LadderError,
    LadderSpec,
    RungSpec,
    load_ladder,
    parse_ladder,
    resolve_ladder,
)


@pytest.mark.parametrize(("width", "height", "fps", "expected"), [
    # 1080p30: every rung below the source, 30 fps everywhere.
    (1920, 1080, 30.0, [("720p", 1280, 720, 30.0, 2800), ("480p", 854, 480, 30.0, 1400),
                        ("360p", 640, 360, 30.0, 800), ("160p", 284, 160, 30.0, 250)]),
    # 1080p60: 720p keeps 60 fps with more bits, the rungs below 720p are capped at 30.
    (1920, 1080, 60.0, [("720p", 1280, 720, 60.0, 4200), ("480p", 854, 480, 30.0, 1400),
                        ("360p", 640, 360, 30.0, 800), ("160p", 284, 160, 30.0, 250)]),
    # 50 fps: halved under the cap (every other frame), not 30 (an uneven pace)
    (1280, 720, 50.0, [("480p", 854, 480, 25.0, 1400), ("360p", 640, 360, 25.0, 800),
                       ("160p", 284, 160, 25.0, 250)]),
    # 720p25: no 1080p (upscale) nor 720p (duplicates the source); never above 25 fps.
    (1280, 720, 25.0, [("480p", 854, 480, 25.0, 1400), ("360p", 640, 360, 25.0, 800),
                       ("160p", 284, 160, 25.0, 250)]),
    # 4:3 source keeps its aspect ratio, widths even.
    (640, 480, 30.0, [("360p", 480, 360, 30.0, 800), ("160p", 214, 160, 30.0, 250)]),
    # Tiny source: nothing below it but passthrough.
    (256, 144, 30.0, []),
])
def test_default_ladder_is_derived_from_the_source(
        width: int, height: int, fps: float,
        expected: list[tuple[str, int, int, float, int]]) -> None:
    rungs = resolve_ladder(DEFAULT_LADDER, width, height, fps)
    assert [(r.name, r.width, r.height, r.fps, r.video_bitrate_kbps) for r in rungs] == expected


def test_source_setting_is_passthrough_only() -> None:
    assert load_ladder("source") == SOURCE_ONLY
    assert resolve_ladder(SOURCE_ONLY, 1920, 1080, 30) == []
    assert load_ladder("auto") == DEFAULT_LADDER


def test_ladder_file(tmp_path: Path) -> None:
    path = tmp_path / "ladder.json"
    path.write_text(json.dumps({"source": False, "rungs": [
        {"name": "low", "height": 240, "video_bitrate_kbps": 400, "max_fps": 15},
        {"height": 480, "video_bitrate_kbps": 1200}]}))
    spec = load_ladder(str(path))
    assert spec == LadderSpec((RungSpec("480p", 480, 1200), RungSpec("low", 240, 400, 15.0)),
                              source=False)
    rungs = resolve_ladder(spec, 1280, 720, 30)
    assert [(r.name, r.fps) for r in rungs] == [("480p", 30), ("low", 15)]


def test_ladder_without_passthrough_never_ends_up_empty() -> None:
    spec = LadderSpec((RungSpec("720p", 720, 2800),), source=False)
    rungs = resolve_ladder(spec, 640, 360, 30)
    assert [(r.width, r.height) for r in rungs] == [(640, 360)]


@pytest.mark.parametrize("raw", [
    [], {"rungs": "x"}, {"rungs": [{"height": 240}]}, {"rungs": [{"height": 241,
                                                                   "video_bitrate_kbps": 1}]},
    {"rungs": [{"name": "source", "height": 240, "video_bitrate_kbps": 1}]},
    {"rungs": [{"name": "hd 720", "height": 240, "video_bitrate_kbps": 1}]},  # in URLs
    {"rungs": [{"name": "../x", "height": 240, "video_bitrate_kbps": 1}]},  # and keys
    {"rungs": [{"name": "a", "height": 240, "video_bitrate_kbps": 1},
               {"name": "a", "height": 160, "video_bitrate_kbps": 1}]},
    {"rungs": [], "source": False}, {"source": "yes"},
])
def test_bad_ladders_are_refused(raw: object) -> None:
    with pytest.raises(LadderError):
        parse_ladder(raw)


def test_unreadable_ladder_file(tmp_path: Path) -> None:
    with pytest.raises(LadderError):
        load_ladder(str(tmp_path / "missing.json"))


def test_ladder_file_may_ask_for_nvenc() -> None:
    spec = parse_ladder({"encoder": "h264_nvenc",
                         "rungs": [{"height": 240, "video_bitrate_kbps": 400}]})
    assert spec.encoder == "h264_nvenc"
    assert parse_ladder({"rungs": []}).encoder == "libx264"
    with pytest.raises(LadderError):
        parse_ladder({"encoder": "x265", "rungs": []})


def test_rungs_a_broadcast_published_are_kept_when_the_source_shrinks() -> None:
    first = resolve_ladder(DEFAULT_LADDER, 1280, 720, 30.0)
    assert [r.name for r in first] == ["480p", "360p", "160p"]
    smaller = resolve_ladder(DEFAULT_LADDER, 640, 480, 30.0, keep={r.name for r in first})
    assert [(r.name, r.width, r.height) for r in smaller] == [
        ("480p", 640, 480), ("360p", 480, 360), ("160p", 214, 160)]
    assert [r.name for r in resolve_ladder(DEFAULT_LADDER, 640, 480, 30.0)] == ["360p",
                                                                                  "160p"]
