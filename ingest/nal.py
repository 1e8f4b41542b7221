"""H.264 and H.265 NAL units: Annex B byte streams (MPEG-TS, RTP depacketizers) into the
length-prefixed form and decoder configuration records that castway's MediaPackets carry
(castway/media.py), as an RTMP publisher sends them."""

from __future__ import annotations

from collections.abc import Iterator


def split_annexb(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (ITU-T H.264 B.1), start codes removed."""
    i, n = 0, len(data)
    start = -1
    while i + 2 < n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start >= 0:
                yield data[start:i].rstrip(b"\x00")
            i += 3
            start = i
        else:
            i += 1
    if start >= 0 and start < n:
        yield data[start:].rstrip(b"\x00")


def _unescape(nal: bytes) -> bytes:
    """RBSP of a NAL unit: emulation prevention bytes (00 00 03) removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def length_prefixed(nals: list[bytes]) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def avcc_record(sps: list[bytes], pps: list[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO 14496-15 5.3.3.1), 4-byte lengths."""
    first = sps[0]
    out = bytearray([1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)])
    for nal in sps:
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps))
    for nal in pps:
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def hvcc_record(vps: list[bytes], sps: list[bytes], pps: list[bytes]) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO 14496-15 8.3.3.1), 4-byte lengths; the general
    profile/tier/level bytes copied from the SPS's profile_tier_level (H.265 7.3.3)."""
    rbsp = _unescape(sps[0])
    ptl = rbsp[3:15].ljust(12, b"\x00")  # after the 2-byte NAL header and 1 byte of ids
    out = bytearray([1]) + ptl + bytes([0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F])
    arrays = [(32, vps), (33, sps), (34, pps)]
    out.append(len(arrays))
    for nal_type, nals in arrays:
        out.append(0x80 | nal_type)
        out += len(nals).to_bytes(2, "big")
        for nal in nals:
            out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)
