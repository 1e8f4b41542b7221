"""The fMP4 writer, read back by libav (not only by our own walk of the boxes)."""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from typing import Any

import av

from transcoder.fmp4 import (
    NON_SYNC_FLAGS,
    SYNC_FLAGS,
    AudioTrack,
    Sample,
    TrackRun,
    VideoTrack,
    fragment,
    init_segment,
)
from transcoder.nal import annexb_to_avcc, avcc_record_from_annexb

ASC = bytes([0x11, 0x90])  # AAC-LC 48 kHz stereo


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        assert size >= 8 and pos + size <= len(data)
        out.append((kind, data[pos + 8:pos + size]))
        pos += size
    return out


def encoded_h264(frames: int = 10) -> tuple[bytes, list[tuple[bytes, bool]]]:
    enc: Any = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 64, 64, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.flags |= av.codec.context.Flags.global_header
    enc.options = {"preset": "ultrafast", "bf": "0"}
    packets = []
    for i in range(frames):
        frame = av.VideoFrame(64, 64, "yuv420p")
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    record = avcc_record_from_annexb(bytes(enc.extradata))
    return record, [(annexb_to_avcc(bytes(p), drop_parameter_sets=True), bool(p.is_keyframe))
                    for p in packets]


def test_init_segment_box_structure() -> None:
    init = init_segment(VideoTrack("h264", b"\x01\x64\x00\x1f\xff\xe0\x00", 640, 360),
                        AudioTrack(ASC, 48000, 2))
    top = boxes(init)
    assert [k for k, _ in top] == [b"ftyp", b"moov"]
    moov = [k for k, _ in boxes(top[1][1])]
    assert moov == [b"mvhd", b"trak", b"trak", b"mvex"]


def test_fragment_data_offsets_point_into_mdat() -> None:
    video = [Sample(b"V" * 10, 3000, True), Sample(b"v" * 7, 3000, False, 3000)]
    audio = [Sample(b"A" * 5, 1024)]
    data = fragment(7, [TrackRun(1, 900_000, video), TrackRun(2, 480_000, audio),
                        TrackRun(3, 0, [])])
    (moof_kind, moof), (mdat_kind, mdat) = boxes(data)
    assert (moof_kind, mdat_kind) == (b"moof", b"mdat")
    assert mdat == b"V" * 10 + b"v" * 7 + b"A" * 5
    children = boxes(moof)
    assert children[0][0] == b"mfhd" and struct.unpack(">I", children[0][1][4:8])[0] == 7
    trafs = [body for kind, body in children if kind == b"traf"]
    assert len(trafs) == 2  # the empty run is left out
    offsets = []
    for traf in trafs:
        trun = dict(boxes(traf))[b"trun"]
        count, offset = struct.unpack(">Ii", trun[4:12])
        offsets.append(offset)
        first_flags = struct.unpack(">I", trun[12 + 8:12 + 12])[0]
        assert first_flags == SYNC_FLAGS
    moof_size = len(moof) + 8
    assert offsets == [moof_size + 8, moof_size + 8 + 17]
    assert NON_SYNC_FLAGS != SYNC_FLAGS


def test_libav_decodes_what_we_write() -> None:
    record, packets = encoded_h264()
    init = init_segment(VideoTrack("h264", record, 64, 64), None)
    half = len(packets) // 2
    chunks = []
    for n, (start, part) in enumerate(((0, packets[:half]), (half, packets[half:]))):
        samples = [Sample(data, 3000, key) for data, key in part]
        chunks.append(fragment(n + 1, [TrackRun(1, start * 3000, samples)]))
    container: Any = av.open(io.BytesIO(init + b"".join(chunks)))
    try:
        frames = list(container.decode(video=0))
    finally:
        container.close()
    assert len(frames) == len(packets)
    assert [round(float(f.pts * f.time_base), 3) for f in frames] == \
        [round(i / 30, 3) for i in range(len(packets))]
    assert frames[0].key_frame
