"""A PyAV (libavformat, FFmpeg 8 in PyAV 18) RTMP publisher, run as its own process: the
one publisher here whose FLV muxer sends E-RTMP v2 multitrack (every video stream of the
source a track, the first as track 0), for the interop tests and ``castway bench
capacity``'s multitrack sources. libavformat blocks in network I/O holding the GIL, so it
cannot share a process with an asyncio server it talks to.

    python -m benchmarks.pyav_publish SOURCE rtmp://host:port/app/key [--realtime] [--loop]

``--realtime`` sends each packet no earlier than its DTS after the first (``ffmpeg -re``);
``--loop`` publishes the source again and again, timestamps running on
(``-stream_loop -1``), until it is killed.
"""

from __future__ import annotations

import sys
import time
from fractions import Fraction

import av


def publish(src: str, url: str, *, realtime: bool = False, loop: bool = False) -> None:
    started: float | None = None
    offset_s = Fraction(0)  # where this pass starts on the published timeline
    with av.open(url, "w", format="flv") as out:
        streams: dict[int, av.stream.Stream] = {}
        while True:
            end_s = offset_s
            with av.open(src) as inp:
                if not streams:
                    streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
                for packet in inp.demux():
                    tb = packet.time_base
                    if packet.dts is None or packet.pts is None or tb is None:
                        continue
                    shift = int(offset_s / tb)
                    packet.dts += shift
                    packet.pts += shift
                    at = packet.dts * tb
                    end_s = max(end_s, at + (packet.duration or 0) * tb)
                    if realtime:
                        now = time.monotonic()
                        if started is None:
                            started = now - float(at)
                        time.sleep(max(0.0, started + float(at) - now))
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
            if not loop:
                return
            offset_s = end_s


if __name__ == "__main__":
    publish(sys.argv[1], sys.argv[2], realtime="--realtime" in sys.argv[3:],
            loop="--loop" in sys.argv[3:])
