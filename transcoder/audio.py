"""Non-AAC audio (MP3, Opus) re-encoded to AAC once, for every rendition.

AAC-LC at 48 kHz stereo, 128 kb/s; the AudioSpecificConfig comes from the encoder.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import av

from castway.media import Codec

logger = logging.getLogger(__name__)

_DECODERS = {Codec.MP3: "mp3", Codec.OPUS: "libopus"}
SAMPLE_RATE = 48000


class AudioTranscoder:
    def __init__(self, codec: Codec) -> None:
        name = _DECODERS.get(codec)
        if name is None:
            raise ValueError(f"cannot transcode audio codec {codec}")
        self._codec = codec
        self._decoder: Any = None
        self._config: bytes | None = None
        self._first_ms: int | None = None
        self._samples = 0
        enc: Any = av.CodecContext.create("aac", "w")
        enc.sample_rate = SAMPLE_RATE
        enc.layout = "stereo"
        enc.format = "fltp"
        enc.bit_rate = 128_000
        enc.time_base = Fraction(1, SAMPLE_RATE)
        enc.open()
        self._encoder = enc
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
        self.asc: bytes = bytes(enc.extradata or b"\x11\x90")

    def configure(self, config: bytes) -> None:
        self._config = config
        self._decoder = None

    def _dec(self) -> Any:
        if self._decoder is None:
            try:
                dec: Any = av.CodecContext.create(_DECODERS[self._codec], "r")
            except Exception:  # libopus absent: libav's native decoder
                dec = av.CodecContext.create(self._codec.value, "r")
            if self._config:
                dec.extradata = self._config
            self._decoder = dec
        return self._decoder

    def push(self, pts_ms: int, payload: bytes) -> list[tuple[int, bytes]]:
        """AAC access units (pts in ms, raw bytes) ready so far."""
        if self._first_ms is None:
            self._first_ms = pts_ms
        pkt = av.Packet(payload)
        pkt.pts = pts_ms
        pkt.time_base = Fraction(1, 1000)
        out: list[tuple[int, bytes]] = []
        try:
            frames = self._dec().decode(pkt)
        except av.error.FFmpegError as exc:
            logger.warning("audio decode error", extra={"error": str(exc)})
            return out
        for frame in frames:
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                # Output time is counted in samples from the first input packet on.
                resampled.pts = self._samples
                resampled.time_base = Fraction(1, SAMPLE_RATE)
                self._samples += resampled.samples
                for packet in self._encoder.encode(resampled):
                    if packet.pts is None:
                        continue
                    ms = self._first_ms + int(packet.pts * 1000 // SAMPLE_RATE)
                    out.append((ms, bytes(packet)))
        return out
