"""A small MPEG-TS writer for legacy-player HLS segments (ISO/IEC 13818-1; RFC 8216bis 3.3).

Each segment starts with PAT and PMT; video (H.264, stream type 0x1B) is Annex B with an
access unit delimiter and, on keyframes, the SPS/PPS in front; AAC (0x0F) is ADTS-framed.
PCR rides on the video PID with every video PES. Continuity counters run on across
segments, as one continuous stream cut into files. Our own writer rather than libav's
muxer through PyAV: a segment here is exactly the packets we hand it, with no muxer-side
buffering or interleaving to flush around a cut.
"""

from __future__ import annotations

import struct

from transcoder.codecs import parse_asc
from transcoder.fmp4 import AudioTrack, VideoTrack
from transcoder.nal import parse_avcc_record, split_avcc
from transcoder.packager import TIMELINE_OFFSET_MS, ContainerWriter, _Video

PACKET = 188
PAT_PID = 0x0000
PMT_PID = 0x1000
VIDEO_PID = 0x0100
AUDIO_PID = 0x0101
STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_AAC_ADTS = 0x0F
AUD = b"\x00\x00\x00\x01\x09\xf0"
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
               11025, 8000, 7350)
PCR_LEAD_MS = 100  # the PCR sent with a video PES is this far behind its DTS


class TsError(ValueError):
    """The stream cannot be carried in our MPEG-TS segments."""


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ b) & 0xFF]
    return crc


def _timestamp(prefix: int, ts: int) -> bytes:
    ts &= (1 << 33) - 1
    return bytes([(prefix << 4) | (((ts >> 30) & 7) << 1) | 1,
                  (ts >> 22) & 0xFF, (((ts >> 15) & 0x7F) << 1) | 1,
                  (ts >> 7) & 0xFF, ((ts & 0x7F) << 1) | 1])


def _section(table_id: int, body: bytes) -> bytes:
    # section_syntax_indicator=1, '0', reserved '11', 12-bit length (body + CRC).
    head = bytes([table_id]) + struct.pack(">H", 0xB000 | (len(body) + 4))
    crc = crc32_mpeg2(head + body)
    return b"\x00" + head + body + struct.pack(">I", crc)  # pointer_field 0


def adts_header(asc_rate_index: int, object_type: int, channels: int, size: int) -> bytes:
    length = size + 7
    return bytes([0xFF, 0xF1,
                  ((object_type - 1) & 3) << 6 | (asc_rate_index & 0xF) << 2
                  | (channels >> 2) & 1,
                  (channels & 3) << 6 | (length >> 11) & 3,
                  (length >> 3) & 0xFF,
                  (length & 7) << 5 | 0x1F, 0xFC])


