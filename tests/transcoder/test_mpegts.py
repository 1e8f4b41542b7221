"""The MPEG-TS writer: packet framing, tables with correct CRCs, continuity counters, and
libav reading the result."""

from __future__ import annotations

import io
import struct
from typing import Any

import av

from tests.transcoder.test_fmp4 import encoded_h264
from transcoder.fmp4 import AudioTrack, VideoTrack
from transcoder.mpegts import (
    AUDIO_PID,
    PACKET,
    PAT_PID,
    PMT_PID,
    VIDEO_PID,
    TsWriter,
    adts_header,
    crc32_mpeg2,
)
from transcoder.packager import _Video


def test_crc32_mpeg2_check_value() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


def test_adts_header_fields() -> None:
    header = adts_header(3, 2, 2, 100)  # 48 kHz, AAC-LC, stereo, 100 byte frame
    assert header[:2] == b"\xff\xf1"
    assert (header[2] >> 6) == 1 and ((header[2] >> 2) & 0xF) == 3
    length = ((header[3] & 3) << 11) | (header[4] << 3) | (header[5] >> 5)
    assert length == 107


def _segment(writer: TsWriter, packets: list[tuple[bytes, bool]], start: int) -> bytes:
    video = [_Video(dts=(start + i) * 33, pts=(start + i) * 33, data=d, keyframe=k,
                    duration=33) for i, (d, k) in enumerate(packets)]
    return writer.chunk(video, [((start + i) * 21, b"\x21\x10\x04\x60\x8c\x1c")
                                for i in range(len(packets))], segment_start=True)


def test_segments_are_188_byte_packets_with_running_continuity() -> None:
    record, packets = encoded_h264()
    writer = TsWriter()
    assert writer.init(VideoTrack("h264", record, 64, 64), AudioTrack(b"\x11\x90", 48000, 2)) \
        == b""
    data = _segment(writer, packets[:5], 0) + _segment(writer, packets[5:], 5)
    assert len(data) % PACKET == 0
    counters: dict[int, list[int]] = {}
    for pos in range(0, len(data), PACKET):
        pkt = data[pos:pos + PACKET]
        assert pkt[0] == 0x47
        pid = struct.unpack(">H", pkt[1:3])[0] & 0x1FFF
        if pkt[3] & 0x10:  # has payload
            counters.setdefault(pid, []).append(pkt[3] & 0xF)
    assert set(counters) == {PAT_PID, PMT_PID, VIDEO_PID, AUDIO_PID}
    for pid, values in counters.items():
        assert values == [i & 0xF for i in range(len(values))], pid


def test_libav_reads_video_and_audio() -> None:
    record, packets = encoded_h264()
    writer = TsWriter()
    writer.init(VideoTrack("h264", record, 64, 64), None)
    data = _segment(writer, packets, 0)
    container: Any = av.open(io.BytesIO(data), format="mpegts")
    try:
        frames = list(container.decode(video=0))
    finally:
        container.close()
    assert len(frames) == len(packets) and frames[0].key_frame
