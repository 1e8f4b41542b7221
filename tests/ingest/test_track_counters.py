"""The figures of an encoder's own tracks (E-RTMP multitrack, track 1 and up), as the
broadcast's stats show them: codec, bit rate and frame rate since the last sample, and
the keyframe interval."""

from __future__ import annotations

from castway.media import Codec, MediaKind, MediaPacket
from ingest.source import MAX_COUNTED_TRACKS, TrackCounters


def frame(track: int, dts: int, key: bool, size: int = 1000) -> MediaPacket:
    return MediaPacket(MediaKind.VIDEO, Codec.H264, key, False, dts, dts, b"x" * size, track)


def test_each_track_has_its_rates_and_keyframe_interval() -> None:
    counters = TrackCounters()
    counters.sample(0.0)
    counters.count(MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0, b"cfg", 1))
    for i in range(60):  # 2 s at 30 fps, a keyframe every second, 1000 bytes a frame
        counters.count(frame(1, round(i * 1000 / 30), i % 30 == 0))
    stats = counters.sample(2.0)
    assert stats["track1_codec"] == "h264"
    assert stats["track1_fps"] == 30.0
    assert stats["track1_bitrate_kbps"] == round((60 * 1000 + 3) * 8 / 1000 / 2.0, 1)
    assert stats["track1_keyframe_interval_s"] == 1.0
    # Since the last sample only.
    assert counters.sample(3.0)["track1_fps"] == 0.0


def test_tracks_past_the_limit_are_not_counted() -> None:
    counters = TrackCounters()
    for track in range(1, MAX_COUNTED_TRACKS + 5):
        counters.count(frame(track, 0, True))
    assert len(counters.tracks) == MAX_COUNTED_TRACKS
    assert "track1_codec" in counters.sample(1.0)


def test_an_audio_track_is_counted_apart_from_the_video_track_of_its_number() -> None:
    counters = TrackCounters()
    counters.sample(0.0)
    counters.count(MediaPacket(MediaKind.VIDEO, Codec.H264, True, True, 0, 0, b"cfg", 1))
    counters.count(frame(1, 0, True, size=5000))
    counters.count(MediaPacket(MediaKind.AUDIO, Codec.AAC, False, True, 0, 0, b"\x11\x90", 1))
    for i in range(94):  # 2 s of 48 kHz AAC, 250 bytes a frame
        counters.count(MediaPacket(MediaKind.AUDIO, Codec.AAC, True, False, i * 21, i * 21,
                                   b"a" * 250, 1))
    stats = counters.sample(2.0)
    assert stats["audio_track1_codec"] == "aac"
    assert stats["audio_track1_bitrate_kbps"] == round((94 * 250 + 2) * 8 / 1000 / 2.0, 1)
    assert stats["track1_codec"] == "h264"
    assert stats["track1_bitrate_kbps"] == round(5003 * 8 / 1000 / 2.0, 1)