class TsWriter(ContainerWriter):
    ext = "ts"
    has_init = False

    def init(self, video: VideoTrack | None, audio: AudioTrack | None) -> bytes:
        if video is None:
            # PCR rides on the video PID here; audio-only broadcasts need fMP4.
            raise TsError("MPEG-TS segments need video: audio-only broadcasts need "
                          "CASTWAY_SEGMENT_FORMAT=fmp4")
        if video.codec != "h264":
            raise TsError(f"MPEG-TS segments carry H.264 only, not {video.codec}")
        self._video = video
        self._audio = audio
        self._length_size, sps, pps = parse_avcc_record(video.config)
        self._parameter_sets = b"".join(b"\x00\x00\x00\x01" + n for n in sps + pps)
        self._cc: dict[int, int] = {}
        if audio is not None:
            cfg = parse_asc(audio.asc)
            if cfg.sample_rate not in _ADTS_RATES or cfg.object_type > 4:
                raise TsError("ADTS carries AAC Main/LC/SSR/LTP at standard rates only")
            self._adts = (_ADTS_RATES.index(cfg.sample_rate), cfg.object_type, cfg.channels)
        return b""

    def _packets(self, pid: int, payload: bytes, *, pcr: int | None = None) -> bytes:
        out = bytearray()
        first = True
        pos = 0
        while first or pos < len(payload):
            cc = self._cc.get(pid, 0)
            self._cc[pid] = (cc + 1) & 0xF
            header = struct.pack(">BH", 0x47, (0x4000 if first else 0) | pid)
            adaptation = b""
            if first and pcr is not None:
                base = pcr & ((1 << 33) - 1)
                adaptation = bytes([0x10]) + struct.pack(">IH", base >> 1,
                                                         ((base & 1) << 15) | 0x7E00)
            room = PACKET - 4 - (len(adaptation) + 1 if adaptation else 0)
            chunk = payload[pos:pos + room]
            pos += len(chunk)
            stuffing = room - len(chunk)
            if stuffing > 0 or adaptation:
                if not adaptation:
                    # An adaptation field of length 0 is one byte; longer ones carry flags.
                    body = b"" if stuffing == 1 else b"\x00" + b"\xff" * (stuffing - 2)
                    adaptation_field = bytes([len(body)]) + body
                else:
                    body = adaptation + b"\xff" * stuffing
                    adaptation_field = bytes([len(body)]) + body
                out += header + bytes([0x30 | cc]) + adaptation_field + chunk
            else:
                out += header + bytes([0x10 | cc]) + chunk
            first = False
        return bytes(out)

    def _tables(self) -> bytes:
        pat = _section(0x00, struct.pack(">HBBBHH", 1, 0xC1, 0, 0, 1, 0xE000 | PMT_PID))
        streams = struct.pack(">BHH", STREAM_TYPE_H264, 0xE000 | VIDEO_PID, 0xF000)
        if self._audio is not None:
            streams += struct.pack(">BHH", STREAM_TYPE_AAC_ADTS, 0xE000 | AUDIO_PID, 0xF000)
        pmt = _section(0x02, struct.pack(">HBBBHH", 1, 0xC1, 0, 0, 0xE000 | VIDEO_PID, 0xF000)
                       + streams)
        return self._table_packet(PAT_PID, pat) + self._table_packet(PMT_PID, pmt)

    def _table_packet(self, pid: int, section: bytes) -> bytes:
        cc = self._cc.get(pid, 0)
        self._cc[pid] = (cc + 1) & 0xF
        data = struct.pack(">BHB", 0x47, 0x4000 | pid, 0x10 | cc) + section
        return data + b"\xff" * (PACKET - len(data))

    def chunk(self, video: list[_Video], audio: list[tuple[int, bytes]],
              segment_start: bool) -> bytes:
        out = bytearray(self._tables() if segment_start else b"")
        events: list[tuple[int, int, bytes]] = []  # (dts ms, order, bytes)
        for v in video:
            events.append((v.dts, 0, self._video_pes(v)))
        if self._audio is not None:
            for pts, data in audio:
                events.append((pts, 1, self._audio_pes(pts, data)))
        events.sort(key=lambda e: (e[0], e[1]))
        for _, _, data in events:
            out += data
        return bytes(out)

    def _video_pes(self, v: _Video) -> bytes:
        es = bytearray(AUD)
        if v.keyframe:
            es += self._parameter_sets
        for nal in split_avcc(v.data, self._length_size):
            if nal[0] & 0x1F in (7, 8, 9) and v.keyframe:
                continue
            es += b"\x00\x00\x00\x01" + nal
        pts = (v.pts + TIMELINE_OFFSET_MS) * 90
        dts = (v.dts + TIMELINE_OFFSET_MS) * 90
        header = _timestamp(3, pts) + _timestamp(1, dts)
        pes = b"\x00\x00\x01\xe0" + struct.pack(">HBBB", 0, 0x84, 0xC0, len(header)) + header
        pcr_base = dts - PCR_LEAD_MS * 90  # 90 kHz; the 27 MHz extension stays 0
        return self._packets(VIDEO_PID, pes + bytes(es), pcr=max(0, pcr_base))

    def _audio_pes(self, pts_ms: int, data: bytes) -> bytes:
        rate_index, object_type, channels = self._adts
        es = adts_header(rate_index, object_type, channels, len(data)) + data
        header = _timestamp(2, (pts_ms + TIMELINE_OFFSET_MS) * 90)
        length = 3 + len(header) + len(es)
        pes = (b"\x00\x00\x01\xc0"
               + struct.pack(">HBBB", length if length < 0x10000 else 0, 0x80, 0x80,
                             len(header)) + header)
        return self._packets(AUDIO_PID, pes + es)
