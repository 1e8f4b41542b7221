"""MPEG-TS elementary-stream packets (as libav's demuxer gives them) -> castway's
:class:`MediaPacket` s, in the form the RTMP path produces (castway/media.py): length-
prefixed NAL units after an AVC/HEVC decoder configuration record, raw AAC access units
after an AudioSpecificConfig, Opus packets after its OpusHead.

Pure and synchronous: :class:`TsToMedia` takes :class:`TsPacket` s and returns packets;
the PyAV demuxer is the caller's (ingest/srt/server.py).

Timestamps (ISO 13818-1 2.4.3.7): 33-bit 90 kHz PTS/DTS, rebased so that a broadcast
starts at 0 ms (the earliest first timestamp of its streams: TS muxers interleave audio
ahead of video, so the first packets are held until every stream has shown one, or
:data:`START_WINDOW_MS` passed); a wrap of the 33-bit counter is unwrapped, and a jump of more than
:data:`MAX_JUMP_MS` either way (a PCR/PTS discontinuity: the encoder restarted its
clock, an ``srt-live-transmit`` relay switched sources) is stitched so the output goes
on from where it was, monotonically.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from castway.media import Codec, MediaKind, MediaPacket
from ingest.nal import avcc_record, hvcc_record, length_prefixed, split_annexb

WRAP = 1 << 33
#: A timestamp moving further than this from the last one is a discontinuity.
MAX_JUMP_MS = 5000
#: Where a stitched timeline goes on after the last timestamp seen.
STITCH_STEP_MS = 20
#: How long the first packets wait for every stream's first timestamp.
START_WINDOW_MS = 1500
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)
_VIDEO = {"h264": Codec.H264, "hevc": Codec.HEVC}
_AUDIO = {"aac": Codec.AAC, "opus": Codec.OPUS}


def taken(codec: str) -> bool:
    """Whether a stream of libav codec ``codec`` becomes MediaPackets."""
    return codec in _VIDEO or codec in _AUDIO


@dataclass(frozen=True, slots=True)
class TsPacket:
    """One demuxed packet: ``codec`` is libav's codec name, timestamps in 90 kHz."""

    stream: int
    codec: str
    data: bytes
    pts: int | None
    dts: int | None
    keyframe: bool = False
    extradata: bytes = b""


