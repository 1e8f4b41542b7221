"""The figures of an encoder's own tracks (E-RTMP multitrack, track 1 and up), as the
broadcast's stats show them: codec, bit rate and frame rate since the last sample, and
the keyframe interval."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from castway.media import Codec, MediaKind, MediaPacket
from ingest.protocol import amf0
from ingest.protocol.amf0 import AmfValue
from ingest.protocol.commands import metadata_dict, parse_data
from ingest.source import MAX_COUNTED_TRACKS, TrackCounters, tracks_from_metadata


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


# --- what onMetaData declares of each track (E-RTMP v2 "Enhancing onMetaData") ---------
def metadata(**fields: AmfValue) -> dict[str, object]:
    """An onMetaData as a publisher sends it (AMF0 on the wire, decoded as ingest does)."""
    handler, values = parse_data(amf0.encode("@setDataFrame", "onMetaData",
                                             amf0.EcmaArray(fields)))
    found = metadata_dict(values[1:])
    assert handler == "@setDataFrame" and found is not None
    return dict(found)


def test_each_tracks_declared_figures_are_in_the_stats() -> None:
    counters = TrackCounters()
    counters.declare(metadata(
        width=1920.0, height=1080.0,
        videoTrackIdInfoMap={"1": {"width": 1280.0, "height": 720.0, "framerate": 60.0,
                                   "videodatarate": 4200.0},
                             "2": {"height": 360.0}},  # delta-style: only what differs
        audioTrackIdInfoMap={"1": {"audiodatarate": 160.0, "audiosamplerate": 48000.0,
                                   "channels": 2.0}}))
    stats = counters.sample(1.0)
    assert {k: v for k, v in stats.items() if "declared" in k} == {
        "track1_declared_width": 1280.0, "track1_declared_height": 720.0,
        "track1_declared_fps": 60.0, "track1_declared_bitrate_kbps": 4200.0,
        "track2_declared_height": 360.0,
        "audio_track1_declared_bitrate_kbps": 160.0,
        "audio_track1_declared_sample_rate": 48000.0, "audio_track1_declared_channels": 2.0}


def test_what_is_not_a_track_map_is_left_out() -> None:
    video, audio = tracks_from_metadata(metadata(
        videoTrackIdInfoMap={"0": {"width": 1.0}, "256": {"width": 1.0}, "x": {"width": 1.0},
                             "1": "not an object", "3": {"width": 640.0}},
        audioTrackIdInfoMap="not an object"))
    assert list(video) == [3] and audio == {}
    many: dict[str, AmfValue] = {str(n): {"height": 360.0} for n in range(1, 100)}
    video, _ = tracks_from_metadata(metadata(videoTrackIdInfoMap=many))
    assert len(video) == MAX_COUNTED_TRACKS


_AMF_LEAVES = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False),
                        st.text(max_size=8))
_AMF_VALUES = st.recursive(_AMF_LEAVES, lambda inner: st.dictionaries(
    st.text(max_size=4), inner, max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["videoTrackIdInfoMap", "audioTrackIdInfoMap",
                                        "width"]), _AMF_VALUES))
def test_any_metadata_gives_track_figures_or_none(fields: dict[str, object]) -> None:
    counters = TrackCounters()
    counters.declare(fields)
    assert all(isinstance(v, float | str) for v in counters.sample(1.0).values())
