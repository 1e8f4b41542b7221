"""The ladder castway asks an encoder to send (castway.encoder_ladder): the platform's
rungs below the streamer's output, on the streamer's hardware encoder, within the
streamer's limits, the lowest rungs left to castway first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any

from castway.encoder_ladder import (
    AMD,
    APPLE_ENCODER,
    INTEL,
    NVENC_30,
    NVENC_31,
    NVIDIA,
    ClientAsk,
    EncoderPlan,
    TrackPlan,
    plan_encoder_ladder,
    spread,
)


def plan(**kw: Any) -> tuple[list[tuple[int, int, float, int]], EncoderPlan]:
    ask: dict[str, Any] = {"width": 1920, "height": 1080, "fps": Fraction(60),
                           "gpu_vendors": (NVIDIA,), "client_major": 31}
    got = plan_encoder_ladder(ClientAsk(**(ask | kw)), keyint_s=2, max_tracks=9)
    return [(t.width, t.height, float(t.fps), t.bitrate_kbps) for t in got.tracks], got


def test_a_1080p60_streamer_with_a_gpu_is_asked_for_the_platform_ladder() -> None:
    tracks, got = plan()
    assert tracks == [(1920, 1080, 60, 7500), (1280, 720, 60, 4200), (854, 480, 30, 1400),
                      (640, 360, 30, 800), (284, 160, 30, 250)]
    assert got.encoder == NVENC_31 and got.keyint_s == 2
    assert got.left_to_castway == ()


def test_ntsc_rates_are_divided_evenly() -> None:
    tracks, _ = plan(fps=Fraction(60000, 1001))
    _, got = plan(fps=Fraction(60000, 1001))
    assert [t.fps for t in got.tracks] == [Fraction(60000, 1001)] * 2 + [
        Fraction(30000, 1001)] * 3


def test_the_streamers_track_limit_leaves_the_lowest_rungs_to_castway() -> None:
    tracks, got = plan(maximum_video_tracks=3)
    assert [t[1] for t in tracks] == [1080, 720, 480]
    assert got.left_to_castway == ("360p", "160p")


def test_spread_keeps_the_top_and_the_bottom_and_spaces_the_rest_evenly() -> None:
    assert spread(5, 3) == [0, 2, 4]
    assert spread(5, 2) == [0, 4]
    assert spread(5, 1) == [0]
    assert spread(5, 4) == [0, 1, 3, 4]
    assert spread(3, 5) == [0, 1, 2]


def test_a_node_without_the_cores_to_fill_the_ladder_asks_for_tracks_spread_over_it() -> None:
    priced: list[list[int]] = []

    def cost(rungs: Sequence[TrackPlan]) -> float:
        priced.append([r.height for r in rungs])
        return 0.1 * len(rungs)
    ask = ClientAsk(1920, 1080, Fraction(60), (NVIDIA,), client_major=31,
                    maximum_video_tracks=3)
    # Room for castway's rungs: the encoder sends the top, castway the rest.
    got = plan_encoder_ladder(ask, keyint_s=2, max_tracks=9, free_cores=0.5, fill_cost=cost)
    assert [t.height for t in got.tracks] == [1080, 720, 480]
    assert got.left_to_castway == ("360p", "160p") and not got.capacity_note
    assert priced == [[360, 160]]
    # No room: a ladder whole from top to bottom whatever castway can add.
    got = plan_encoder_ladder(ask, keyint_s=2, max_tracks=9, free_cores=0.15, fill_cost=cost)
    assert [t.height for t in got.tracks] == [1080, 480, 160]
    assert got.left_to_castway == ("720p", "360p")
    assert "0.20 cores" in got.capacity_note and "0.15 free" in got.capacity_note
    # Nothing left to castway: nothing to price.
    priced.clear()
    plan_encoder_ladder(replace(ask, maximum_video_tracks=None), keyint_s=2, max_tracks=9,
                        free_cores=0.0, fill_cost=cost)
    assert priced == []


def test_the_upload_budget_drops_rungs_from_the_bottom_then_lowers_the_top() -> None:
    tracks, got = plan(maximum_aggregate_bitrate_kbps=12_000)
    assert [t[1] for t in tracks] == [1080, 720]  # 7500 + 4200 + 160 audio
    assert got.left_to_castway == ("480p", "360p", "160p")
    tracks, _ = plan(maximum_aggregate_bitrate_kbps=6_160)
    assert tracks == [(1920, 1080, 60, 6000)]
    _, got = plan(maximum_aggregate_bitrate_kbps=400)
    assert got.encoder is None and "upload budget" in (got.warning or "")


def test_the_encoder_is_the_one_on_the_gpu_obs_composes_on() -> None:
    assert plan(gpu_vendors=(AMD,))[1].encoder == "h264_texture_amf"
    assert plan(gpu_vendors=(INTEL,))[1].encoder == "obs_qsv11_v2"
    assert plan(gpu_vendors=(INTEL, NVIDIA), composition_gpu=1)[1].encoder == NVENC_31
    assert plan(client_major=30)[1].encoder == NVENC_30
    assert plan(gpu_vendors=(), macos=True)[1].encoder == APPLE_ENCODER


def test_without_a_hardware_encoder_the_streamer_is_told_to_send_one_track() -> None:
    tracks, got = plan(gpu_vendors=(0x1234,))
    assert tracks == [] and got.encoder is None
    assert "No hardware video encoder" in (got.warning or "")


def test_a_small_output_gets_only_the_rungs_below_it() -> None:
    tracks, _ = plan(width=854, height=480, fps=Fraction(30))
    assert tracks == [(854, 480, 30, 1400), (640, 360, 30, 800), (284, 160, 30, 250)]
