"""The ladders a source could get, each with its cost, richest first."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from castway.cost import DEFAULT_CALIBRATION, VideoSource, load_calibration
from castway.model import SourceInfo
from transcoder.capacity import (
    ASSUMED_SOURCE,
    describe,
    ladder_options,
    video_source,
)
from transcoder.ladder import DEFAULT_LADDER, LadderSpec, RungSpec

CAL = DEFAULT_CALIBRATION


def names(spec: LadderSpec, source: VideoSource) -> str:
    return describe(spec, source)


def test_a_1080p60_source_gives_up_the_high_rate_then_the_top_rungs() -> None:
    src = VideoSource(1920, 1080, 60)
    assert [names(o.ladder, src) for o in ladder_options(DEFAULT_LADDER, src, CAL)] == [
        "source,720p60,480p30,360p30,160p30",
        "source,720p30,480p30,360p30,160p30",
        "source,480p30,360p30,160p30",
        "source,360p30,160p30",
        "source,160p30",
        "source",
    ]


def test_a_30_fps_source_has_no_rate_step() -> None:
    src = VideoSource(1280, 720, 30)
    assert [names(o.ladder, src) for o in ladder_options(DEFAULT_LADDER, src, CAL)] == [
        "source,480p30,360p30,160p30", "source,360p30,160p30", "source,160p30", "source"]


@given(st.integers(min_value=90, max_value=2160).map(lambda h: h * 2 // 2 * 1),
       st.sampled_from([24.0, 25.0, 30.0, 50.0, 59.94, 60.0]))
def test_options_run_from_dearest_to_the_passthrough(height: int, fps: float) -> None:
    height -= height % 2
    src = VideoSource(height * 16 // 9 // 2 * 2, height, fps)
    options = ladder_options(DEFAULT_LADDER, src, CAL)
    costs = [o.cost for o in options]
    assert costs == sorted(costs, reverse=True)
    assert options[-1].ladder.rungs == () and options[-1].cost == CAL.broadcast_s


def test_a_ladder_without_passthrough_ends_on_its_smallest_rung() -> None:
    spec = LadderSpec((RungSpec("720p", 720, 2800), RungSpec("360p", 360, 800)),
                      source=False)
    options = ladder_options(spec, VideoSource(1920, 1080, 30), CAL)
    assert [o.ladder.rungs[0].name for o in options] == ["720p", "360p"]


def test_what_the_publisher_left_out_is_costed_as_the_dearest_source() -> None:
    assert video_source(None) == ASSUMED_SOURCE
    assert video_source(SourceInfo(width=1280, height=720)) == VideoSource(1280, 720, 60.0)
    assert video_source(SourceInfo(width=1280, height=720, fps=30.0, video_codec="hevc")) \
        == VideoSource(1280, 720, 30.0, "hevc")


def test_the_calibration_file_in_the_data_directory_is_used(tmp_path: Path) -> None:
    assert load_calibration(None, tmp_path) == (CAL, False)
    (tmp_path / "calibration.json").write_text(CAL.to_json())
    assert load_calibration(None, tmp_path) == (CAL, True)
    with pytest.raises(ValueError):
        load_calibration(tmp_path / "missing.json", tmp_path)