def _adts_frames(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(AudioSpecificConfig, raw frame) of each ADTS frame (ISO 14496-3 1.A.2) in
    ``data``; stops at the first thing that is not one."""
    i = 0
    while i + 7 <= len(data):
        h = data[i:i + 7]
        if h[0] != 0xFF or h[1] & 0xF6 != 0xF0:
            return
        protection_absent = h[1] & 1
        profile = h[2] >> 6
        rate_index = (h[2] >> 2) & 0xF
        channels = ((h[2] & 1) << 2) | (h[3] >> 6)
        length = ((h[3] & 3) << 11) | (h[4] << 3) | (h[5] >> 5)
        header = 7 if protection_absent else 9
        if length < header or i + length > len(data) or rate_index >= len(_AAC_RATES):
            return
        object_type = profile + 1
        asc = bytes([(object_type << 3) | (rate_index >> 1),
                     ((rate_index & 1) << 7) | (channels << 3)])
        yield asc, data[i + header:i + length]
        i += length


def _adts_rate(asc: bytes) -> int:
    return _AAC_RATES[((asc[0] & 7) << 1) | (asc[1] >> 7)]


@dataclass
class Timeline:
    """90 kHz TS timestamps -> one monotonic millisecond timeline from 0 (see module doc)."""

    offset: int | None = None  # in 90 kHz ticks: out = (unwrapped + offset) // 90
    wraps: int = 0
    last_in: int | None = None  # last unwrapped 90 kHz value
    last_out: int = 0  # highest output, in ticks

    def start_at(self, ts: int) -> None:
        """Make ``ts`` (90 kHz) the timeline's 0 ms."""
        self.last_in = ts % WRAP
        self.offset = -self.last_in

    def to_ms(self, ts: int) -> int:
        ts %= WRAP
        unwrapped = ts + self.wraps * WRAP
        if self.last_in is not None:
            if unwrapped - self.last_in < -WRAP // 2:
                self.wraps += 1
                unwrapped += WRAP
            elif unwrapped - self.last_in > WRAP // 2 and self.wraps > 0:
                # a late packet from before a wrap (audio and video interleave)
                unwrapped -= WRAP
        jump = self.last_in is not None and abs(unwrapped - self.last_in) > MAX_JUMP_MS * 90
        if self.offset is None:
            self.offset = -unwrapped
        elif jump:
            self.offset = self.last_out + STITCH_STEP_MS * 90 - unwrapped
        self.last_in = unwrapped if self.last_in is None or jump \
            else max(self.last_in, unwrapped)
        out = unwrapped + self.offset
        self.last_out = max(self.last_out, out)
        return out // 90


@dataclass
class _StreamState:
    config: bytes | None = None
    next_dts_ms: float | None = None  # audio: where a packet with no timestamp goes


@dataclass
class TsToMedia:
    """Demuxed TS packets of one publisher -> MediaPackets (one instance per connection)."""

    expect: set[int] = field(default_factory=set)  # the streams to wait for at the start
    timeline: Timeline = field(default_factory=Timeline)
    streams: dict[int, _StreamState] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)  # codecs seen and not taken
    held: list[TsPacket] | None = field(default_factory=list)  # None once started

    def convert(self, p: TsPacket) -> list[MediaPacket]:
        if self.held is None:
            return self._convert(p)
        if not taken(p.codec):
            self.ignored.add(p.codec)
            return []
        self.held.append(p)
        firsts: dict[int, int] = {}
        for h in self.held:
            ts = h.dts if h.dts is not None else h.pts
            if ts is not None and h.stream not in firsts:
                firsts[h.stream] = ts
        if not firsts:
            return []
        span = max(firsts.values()) - min(firsts.values())
        last = p.dts if p.dts is not None else p.pts
        waited = last is not None and last - min(firsts.values()) > START_WINDOW_MS * 90
        if set(firsts) >= self.expect or waited or span > START_WINDOW_MS * 90:
            self.timeline.start_at(min(firsts.values()))
            return self.flush()
        return []

    def flush(self) -> list[MediaPacket]:
        """What is held at the start, converted (also: the stream ended early)."""
        held, self.held = self.held or [], None
        out = [m for h in held for m in self._convert(h)]
        # Every decoder configuration first, as an RTMP publisher sends them: the
        # transcoder sets up its tracks at the first video frame with what it knows.
        return sorted(out, key=lambda m: (not m.is_config, m.dts_ms))

    def _convert(self, p: TsPacket) -> list[MediaPacket]:
        if p.codec in _VIDEO:
            return self._video(p, _VIDEO[p.codec])
        if p.codec in _AUDIO:
            return self._audio(p, _AUDIO[p.codec])
        self.ignored.add(p.codec)
        return []

    def _times(self, p: TsPacket, state: _StreamState) -> tuple[int, int] | None:
        dts = p.dts if p.dts is not None else p.pts
        if dts is None:
            if state.next_dts_ms is None:
                return None
            return round(state.next_dts_ms), round(state.next_dts_ms)
        dts_ms = self.timeline.to_ms(dts)
        pts_ms = dts_ms + ((p.pts - dts) // 90 if p.pts is not None else 0)
        return dts_ms, max(pts_ms, dts_ms)

    def _video(self, p: TsPacket, codec: Codec) -> list[MediaPacket]:
        state = self.streams.setdefault(p.stream, _StreamState())
        times = self._times(p, state)
        if times is None:
            return []
        dts_ms, pts_ms = times
        hevc = codec is Codec.HEVC
        params: dict[int, list[bytes]] = {}
        frame: list[bytes] = []
        for nal in split_annexb(p.data):
            if not nal:
                continue
            kind = (nal[0] >> 1) & 0x3F if hevc else nal[0] & 0x1F
            if kind in ((32, 33, 34) if hevc else (7, 8)):
                params.setdefault(kind, []).append(nal)
            elif kind not in ((35,) if hevc else (9,)):  # access unit delimiters go
                frame.append(nal)
        out: list[MediaPacket] = []
        config: bytes | None = None
        if hevc and all(k in params for k in (32, 33, 34)):
            config = hvcc_record(params[32], params[33], params[34])
        elif not hevc and 7 in params and 8 in params and len(params[7][0]) >= 4:
            config = avcc_record(params[7], params[8])
        if config is not None and config != state.config:
            state.config = config
            out.append(MediaPacket(MediaKind.VIDEO, codec, True, True, dts_ms, dts_ms, config))
        if state.config is None or not frame:
            return out  # nothing decodable comes before the parameter sets
        out.append(MediaPacket(MediaKind.VIDEO, codec, p.keyframe, False, dts_ms, pts_ms,
                               length_prefixed(frame)))
        return out

    def _audio(self, p: TsPacket, codec: Codec) -> list[MediaPacket]:
        state = self.streams.setdefault(p.stream, _StreamState())
        times = self._times(p, state)
        if times is None:
            return []
        # Frames after the first of a PES: where the last one left off, unrounded.
        dts_ms: float = times[0] if p.dts is not None or p.pts is not None \
            else (state.next_dts_ms or 0.0)
        out: list[MediaPacket] = []
        if codec is Codec.OPUS:
            if state.config is None:
                state.config = p.extradata or b""
                if p.extradata:
                    out.append(MediaPacket(MediaKind.AUDIO, codec, True, True, round(dts_ms),
                                           round(dts_ms), p.extradata))
            if p.data:
                out.append(MediaPacket(MediaKind.AUDIO, codec, True, False, round(dts_ms),
                                       round(dts_ms), p.data))
            state.next_dts_ms = dts_ms + 20
            return out
        for asc, raw in _adts_frames(p.data):
            at = round(dts_ms)
            if asc != state.config:
                state.config = asc
                out.append(MediaPacket(MediaKind.AUDIO, codec, True, True, at, at, asc))
            if raw:
                out.append(MediaPacket(MediaKind.AUDIO, codec, True, False, at, at, raw))
            dts_ms += 1024 * 1000 / _adts_rate(asc)
        state.next_dts_ms = dts_ms
        return out
