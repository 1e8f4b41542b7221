"""The libav boundary of SRT ingest: an MPEG-TS byte source (anything with ``read``)
demuxed with PyAV and converted (ingest/srt/tsmedia.py) into MediaPackets.

Runs on the publisher's own thread: PyAV calls ``read`` from inside the demuxer, and the
container never leaves that thread (PyAV objects are not thread-safe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import av

from castway.media import MediaPacket
from ingest.srt.tsmedia import TsPacket, TsToMedia, taken

logger = logging.getLogger(__name__)

#: libav's probing of the first MPEG-TS bytes: enough to see a keyframe's parameters.
PROBE_OPTIONS = {"probesize": "1000000", "analyzeduration": "2000000"}


class ByteSource(Protocol):
    def read(self, size: int) -> bytes: ...


def demux_ts(source: ByteSource, deliver: Callable[[MediaPacket], None]) -> set[str]:
    """Demux ``source`` to its end, handing each MediaPacket to ``deliver``; returns the
    codecs of the streams not taken. libav's errors (``av.error.FFmpegError``) and
    whatever ``read``/``deliver`` raise propagate."""
    container = av.open(source, mode="r", format="mpegts", options=PROBE_OPTIONS)
    try:
        # A damaged PMT can list a stream libav has no codec context for: not taken.
        streams = [s for s in container.streams if s.codec_context is not None]
        codecs = {s.index: s.codec_context.name for s in streams}
        extradata = {s.index: bytes(s.codec_context.extradata or b"") for s in streams}
        convert = TsToMedia(expect={i for i, name in codecs.items() if taken(name)})
        for packet in container.demux():
            if packet.size == 0 or packet.stream.index not in codecs:
                continue
            index = packet.stream.index
            ts = TsPacket(stream=index, codec=codecs[index], data=bytes(packet),
                          pts=packet.pts, dts=packet.dts, keyframe=bool(packet.is_keyframe),
                          extradata=extradata[index])
            for media in convert.convert(ts):
                deliver(media)
        for media in convert.flush():
            deliver(media)
        return convert.ignored
    finally:
        container.close()
