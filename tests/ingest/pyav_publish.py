"""A PyAV (libavformat) RTMP publisher, run as its own process by the interop tests:
libavformat blocks in network I/O holding the GIL, so it cannot share a process with
the asyncio server it talks to.

    python -m tests.ingest.pyav_publish SOURCE rtmp://host:port/app/key [--realtime]

``--realtime`` sends each packet no earlier than its DTS after the first (``ffmpeg -re``).
"""

from __future__ import annotations

import sys
import time

import av


def publish(src: str, url: str, *, realtime: bool = False) -> None:
    started: float | None = None
    with av.open(src) as inp, av.open(url, "w", format="flv") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None or packet.time_base is None:
                continue
            if realtime:
                at = float(packet.dts * packet.time_base)
                now = time.monotonic()
                if started is None:
                    started = now - at
                time.sleep(max(0.0, started + at - now))
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


if __name__ == "__main__":
    publish(sys.argv[1], sys.argv[2], realtime="--realtime" in sys.argv[3:])
