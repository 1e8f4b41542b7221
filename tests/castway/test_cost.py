"""The cost model: estimates, the ladder choice and publish admission never promise more
than the node has."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from castway.cost import (
    DEFAULT_CALIBRATION,
    AdmissionMode,
    Calibration,
    CostError,
    CostLedger,
    CpuMeter,
    Encode,
    Option,
    VideoSource,
    admit_publish,
    choose,
    estimate,
    node_capacity,
)

CAL = DEFAULT_CALIBRATION
PASSTHROUGH = CAL.broadcast_s

costs = st.floats(min_value=0.0, max_value=4.0, allow_nan=False)


@st.composite
def ladders(draw: st.DrawFn) -> list[Option[int]]:
    """Options richest first (non-increasing cost), ending on the passthrough."""
    dear = sorted(draw(st.lists(st.floats(min_value=PASSTHROUGH, max_value=4.0),
                                max_size=8)), reverse=True)
    return [Option(i, c) for i, c in enumerate([*dear, PASSTHROUGH])]


def test_a_passthrough_costs_its_fixed_share_only() -> None:
    assert estimate(VideoSource(1920, 1080, 60), [], CAL) == CAL.broadcast_s


def test_each_track_an_encoder_sends_is_packaged_at_a_passthroughs_cost() -> None:
    source = VideoSource(1920, 1080, 30.0)
    assert estimate(source, [], CAL, passthrough_tracks=4) == pytest.approx(
        5 * CAL.broadcast_s)


def test_more_rungs_and_more_frames_cost_more() -> None:
    src = VideoSource(1920, 1080, 60)
    one = estimate(src, [Encode(1280, 720, 30)], CAL)
    assert estimate(src, [Encode(1280, 720, 60)], CAL) > one
    assert estimate(src, [Encode(1280, 720, 30), Encode(640, 360, 30)], CAL) > one
    # a rung cannot run faster than its source
    assert estimate(VideoSource(1920, 1080, 30), [Encode(1280, 720, 60)], CAL) == \
        estimate(VideoSource(1920, 1080, 30), [Encode(1280, 720, 30)], CAL)


def test_dearer_codecs_cost_more_to_decode() -> None:
    rung = [Encode(1280, 720, 30)]
    assert estimate(VideoSource(1920, 1080, 30, "hevc"), rung, CAL) > \
        estimate(VideoSource(1920, 1080, 30, "h264"), rung, CAL)


def test_capacity_is_cores_times_the_target() -> None:
    assert node_capacity(CAL, 0.85) == pytest.approx(CAL.cores * 0.85)
    with pytest.raises(CostError):
        node_capacity(CAL, 1.5)


def test_a_calibration_survives_its_file() -> None:
    assert Calibration.from_json(CAL.to_json()) == CAL
    with pytest.raises(CostError):
        Calibration.from_json('{"cores": 2}')


@given(ladders(), costs)
def test_reduce_gives_the_richest_ladder_that_fits_else_the_passthrough(
        options: list[Option[int]], free: float) -> None:
    choice = choose(options, free, AdmissionMode.REDUCE)
    assert choice.option is not None
    fitting = [o for o in options if o.cost <= free]
    if fitting:
        assert choice.option == fitting[0]
    else:
        assert choice.option == options[-1]
    assert choice.reduced == (choice.option != options[0])


@given(ladders(), costs)
def test_refuse_gives_the_full_ladder_or_nothing(options: list[Option[int]],
                                                  free: float) -> None:
    choice = choose(options, free, AdmissionMode.REFUSE)
    if options[0].cost <= free:
        assert choice.option == options[0] and not choice.reduced
    else:
        assert choice.refused


@given(ladders(), costs)
def test_slots_ignore_the_cost(options: list[Option[int]], free: float) -> None:
    assert choose(options, free, AdmissionMode.SLOTS).option == options[0]


@given(st.lists(ladders(), min_size=1, max_size=300),
       st.floats(min_value=0.5, max_value=8.0))
def test_a_node_that_reduces_never_over_commits(arrivals: list[list[Option[int]]],
                                                capacity: float) -> None:
    """Publishes one after the other, each admitted on its reservation and then given a
    ladder: the encoded work never takes the node past its capacity; passthroughs (the
    fixed share) always go, into the margin below the cores, never past the cores."""
    margin = capacity * 0.15 / 0.85
    ledger = CostLedger(capacity, AdmissionMode.REDUCE, publish_reserve=PASSTHROUGH,
                        margin=margin)
    for i, options in enumerate(arrivals):
        if ledger.admission(active=i, max_broadcasts=1000) is not None:
            assert ledger.free + margin < PASSTHROUGH  # the cores are full
            break
        ledger.reserve(str(i), ledger.publish_reserve)
        option = choose(options, ledger.free_for(str(i)), ledger.mode).option
        assert option is not None
        ledger.reserve(str(i), option.cost)
        assert ledger.used <= capacity + 1e-9 or option.cost == PASSTHROUGH
        assert ledger.used <= capacity + margin + 1e-9


def test_reduce_admits_a_passthrough_into_the_margin_when_measurements_ran_high() -> None:
    ledger = CostLedger(1.7, AdmissionMode.REDUCE, publish_reserve=0.005, margin=0.3)
    ledger.reserve("a", 1.0)
    ledger.measure("a", 1.72)  # the estimate ran low: past the capacity
    assert ledger.admission(active=1, max_broadcasts=8) is None
    assert choose([Option("full", 0.3), Option("source", 0.005)], ledger.free,
                  AdmissionMode.REDUCE).option == Option("source", 0.005)
    ledger.measure("a", 2.0)  # the cores themselves are spent
    assert ledger.admission(active=1, max_broadcasts=8) is not None


@given(st.floats(min_value=0.1, max_value=3.0), st.floats(min_value=0.1, max_value=3.0))
def test_a_broadcast_counts_at_the_larger_of_estimate_and_measurement(
        estimated: float, measured: float) -> None:
    ledger = CostLedger(4.0)
    ledger.reserve("b", estimated)
    ledger.measure("b", measured)
    assert ledger.used == max(estimated, measured)
    assert ledger.estimate_error == pytest.approx((measured - estimated) / estimated)
    ledger.release("b")
    assert ledger.used == 0 and ledger.free == 4.0


def test_refuse_admits_a_publish_only_with_room_for_the_reference_ladder() -> None:
    assert admit_publish(AdmissionMode.REFUSE, free=1.0, reserve=0.8, active=1,
                         max_broadcasts=8) is None
    reason = admit_publish(AdmissionMode.REFUSE, free=0.5, reserve=0.8, active=1,
                           max_broadcasts=8)
    assert reason is not None and "transcode capacity" in reason
    assert admit_publish(AdmissionMode.SLOTS, free=0.0, reserve=0.8, active=7,
                         max_broadcasts=8) is None
    assert admit_publish(AdmissionMode.SLOTS, free=9.0, reserve=0.8, active=8,
                         max_broadcasts=8) is not None


@given(st.floats(min_value=0.05, max_value=3.0))
def test_the_meter_reads_cpu_per_second_of_media_after_the_warmup(rate: float) -> None:
    meter = CpuMeter(warmup_media_s=2.0, min_span_media_s=3.0)
    startup = 0.8  # imports and encoder set-up: not the broadcast's running cost
    readings = [meter.sample(t, startup + rate * t) for t in range(0, 30)]
    assert all(r is None for r in readings[:5])
    assert readings[-1] == pytest.approx(rate)
    meter.reset()
    assert meter.sample(10.0, 1.0) is None
