"""VP8 from a WebRTC publisher -> H.264 access units (Annex B), on a thread of its own.

castway's transcoder and its HLS renditions take H.264 (and HEVC, AV1) as a source, not
VP8, so a publisher that offers only VP8 (some browsers, WebRTC stacks without an H.264
encoder) is decoded with libvpx and encoded once with libx264 here, at ingest; its
frames then go down the same path as an H.264 publisher's. It costs a decode and an
encode per publisher (what a source in a codec castway cannot pass through always costs).

Keyframes come by time, one every segment target, so segments start on time whatever the
frame rate. The bitrate follows the picture size (about 0.1 bit per pixel per frame at
30 fps), capped by ``max_kbps``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

logger = logging.getLogger(__name__)

CLOCK = Fraction(1, 90_000)
#: Frames waiting for the thread; beyond it frames are dropped (and counted).
QUEUE_LIMIT = 120


@dataclass(frozen=True, slots=True)
class EncodedUnit:
    """One H.264 access unit, Annex B, at its RTP time (90 kHz) and the arrival of the
    VP8 frame it came from."""

    data: bytes
    rtp_ts: int
    arrival_s: float


class Vp8ToH264:
    """Decode VP8 frames and encode them as H.264, in order, off the event loop;
    ``deliver`` gets each access unit (on the thread: it hands them to the loop)."""

    def __init__(self, deliver: Callable[[EncodedUnit], None], *, preset: str,
                 keyframe_every_s: float, max_kbps: int = 6000) -> None:
        self._deliver = deliver
        self._preset = preset
        self._keyframe_ticks = round(keyframe_every_s / CLOCK)
        self._max_kbps = max_kbps
        self._frames: queue.Queue[tuple[bytes, int, float] | None] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="whip-vp8", daemon=True)
        self._thread.start()

    def feed(self, data: bytes, rtp_ts: int, arrival_s: float) -> None:
        try:
            self._frames.put_nowait((data, rtp_ts, arrival_s))
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Stop after the frames already fed (waits for the thread)."""
        self._frames.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        decoder = av.CodecContext.create("libvpx", "r")
        encoder: Any = None
        last_key: int | None = None
        while (item := self._frames.get()) is not None:
            data, rtp_ts, arrival_s = item
            packet = av.Packet(data)
            packet.pts = rtp_ts
            packet.time_base = CLOCK
            try:
                frames = decoder.decode(packet)
            except av.FFmpegError as exc:  # a lost frame: the next keyframe mends it
                logger.debug("vp8 frame not decoded", extra={"error": str(exc)})
                continue
            for frame in frames:
                if encoder is None or (encoder.width, encoder.height) != \
                        (frame.width & ~1, frame.height & ~1):
                    encoder, last_key = self._encoder(frame.width & ~1, frame.height & ~1), None
                frame = frame.reformat(width=encoder.width, height=encoder.height,
                                       format="yuv420p")
                frame.pts, frame.time_base = rtp_ts, CLOCK
                if last_key is None or rtp_ts - last_key >= self._keyframe_ticks:
                    frame.pict_type = PictureType.I
                    last_key = rtp_ts
                for out in encoder.encode(frame):
                    self._deliver(EncodedUnit(bytes(out), int(out.pts), arrival_s))

    def _encoder(self, width: int, height: int) -> Any:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = CLOCK
        encoder.bit_rate = min(self._max_kbps * 1000, int(width * height * 30 * 0.1))
        encoder.gop_size = 10_000  # keyframes by time (above), not by count
        encoder.max_b_frames = 0  # frames go out in order: DTS = PTS, as from WebRTC
        encoder.options = {"preset": self._preset, "tune": "zerolatency"}
        encoder.open()
        return encoder
