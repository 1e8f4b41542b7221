"""The packager puts every sample it is given into parts and segments: nothing published
is lost, including audio that arrives before the first keyframe."""

from __future__ import annotations

from transcoder.fmp4 import AudioTrack, VideoTrack
from transcoder.packager import ContainerWriter, Packager, SegmentOut, _Video
from transcoder.segmenter import SegmentPolicy

AVCC = bytes.fromhex("0164001fffe100046764001f01000468ee3c80")  # minimal record
ASC = bytes.fromhex("1190")  # AAC-LC, 48 kHz, stereo


class RecordingWriter(ContainerWriter):
    """The real fMP4 writer, remembering which audio samples went into chunks."""

    def __init__(self) -> None:
        self.audio_pts: list[int] = []

    def chunk(self, video: list[_Video], audio: list[tuple[int, bytes]],
              segment_start: bool) -> bytes:
        self.audio_pts += [pts for pts, _ in audio]
        return super().chunk(video, audio, segment_start)


def _run(first_video_ms: int, seconds: float = 3.0) -> tuple[Packager, RecordingWriter,
                                                               list[int], list[object]]:
    """Audio every 21.333 ms from 0; 30 fps video from ``first_video_ms``, a keyframe
    (segment boundary) every 2 s; fed in timestamp order as a publisher sends them."""
    writer = RecordingWriter()
    packager = Packager("source", SegmentPolicy(target_ms=2000, part_target_ms=500), writer)
    packager.set_tracks(VideoTrack("h264", AVCC, 320, 180), AudioTrack(ASC, 48000, 2))
    audio = [round(i * 1024 / 48) for i in range(int(seconds * 48000 / 1024))]
    video = [first_video_ms + round(i * 1000 / 30) for i in range(int(seconds * 30))]
    events = sorted([(t, "a") for t in audio] + [(t, "v") for t in video])
    out: list[object] = []
    for n, (t, kind) in enumerate(events):
        if kind == "a":
            packager.on_audio(t, b"\xff" * 8)
        else:
            keyframe = (video.index(t) % 60) == 0
            out += packager.on_video(t, t, b"\x00\x00\x00\x01\x65" + bytes([n % 256]),
                                     keyframe, keyframe)
    out += packager.flush()
    return packager, writer, audio, out


def test_audio_ahead_of_the_first_keyframe_goes_into_the_first_segment() -> None:
    # The publisher's first audio packet (pts 0) precedes its first video frame
    # (pts 42, as ffmpeg's FLV muxer often writes them): it must not be dropped.
    packager, writer, audio, out = _run(first_video_ms=42)
    assert packager.dropped_audio == 0
    assert writer.audio_pts == audio
    assert sum(isinstance(o, SegmentOut) for o in out) == 2


def test_audio_far_ahead_of_video_is_kept_too() -> None:
    # A publisher that starts mid-GOP: ~0.5 s of audio before the first keyframe.
    packager, writer, audio, _ = _run(first_video_ms=500)
    assert packager.dropped_audio == 0
    assert writer.audio_pts == audio
