from __future__ import annotations

import pytest

from transcoder.segmenter import BoundaryClock, Cut, Cutter, SegmentPolicy

POLICY = SegmentPolicy(target_ms=2000, part_target_ms=500)


@pytest.mark.parametrize(("keyframes", "expected"), [
    # Regular 2 s GOP at 30 fps (millisecond timestamps land a little short).
    ([0, 1999, 4000, 6001], [0, 1999, 4000, 6001]),
    # 1 s GOP: every other keyframe starts a segment.
    ([0, 1000, 2000, 3000, 4000], [0, 2000, 4000]),
    # Long GOP: one segment per keyframe, however long.
    ([0, 8333, 16667], [0, 8333, 16667]),
    # OBS "auto": irregular keyframes; the first one at least the target after the start.
    ([0, 700, 2900, 3300, 5500, 6000, 9000], [0, 2900, 5500, 9000]),
    # A stream that starts without a keyframe: nothing until the first one.
    ([500, 3000], [500, 3000]),
])
def test_segments_start_at_the_first_source_keyframe_past_the_target(
        keyframes: list[int], expected: list[int]) -> None:
    clock = BoundaryClock(POLICY)
    starts = [pts for pts in keyframes if clock.on_source_video(pts, keyframe=True)]
    assert starts == expected
    assert all(clock.is_boundary(pts) for pts in expected)
    assert not any(clock.is_boundary(pts) for pts in set(keyframes) - set(expected))


def test_non_keyframes_start_a_segment_only_when_it_would_outgrow_the_target_duration(
        ) -> None:
    clock = BoundaryClock(POLICY)
    assert not clock.on_source_video(0, keyframe=False)  # nothing starts before a keyframe
    frames = [33 + round(i * 1000 / 30) for i in range(300)]  # 10 s GOP at 30 fps
    starts = [pts for i, pts in enumerate(frames) if clock.on_source_video(pts, i == 0)]
    # EXT-X-TARGETDURATION 2: each segment ends before it would round to 3 s
    assert starts == [33, 2500, 4966, 7400, 9866]
    assert all(b - a <= POLICY.max_segment_ms for a, b in zip(starts, starts[1:], strict=False))
    assert all(clock.is_boundary(pts) for pts in starts)  # encoded renditions force IDRs
    assert clock.drought_splits == 4


def test_a_keyframe_after_a_drought_split_starts_a_segment_at_once() -> None:
    clock = BoundaryClock(POLICY)
    frames = [round(i * 1000 / 30) for i in range(120)]
    keyframes = {0, 2600}  # a 2.6 s GOP: one split at 2467, then the late keyframe
    starts = [pts for pts in frames if clock.on_source_video(pts, pts in keyframes)]
    assert starts == [0, 2467, 2600]
    # ... after which the ordinary target applies again
    assert not clock.on_source_video(4000, keyframe=True)


def test_discontinuity_restarts_the_clock() -> None:
    clock = BoundaryClock(POLICY)
    assert clock.on_source_video(10_000, True)
    clock.discontinuity()
    assert not clock.is_boundary(10_000)
    # Timestamps went back to zero: the first keyframe starts a segment anyway.
    assert clock.on_source_video(0, True)
    assert not clock.on_source_video(1000, True)


def test_parts_are_cut_every_part_target_on_the_decode_timeline() -> None:
    cutter = Cutter(POLICY)
    frames = [round(i * 1000 / 30) for i in range(70)]  # 30 fps, ms timestamps
    cuts = [cutter.on_video(dts, boundary=dts in (0, 2000)) for dts in frames]
    assert cuts[0] is Cut.SEGMENT
    part_starts = [frames[i] for i, c in enumerate(cuts) if c is Cut.PART]
    assert part_starts == [500, 1000, 1500, 2500, 3000, 3500, 4000, 4500, 5000,
                           5500, 6000, 6500, 7000, 7500, 8000][:len(part_starts)]
    assert cuts[frames.index(2000)] is Cut.SEGMENT
    assert all(b - a <= POLICY.part_target_ms for a, b in zip(
        [0, *part_starts], part_starts, strict=False))


def test_samples_before_the_first_boundary_are_dropped() -> None:
    cutter = Cutter(POLICY)
    assert cutter.on_video(0, boundary=False) is Cut.DROP
    assert cutter.on_video(33, boundary=True) is Cut.SEGMENT
    assert cutter.on_video(66, boundary=False) is Cut.CONTINUE
    cutter.reset()
    assert cutter.on_video(100, boundary=False) is Cut.DROP


def test_policy_from_seconds() -> None:
    assert SegmentPolicy.from_seconds(2.0, 0.5) == POLICY
    assert SegmentPolicy.from_seconds(1.0, 3.0).part_target_ms == 1000
    with pytest.raises(ValueError):
        SegmentPolicy.from_seconds(0, 0.5)
