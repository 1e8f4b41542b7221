"""ingest.restream.queue: a target that falls behind loses whole GOPs from the oldest
end, keeps its sequence headers, and always resumes at a keyframe."""

from __future__ import annotations

from castway.media import Codec, MediaKind, MediaPacket
from ingest.restream.queue import GopQueue


def video(dts: int, *, key: bool = False, config: bool = False, size: int = 100) -> MediaPacket:
    return MediaPacket(MediaKind.VIDEO, Codec.H264, key or config, config, dts, dts,
                       b"v" * size)


def audio(dts: int, *, config: bool = False, size: int = 10) -> MediaPacket:
    return MediaPacket(MediaKind.AUDIO, Codec.AAC, True, config, dts, dts, b"a" * size)


def drain(queue: GopQueue) -> list[MediaPacket]:
    out = []
    while (p := queue.pop()) is not None:
        out.append(p)
    return out


def gop(start: int, frames: int = 5) -> list[MediaPacket]:
    return [video(start, key=True)] + [video(start + 40 * i) for i in range(1, frames)]


def test_within_its_bound_the_queue_keeps_everything_in_order() -> None:
    q = GopQueue(10_000)
    packets = [video(0, config=True), audio(0, config=True), *gop(0), audio(20)]
    for p in packets:
        q.push(p)
    assert drain(q) == packets
    assert q.dropped_packets == 0


def test_a_target_that_falls_behind_loses_the_oldest_gop_whole_and_keeps_the_headers() -> None:
    q = GopQueue(1_100)  # about two GOPs of 5 x 100 bytes
    header = video(0, config=True)
    q.push(header)
    for start in (0, 200, 400):
        for p in gop(start):
            q.push(p)
    out = drain(q)
    assert out[0] == header
    assert out[1] == video(200, key=True)  # the first GOP went, all of it
    assert [p.dts_ms for p in out[1:]] == [200, 240, 280, 320, 360, 400, 440, 480, 520, 560]
    assert q.dropped_packets == 5 and q.dropped_bytes == 500


def test_inter_frames_before_the_first_keyframe_are_never_queued() -> None:
    q = GopQueue(10_000)
    q.push(video(0, config=True))
    q.push(video(0))
    q.push(video(40))
    q.push(video(80, key=True))
    assert [p.dts_ms for p in drain(q) if not p.is_config] == [80]
    assert q.dropped_packets == 2


def test_an_audio_only_broadcast_is_queued_from_its_first_packet() -> None:
    q = GopQueue(10_000)
    q.push(audio(0, config=True))
    q.push(audio(23))
    assert len(drain(q)) == 2


def test_a_new_connection_starts_with_the_headers_then_the_next_keyframe() -> None:
    q = GopQueue(10_000)
    v, a = video(0, config=True), audio(0, config=True)
    for p in (v, a, *gop(0)):
        q.push(p)
    drain(q)  # sent on the first connection
    for p in [video(200), audio(210), *gop(400)]:  # the connection dropped mid-GOP
        q.push(p)
    assert q.restart() == [v, a]
    assert drain(q)[0] == video(400, key=True)


def test_a_single_gop_larger_than_the_bound_waits_for_the_next_keyframe() -> None:
    q = GopQueue(300)
    q.push(video(0, config=True, size=10))
    for p in gop(0, frames=5):
        q.push(p)
    q.push(video(200))  # still nothing to start from
    q.push(video(400, key=True))
    out = drain(q)
    assert [p.is_config for p in out] == [True, False]
    assert out[1].dts_ms == 400
