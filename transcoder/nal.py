"""H.264 NAL unit framing: Annex B (start codes, what libx264 emits) <-> AVCC (length
prefixes, what FLV and ISOBMFF carry), and AVCDecoderConfigurationRecord building
(ISO/IEC 14496-10 Annex B; ISO/IEC 14496-15 5.3.3.1)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from transcoder.codecs import CodecConfigError

NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9


def split_annexb(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end]
        if nxt >= 0 and nal.endswith(b"\x00"):
            nal = nal.rstrip(b"\x00")  # the next start code's leading zero byte
        if nal:
            yield nal
        i = nxt


def split_avcc(data: bytes, length_size: int = 4) -> Iterator[bytes]:
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise CodecConfigError("AVCC NAL unit length runs past the sample")
        yield data[pos:pos + size]
        pos += size


def annexb_to_avcc(data: bytes, *, drop_parameter_sets: bool = False) -> bytes:
    out = bytearray()
    for nal in split_annexb(data):
        kind = nal[0] & 0x1F
        if kind == NAL_AUD or (drop_parameter_sets and kind in (NAL_SPS, NAL_PPS)):
            continue
        out += struct.pack(">I", len(nal)) + nal
    return bytes(out)


def avcc_record(sps_list: list[bytes], pps_list: list[bytes]) -> bytes:
    if not sps_list or not pps_list or len(sps_list[0]) < 4:
        raise CodecConfigError("an AVCDecoderConfigurationRecord needs an SPS and a PPS")
    sps = sps_list[0]
    out = bytearray([1, sps[1], sps[2], sps[3], 0xFF, 0xE0 | len(sps_list)])
    for s in sps_list:
        out += struct.pack(">H", len(s)) + s
    out.append(len(pps_list))
    for p in pps_list:
        out += struct.pack(">H", len(p)) + p
    return bytes(out)


def avcc_record_from_annexb(data: bytes) -> bytes:
    nals = list(split_annexb(data))
    return avcc_record([n for n in nals if n[0] & 0x1F == NAL_SPS],
                       [n for n in nals if n[0] & 0x1F == NAL_PPS])


def parse_avcc_record(record: bytes) -> tuple[int, list[bytes], list[bytes]]:
    """(NAL length size, SPS list, PPS list) of an AVCDecoderConfigurationRecord."""
    if len(record) < 7 or record[0] != 1:
        raise CodecConfigError("AVCDecoderConfigurationRecord too short or wrong version")
    length_size = (record[4] & 3) + 1
    pos = 6
    sps: list[bytes] = []
    pps: list[bytes] = []
    try:
        for _ in range(record[5] & 0x1F):
            n = int.from_bytes(record[pos:pos + 2], "big")
            sps.append(record[pos + 2:pos + 2 + n])
            pos += 2 + n
        count = record[pos]
        pos += 1
        for _ in range(count):
            n = int.from_bytes(record[pos:pos + 2], "big")
            pps.append(record[pos + 2:pos + 2 + n])
            pos += 2 + n
    except IndexError as exc:
        raise CodecConfigError("AVCDecoderConfigurationRecord truncated") from exc
    if pos > len(record):
        raise CodecConfigError("AVCDecoderConfigurationRecord truncated")
    return length_size, sps, pps
