"""The source's health as the streamer should hear it: a long keyframe interval is a
warning before the late keyframe even comes; frame rate, audio and bitrate stability."""

from __future__ import annotations

from castway.media import Codec, MediaKind, MediaPacket
from castway.stream_health import SourceWarning, describe
from ingest.health import HealthTracker


def video(ms: int, *, key: bool = False) -> MediaPacket:
    return MediaPacket(MediaKind.VIDEO, Codec.H264, key, False, ms, ms, b"\x00")


def audio(ms: int) -> MediaPacket:
    return MediaPacket(MediaKind.AUDIO, Codec.AAC, True, False, ms, ms, b"\x00")


def publish(tracker: HealthTracker, *, seconds: float, fps: int, gop: int,
            with_audio: bool = True) -> list[tuple[int, list[SourceWarning]]]:
    """Feed ``seconds`` of a stream; (timestamp, warnings raised) where any were."""
    raised = []
    for n in range(int(seconds * fps)):
        ms = round(n * 1000 / fps)
        if with_audio:
            tracker.on_packet(audio(ms))
        if codes := tracker.on_packet(video(ms, key=n % gop == 0)):
            raised.append((ms, codes))
    return raised


def test_a_two_second_gop_is_healthy() -> None:
    tracker = HealthTracker(segment_target_s=2.0)
    assert publish(tracker, seconds=10, fps=30, gop=60) == []
    report = tracker.report()
    assert report.warnings == ()
    assert report.keyframe_interval_s == 2.0
    assert report.fps is not None and abs(report.fps - 30) < 0.1  # whole-ms timestamps
    assert report.audio


def test_ffmpeg_g_250_warns_as_soon_as_the_second_keyframe_is_late() -> None:
    # 250 frames at 25 fps: 10 s between keyframes. Known at 2.1 s, not at 10 s.
    tracker = HealthTracker(segment_target_s=2.0)
    raised = publish(tracker, seconds=12, fps=25, gop=250)
    assert raised == [(2120, [SourceWarning.LONG_KEYFRAME_INTERVAL])]
    assert tracker.report().keyframe_interval_s == 10.0
    assert SourceWarning.LONG_KEYFRAME_INTERVAL in tracker.report().warnings
    assert "Keyframe Interval: 2 s" in describe(SourceWarning.LONG_KEYFRAME_INTERVAL).advice


def test_the_limit_is_the_segment_target_up_to_four_seconds() -> None:
    assert HealthTracker(segment_target_s=1.0).keyframe_limit_s == 1.0
    assert HealthTracker(segment_target_s=6.0).keyframe_limit_s == 4.0
    # A 3 s GOP makes 2 s segments 3 s long.
    assert publish(HealthTracker(segment_target_s=2.0), seconds=7, fps=30, gop=90)
    assert not publish(HealthTracker(segment_target_s=6.0), seconds=7, fps=30, gop=90)


def test_the_warning_clears_once_keyframes_come_in_time_again() -> None:
    tracker = HealthTracker(segment_target_s=2.0)
    publish(tracker, seconds=12, fps=25, gop=250)
    tracker.discontinuity()  # the streamer fixed OBS and reconnected
    publish(tracker, seconds=5, fps=25, gop=50)
    assert tracker.report().warnings == ()


def test_a_stream_without_audio_is_reported() -> None:
    tracker = HealthTracker(segment_target_s=2.0)
    raised = publish(tracker, seconds=5, fps=30, gop=60, with_audio=False)
    assert [codes for _, codes in raised] == [[SourceWarning.NO_AUDIO]]
    assert not tracker.report().audio


def test_bitrate_stability() -> None:
    steady = HealthTracker(segment_target_s=2.0)
    for kbps in (2500, 2450, 2550, 2500, 2480, 2520):
        assert steady.on_bitrate(kbps) == []
    variation = steady.report().bitrate_variation
    assert variation is not None and variation < 0.05
    swinging = HealthTracker(segment_target_s=2.0)
    raised = [swinging.on_bitrate(kbps) for kbps in (2500, 100, 3000, 50, 2800, 0)]
    assert raised.count([SourceWarning.UNSTEADY_BITRATE]) == 1  # said once
    assert swinging.report().warnings == (SourceWarning.UNSTEADY_BITRATE,)
