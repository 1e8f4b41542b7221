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


def _rbsp(nal: bytes) -> bytes:
    """The NAL unit's payload without its emulation-prevention bytes (00 00 03)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self.left:
            raise CodecConfigError("SPS truncated")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise CodecConfigError("SPS exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def sps_dimensions(record: bytes) -> tuple[int, int]:
    """Display width and height from the first SPS of an AVCDecoderConfigurationRecord
    (ITU-T H.264 7.3.2.1.1, cropping per 7.4.2.1.1): what the source is, whatever its
    onMetaData says."""
    _, sps_list, _ = parse_avcc_record(record)
    if not sps_list:
        raise CodecConfigError("no SPS in the AVCDecoderConfigurationRecord")
    bits = _Bits(_rbsp(sps_list[0])[1:])  # past the NAL header
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = bits.ue()
        if chroma_format == 3:
            bits.u(1)  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + bits.se()) % 256
                        last = nxt or last
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (2 - frame_mbs_only)
    if bits.u(1):  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        crop_x = 2 if chroma_format in (1, 2) else 1
        crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    return width, height
