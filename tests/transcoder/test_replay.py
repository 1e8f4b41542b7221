"""What a crashed transcoder child leaves to redo (transcoder.replay), as pure decisions:
where its successor's replay starts, what it is sent first, and which of its outputs
were already published."""

from __future__ import annotations

from castway.media import Codec, MediaKind, MediaPacket
from transcoder.packager import InitOut, PartOut, SegmentOut
from transcoder.replay import BREAK, Recovery

VIDEO_CONFIG = MediaPacket(MediaKind.VIDEO, Codec.H264, False, True, 0, 0, b"avcC-1")
AUDIO_CONFIG = MediaPacket(MediaKind.AUDIO, Codec.AAC, False, True, 0, 0, b"asc")


def video(pts: int, key: bool = False, size: int = 10) -> MediaPacket:
    return MediaPacket(MediaKind.VIDEO, Codec.H264, key, False, pts, pts, b"v" * size)


def audio(pts: int) -> MediaPacket:
    return MediaPacket(MediaKind.AUDIO, Codec.AAC, False, False, pts, pts, b"a")


def part(rendition: str, index: int) -> PartOut:
    return PartOut(rendition, index, 0.5, index == 0, b"p")


def segment(rendition: str) -> SegmentOut:
    return SegmentOut(rendition, 2.0, 0.0, b"s")


class Child:
    """A stand-in for the child's side of the conversation: boundaries at keyframes every
    2 s, as a real one reports them."""

    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery
        self.seqs: dict[int, int] = {}  # pts -> seq of video packets

    def send(self, packet: MediaPacket) -> int:
        seq = self.recovery.sent(packet)
        if packet.kind == MediaKind.VIDEO:
            self.seqs[packet.pts_ms] = seq
            if packet.is_keyframe:
                self.recovery.boundary(seq, packet.pts_ms)
        return seq


def broadcast(recovery: Recovery, until_ms: int, *renditions: str) -> Child:
    """Packets with a keyframe every 2 s; the renditions announced at the first one."""
    child = Child(recovery)
    child.send(VIDEO_CONFIG)
    child.send(AUDIO_CONFIG)
    child.send(audio(-20))  # AAC priming: before the first keyframe
    for pts in range(0, until_ms, 100):
        child.send(video(pts, key=pts % 2000 == 0))
        if pts == 0:
            for rendition in renditions:
                recovery.rendition(rendition)
        child.send(audio(pts + 10))
    return child


def test_the_replay_starts_at_the_keyframe_of_the_oldest_segment_still_open() -> None:
    recovery = Recovery()
    child = Child(recovery)
    for packet in (VIDEO_CONFIG, AUDIO_CONFIG, video(0, key=True), audio(10)):
        child.send(packet)
    recovery.rendition("source")
    recovery.rendition("720p")
    for pts in range(100, 4100, 100):
        if pts in (2000, 4000):
            child.send(audio(pts + 5))  # audio of the next segment, ahead of its keyframe
        child.send(video(pts, key=pts % 2000 == 0))
        if pts == 2000:
            child.send(audio(1990))  # late audio of the segment before
        child.send(audio(pts + 10))
    # The source completed segments 0 and 1; the 720p rung (encoder delay) only 0.
    for rendition, done in (("source", 2), ("720p", 1)):
        for _ in range(done):
            assert recovery.keep(part(rendition, 0))
            assert recovery.keep(segment(rendition))
    assert recovery.keep(part("720p", 0)) and recovery.keep(part("720p", 1))

    plan = recovery.plan()
    assert plan is not None
    assert (plan.boundary, plan.start_seq, plan.start_pts_ms) == (1, child.seqs[2000], 2000)
    prelude = recovery.prelude(plan)
    assert prelude.configs == (VIDEO_CONFIG, AUDIO_CONFIG)
    first = [s.item for s in prelude.items[:3]]
    # the audio that belongs after the keyframe comes along; the late audio too, after it
    assert first == [audio(2005), video(2000, key=True), audio(1990)]
    assert prelude.items[-1].item == audio(4010)


def test_what_was_published_is_not_published_again() -> None:
    recovery = Recovery()
    broadcast(recovery, 4100, "source", "720p")
    assert recovery.keep(part("source", 0)) and recovery.keep(segment("source"))
    assert recovery.keep(part("source", 0)) and recovery.keep(part("source", 1))
    assert recovery.keep(part("720p", 0)) and recovery.keep(part("720p", 1))
    plan = recovery.plan()
    assert plan is not None and plan.boundary == 0
    recovery.start_successor(plan)
    # The successor starts over at segment 0.
    assert recovery.keep(InitOut("source", b"init"))
    assert not recovery.keep(part("source", 0))  # segment 0 complete: nothing of it
    assert not recovery.keep(segment("source"))
    assert not recovery.keep(part("source", 0))  # segment 1: parts 0 and 1 are out
    assert not recovery.keep(part("source", 1))
    assert recovery.keep(part("source", 2))
    assert recovery.keep(segment("source"))  # the whole segment, from the successor
    assert recovery.keep(part("source", 0))  # and on as usual
    assert not recovery.keep(part("720p", 1))
    assert recovery.keep(part("720p", 2)) and recovery.keep(segment("720p"))


def test_the_first_segment_is_replayed_with_the_audio_before_its_keyframe() -> None:
    recovery = Recovery()
    broadcast(recovery, 1500, "source")
    assert recovery.keep(part("source", 0))
    plan = recovery.plan()
    assert plan is not None and plan.start_seq == 0 and plan.start_pts_ms is None
    assert audio(-20) in [s.item for s in recovery.prelude(plan).items]


def test_past_the_memory_bound_nothing_is_replayed() -> None:
    recovery = Recovery(max_bytes=200)
    broadcast(recovery, 4100, "source")
    assert recovery.plan() is None
    recovery.abandon()
    # After the discontinuity the next child starts clean, and can be replayed again.
    child = Child(recovery)
    child.send(video(9000, key=True))
    assert recovery.keep(part("source", 0))
    plan = recovery.plan()
    assert plan is not None and plan.boundary == 3


def test_a_segment_begun_without_a_keyframe_cannot_be_replayed() -> None:
    recovery = Recovery()
    child = Child(recovery)
    child.send(VIDEO_CONFIG)
    child.send(video(0, key=True))
    recovery.rendition("source")
    seq = child.send(video(2400))  # a keyframe drought: the child splits anyway
    recovery.boundary(seq, 2400)
    assert recovery.keep(part("source", 0)) and recovery.keep(segment("source"))
    assert recovery.plan() is None


def test_after_a_break_the_replay_starts_at_the_break() -> None:
    recovery = Recovery()
    broadcast(recovery, 2100, "source")
    assert recovery.keep(part("source", 0)) and recovery.keep(segment("source"))
    break_seq = recovery.sent(BREAK)
    recovery.child_break(break_seq)
    # The publisher's new connection: timestamps from 0 again, audio first.
    child = Child(recovery)
    child.send(audio(-20))
    child.send(video(0, key=True))
    assert recovery.keep(segment("source"))  # the flush closed segment 1
    assert recovery.keep(part("source", 0))
    plan = recovery.plan()
    assert plan is not None and plan.boundary == 2 and plan.start_seq == break_seq
    items = [s.item for s in recovery.prelude(plan).items]
    assert items[:3] == [BREAK, audio(-20), video(0, key=True)]
